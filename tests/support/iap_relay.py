"""A stand-in for Google's IAP TCP-forwarding relay (wss://tunnel.cloudproxy.app), for the real gcloud.

`gcloud compute start-iap-tunnel INSTANCE 22 --listen-on-stdin` (the ProxyCommand of `sshAccess: iap`)
opens a WebSocket to that relay, which connects it to the instance's port 22. Google's relay cannot be
reached here, so the tests run the real gcloud (tests/support/real_gcloud.py) against this one through
gcloud's hidden `--iap-tunnel-url-override`, which a wrapper named `gcloud` first on PATH adds
(`install_gcloud`). The relay speaks the subprotocol as gcloud 528 implements it (its
api_lib/compute/iap_tunnel_websocket*.py): subprotocol `relay.tunnel.cloudproxy.app`, `GET /v4/connect`
with the query project, port, newWebsocket, zone, instance, interface; binary messages of a u16 big-endian
tag, then CONNECT_SUCCESS_SID (u32 length + session id), DATA (u32 length + at most 16384 bytes) or ACK
(u64 bytes received so far); a refusal is a WebSocket close whose code gcloud quotes (4033 not authorized:
final; 4003 failed to connect to backend: the VM or its sshd is not up yet). Each DATA it receives is
acknowledged once written to the backend; gcloud's own ACKs (it sends one only past 2 x 16384 unacked
bytes, or when idle) are checked, never waited for, so long transfers do not stall.

RFC 6455 framing is written here with the stdlib (no server package needed): gcloud sends one masked,
final frame per message, which is all this reads. Its `mode` makes it misbehave: `denied` (4033),
`backend` (4003), `hang` (the WebSocket opens, nothing more comes), `garbage` (connects, then relays text
that is not SSH). `connects` records every connect's path, query and headers for the tests to assert.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.real_gcloud import TOKEN, environment, gcloud_path
from tests.support.serving import serving
from tests.support.tls import loopback_tls

SUBPROTOCOL = "relay.tunnel.cloudproxy.app"
CONNECT_SUCCESS_SID, RECONNECT_SUCCESS_ACK, DATA, ACK = 0x0001, 0x0002, 0x0004, 0x0007
MAX_DATA = 16384
REFUSALS = {"denied": (4033, "not authorized"), "backend": (4003, "failed to connect to backend")}
"""IAP's close codes and reasons for a refused tunnel, as gcloud quotes them: `[4033: 'not authorized']`."""
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455's key suffix
_OPCODE_BINARY, _OPCODE_CLOSE = 0x2, 0x8


@dataclass
class Connect:
    """One WebSocket connect gcloud made: its path, query (one value per name) and headers (lower-case names)."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class IapRelay:
    """The relay's settings and what it saw; `url` is what `--iap-tunnel-url-override` takes."""

    backend_port: int = 0
    mode: str = "ok"
    """`ok`, `denied`, `backend`, `hang` or `garbage` (see the module's docstring)."""
    next_modes: list[str] = field(default_factory=list)
    """Modes for the next connects, one each, before `mode` again: ["backend"] refuses the first with 4003."""
    url: str = ""
    ca_file: Path = Path()
    """The relay's self-signed certificate, the one CA the wrapped gcloud trusts for its tunnels."""
    connects: list[Connect] = field(default_factory=list)
    acked_by_gcloud: int = 0
    """The most bytes gcloud acknowledged having received from the relay, in any one tunnel."""
    problems: list[str] = field(default_factory=list)
    """What gcloud sent that IAP would not take (a test asserts there is none)."""
    _open: list[socket.socket] = field(default_factory=list)

    def mode_for_next(self) -> str:
        return self.next_modes.pop(0) if self.next_modes else self.mode


class _WebSocket:
    """The server side of one RFC 6455 connection, after its handshake: whole binary messages in and out."""

    def __init__(self, conn: socket.socket, reader: socketserver.StreamRequestHandler) -> None:
        self.conn, self.rfile = conn, reader.rfile
        self._lock = threading.Lock()

    def _exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) < size:
            raise EOFError
        return data

    def receive(self) -> bytes | None:
        """The next binary message's payload; None at a close frame or the end of the connection."""
        try:
            first, second = self._exactly(2)
            length = second & 0x7F
            if length == 126:
                (length,) = struct.unpack(">H", self._exactly(2))
            elif length == 127:
                (length,) = struct.unpack(">Q", self._exactly(8))
            mask = self._exactly(4) if second & 0x80 else b"\0\0\0\0"
            payload = bytes(byte ^ mask[i % 4] for i, byte in enumerate(self._exactly(length)))
        except (EOFError, OSError, ValueError):
            return None
        if first & 0x0F != _OPCODE_BINARY or not first & 0x80:
            return None  # a close, or what gcloud never sends
        return payload

    def send(self, payload: bytes, opcode: int = _OPCODE_BINARY) -> None:
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([size])
        elif size < 65536:
            header += bytes([126]) + struct.pack(">H", size)
        else:
            header += bytes([127]) + struct.pack(">Q", size)
        with self._lock:
            self.conn.sendall(header + payload)

    def close(self, code: int, reason: str) -> None:
        with suppress(OSError):
            self.send(struct.pack(">H", code) + reason.encode(), _OPCODE_CLOSE)


def _handshake(handler: socketserver.StreamRequestHandler, relay: IapRelay) -> bool:
    """Read gcloud's upgrade request, record it and accept it; False (after an HTTP error) when it is not one."""
    request = handler.rfile.readline().decode("latin-1").split()
    headers: dict[str, str] = {}
    while (line := handler.rfile.readline().decode("latin-1").strip()) and len(headers) < 100:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    path, _, query = request[1].partition("?") if len(request) == 3 else ("", "", "")
    relay.connects.append(Connect(path, dict(urllib.parse.parse_qsl(query)), headers))
    offered = [item.strip() for item in headers.get("sec-websocket-protocol", "").split(",")]
    if request[:1] != ["GET"] or path != "/v4/connect" or SUBPROTOCOL not in offered:
        handler.wfile.write(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
        return False
    key = (headers["sec-websocket-key"] + _GUID).encode()
    accept = base64.b64encode(hashlib.sha1(key, usedforsecurity=False).digest()).decode()
    handler.wfile.write(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n".encode()
    )
    return True


@dataclass
class _Tunnel:
    """What one tunnel counts: gcloud acknowledges the bytes of its own tunnel, from 0."""

    acked: int = 0
    sent: int = 0


def _relay_to_backend(ws: _WebSocket, backend: socket.socket, relay: IapRelay, tunnel: _Tunnel) -> None:
    """gcloud's DATA to the backend, each acknowledged once written; gcloud's ACKs checked. Ends both at the end."""
    received = 0
    while (message := ws.receive()) is not None and len(message) >= 2:
        (tag,) = struct.unpack(">H", message[:2])
        if tag == DATA:
            (length,) = struct.unpack(">I", message[2:6])
            if length > MAX_DATA or len(message) != 6 + length:
                relay.problems.append(f"a DATA message of {len(message)} bytes saying {length}")
            backend.sendall(message[6:])
            received += length
            ws.send(struct.pack(">HQ", ACK, received))
        elif tag == ACK:
            (acked,) = struct.unpack(">Q", message[2:10])
            if acked < tunnel.acked:
                relay.problems.append(f"gcloud's ACK went back from {tunnel.acked} to {acked}")
            tunnel.acked = acked
            relay.acked_by_gcloud = max(relay.acked_by_gcloud, acked)
        else:
            relay.problems.append(f"a message with tag {tag:#06x}")
    with suppress(OSError):
        backend.shutdown(socket.SHUT_WR)


def _relay_to_gcloud(ws: _WebSocket, backend: socket.socket, relay: IapRelay, tunnel: _Tunnel) -> None:
    """The backend's bytes to gcloud as DATA frames of at most 16384 bytes; a normal close at their end."""
    while data := backend.recv(MAX_DATA):
        tunnel.sent += len(data)  # before gcloud can have it, and acknowledge it
        ws.send(struct.pack(">HI", DATA, len(data)) + data)
    if tunnel.acked > tunnel.sent:
        relay.problems.append(f"gcloud acknowledged {tunnel.acked} bytes of {tunnel.sent}")
    ws.close(1000, "")


def _serve(handler: socketserver.StreamRequestHandler, relay: IapRelay) -> None:
    """One tunnel: the handshake, then what the relay's mode says."""
    if not _handshake(handler, relay):
        return
    ws = _WebSocket(handler.connection, handler)
    mode = relay.mode_for_next()
    backend: socket.socket | None = None
    if mode == "ok":
        try:
            backend = socket.create_connection(("127.0.0.1", relay.backend_port), timeout=5)
            backend.settimeout(None)
        except OSError:
            mode = "backend"  # as IAP: nothing listens on the VM's port
    if mode in REFUSALS:
        ws.close(*REFUSALS[mode])
        return
    if mode == "hang":
        ws.receive()  # until gcloud goes, or the relay is closed
        return
    ws.send(struct.pack(">HI", CONNECT_SUCCESS_SID, 8) + b"sid-0001")
    if mode == "garbage":
        text = b"Welcome! This is not an SSH server.\r\n" * 100
        ws.send(struct.pack(">HI", DATA, len(text)) + text)
        ws.receive()
        return
    assert backend is not None
    relay._open.append(backend)
    with backend:
        tunnel = _Tunnel()
        to_backend = threading.Thread(target=_relay_to_backend, args=(ws, backend, relay, tunnel), daemon=True)
        to_backend.start()
        with suppress(OSError):
            _relay_to_gcloud(ws, backend, relay, tunnel)
        to_backend.join(5)


@contextmanager
def iap_relay(folder: Path, backend_port: int = 0) -> Iterator[IapRelay]:
    """A relay on 127.0.0.1 to BACKEND_PORT, for the block's length, its certificate written into FOLDER;
    every tunnel is cut when it ends."""
    # gcloud 528 tunnels over TLS only (its WebSocket calls `pending()`, which only a TLS socket has), and
    # checks the certificate: the wrapper makes this one its CA.
    context, certificate = loopback_tls(folder)
    relay = IapRelay(backend_port=backend_port, ca_file=certificate)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            relay._open.append(self.connection)
            with suppress(OSError):  # a TLS handshake gcloud gave up on, or a tunnel cut by `close`
                _serve(self, relay)

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            conn, address = super().get_request()
            # TLS is negotiated on the handler's first read, in its own thread.
            return context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False), address

    with serving(Server(("127.0.0.1", 0), Handler)) as port:
        relay.url = f"wss://127.0.0.1:{port}"
        try:
            yield relay
        finally:
            for conn in relay._open:
                with suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


_WRAPPER = """#!/bin/sh
# Google's gcloud ({real}) with its IAP tunnels sent to the tests' relay at {url}, trusting its certificate.
echo $$ >> {pids}
if [ "$1" = compute ] && [ "$2" = start-iap-tunnel ]; then
  CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE={ca_file} exec {real} "$@" --iap-tunnel-url-override={url}
fi
exec {real} "$@"
"""


@dataclass
class GcloudWrapper:
    """The wrapper's folder (to put first on PATH); `pids` lists every run, so a test can see each was reaped."""

    bin: Path

    def pids(self) -> list[int]:
        path = self.bin / "pids"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def running(self) -> list[int]:
        """The runs whose process is still there (a zombie too: it has not been reaped)."""
        return [pid for pid in self.pids() if Path(f"/proc/{pid}").exists()]


def install_gcloud(folder: Path, relay: IapRelay) -> GcloudWrapper:
    """Write into FOLDER a `gcloud` that runs the real one (which must be installed) against RELAY."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "gcloud"
    real = os.path.realpath(gcloud_path())
    if Path(real).parent == folder.resolve():
        raise AssertionError(f"the gcloud on PATH is this wrapper ({real}), not Google's")
    values = {"real": real, "url": relay.url, "ca_file": str(relay.ca_file), "pids": str(folder / "pids")}
    quoted = {name: shlex.quote(value) for name, value in values.items()}
    script.write_text(_WRAPPER.format(**quoted))
    script.chmod(0o755)
    return GcloudWrapper(folder)


@dataclass
class RealGcloudTunnels:
    """The real gcloud, wrapped first on PATH, whose IAP tunnels reach RELAY; its settings in CONFIG."""

    relay: IapRelay
    gcloud: GcloudWrapper
    config: Path

    def environment(self, path: str, compute_api: str | None = None, *, token: str | None = TOKEN) -> dict[str, str]:
        """What makes a course-vm (or ssh) whose PATH was PATH run this gcloud (see real_gcloud.environment)."""
        return {**environment(self.config, compute_api, token=token), "PATH": f"{self.gcloud.bin}{os.pathsep}{path}"}

    def check(self) -> None:
        """Every gcloud run has ended and been reaped, and the relay saw nothing IAP would refuse."""
        deadline = time.monotonic() + 5
        while self.gcloud.running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.gcloud.running() == [], f"gcloud tunnels left: {self.gcloud.running()}"
        assert self.relay.problems == []


@contextmanager
def real_gcloud_tunnels(folder: Path, backend_port: int = 0) -> Iterator[RealGcloudTunnels]:
    """A relay to BACKEND_PORT and the wrapped real gcloud, in FOLDER, for the block's length."""
    with iap_relay(folder / "relay", backend_port) as relay:
        yield RealGcloudTunnels(relay, install_gcloud(folder / "bin", relay), folder / "gcloud-config")
