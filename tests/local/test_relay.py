"""The guest connection relay, run as QEMU runs it: a script, the guest's connection on stdin and stdout."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.local import relay
from provisioner.local.metadata_server import MetadataServer, TwinInstance
from provisioner.local.vm import free_loopback_port

RELAY = Path(relay.__file__)
GOODBYE = b"<the server saw the end of the request>"


def serve_echo(listener: socket.socket) -> None:
    """Echo one connection's bytes until it half-closes, then say GOODBYE and close."""
    connection, _ = listener.accept()
    with connection:
        while data := connection.recv(65536):
            connection.sendall(data)
        connection.sendall(GOODBYE)


@pytest.fixture
def echo_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        server = threading.Thread(target=serve_echo, args=(listener,), daemon=True)
        server.start()
        yield listener.getsockname()[1]
        server.join(timeout=10)


def run_relay(port: int, **streams: object) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-I", "-S", str(RELAY), str(port)]
    return subprocess.Popen(command, **streams)  # type: ignore[call-overload,no-any-return]


def test_bytes_go_both_ways_and_the_guests_end_of_input_reaches_the_server(echo_port: int) -> None:
    process = run_relay(echo_port, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    request = b"GET /computeMetadata/v1/ HTTP/1.0\r\n\r\n" + bytes(range(256)) * 1024
    out, err = process.communicate(request, timeout=30)
    # GOODBYE comes only after the server read the end of the request: stdin's EOF became a half-close,
    # and the answer still came back the other way.
    assert out == request + GOODBYE
    assert (err, process.returncode) == (b"", 0)


def test_under_qemu_the_guest_reads_the_whole_answer_while_its_side_is_still_open() -> None:
    # libslirp gives the child one socket as stdin, stdout and stderr: the relay must shut down its
    # sending side when the server is done, as closing stdout alone would not end the connection.
    twin = TwinInstance(name="vm", instance_id=4520031799277581759)
    with MetadataServer(twin) as server:
        guest, child = socket.socketpair()
        with guest:
            with child:
                process = run_relay(int(server.url.rsplit(":", 1)[1]), stdin=child, stdout=child, stderr=child)
            guest.settimeout(30)
            guest.sendall(b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n")
            answer = b""
            while chunk := guest.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.0 200 ") and answer.endswith(b"\r\n\r\n4520031799277581759")
        assert process.wait(timeout=30) == 0


def test_under_qemu_the_guests_end_of_input_reaches_the_server(echo_port: int) -> None:
    guest, child = socket.socketpair()
    with guest:
        with child:
            process = run_relay(echo_port, stdin=child, stdout=child, stderr=child)
        guest.settimeout(30)
        guest.sendall(b"hello")
        assert guest.recv(5) == b"hello"
        guest.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := guest.recv(65536):
            received += chunk
        assert received == GOODBYE
    assert process.wait(timeout=30) == 0


def test_with_nothing_listening_it_prints_nothing() -> None:
    guest, child = socket.socketpair()
    with guest:
        with child:
            process = run_relay(free_loopback_port(), stdin=child, stdout=child, stderr=child)
        guest.settimeout(30)
        assert process.wait(timeout=30) != 0
        assert guest.recv(65536) == b""  # the guest's connection closed, and nothing written to it


@pytest.mark.parametrize("arguments", [[], ["not-a-port"], ["99999"]])
def test_bad_arguments_print_nothing(arguments: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-I", "-S", str(RELAY), *arguments], input=b"x", capture_output=True, timeout=30, check=False
    )
    assert (result.stdout, result.stderr) == (b"", b"")
    assert result.returncode != 0


def test_the_relay_reaches_the_guest_socket_by_its_path_however_long_its_folder(tmp_path: Path) -> None:
    # A socket's path may have at most 108 bytes; a VM's folder under a long XDG_STATE_HOME has more.
    folder = tmp_path / ("a-long-folder-name-" * 6)
    folder.mkdir()
    twin = TwinInstance(name="vm", instance_id=4520031799277581759)
    cwd = Path.cwd()
    os.chdir(folder)  # as the twin's server process binds it: by its name in the folder
    try:
        server = MetadataServer(twin, guest_socket=Path("metadata.sock"))
    finally:
        os.chdir(cwd)
    with server:
        request = b"GET /computeMetadata/v1/instance/id HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n"
        process = run_relay_to(str(folder / "metadata.sock"))
        out, err = process.communicate(request, timeout=30)
        assert len(str(folder / "metadata.sock").encode()) > 108
        assert out.startswith(b"HTTP/1.0 200 ") and out.endswith(b"\r\n\r\n4520031799277581759"), (out, err)


def run_relay_to(target: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-I", "-S", str(RELAY), target]
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
