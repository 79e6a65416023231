"""A GET as the guest sends it to its metadata server: over the server's guest socket (what QEMU's relay
connects to), with GCE's header. The host's own requests go to the loopback port instead."""

from __future__ import annotations

import json
import socket
from pathlib import Path


def guest_get(socket_path: Path, path: str) -> tuple[int, bytes]:
    """The status and body the metadata server's guest socket answers to `GET PATH`."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(30)
        connection.connect(str(socket_path))
        connection.sendall(
            f"GET {path} HTTP/1.0\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n\r\n".encode()
        )
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def guest_json(socket_path: Path, path: str) -> object:
    status, body = guest_get(socket_path, path)
    assert status == 200, (status, body)
    return json.loads(body)
