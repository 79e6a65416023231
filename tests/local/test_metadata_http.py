"""The metadata server's HTTP side: what reaches the answer as a Request, and GCE's headers on every reply."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from provisioner.local.metadata_http import Answer, HttpServer, Request

MAX_BODY = 8


@pytest.fixture
def served() -> Iterator[tuple[HttpServer, list[Request]]]:
    """An HttpServer on a free port whose answer records each Request and says `ok`."""
    seen: list[Request] = []

    def answer(request: Request) -> Answer:
        seen.append(request)
        return Answer(200, b"ok", etag="e1")

    server = HttpServer(0, answer, lambda _line: None, MAX_BODY)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server, seen
    finally:
        server.shutdown()
        server.workers.shutdown(wait=True)
        server.server_close()
        thread.join()


def exchange(server: HttpServer, request: bytes) -> bytes:
    """Everything SERVER sends back for REQUEST, until it closes the connection."""
    with socket.create_connection(("127.0.0.1", int(server.server_address[1])), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


def test_a_request_reaches_the_answer_as_a_record_and_its_reply_carries_gces_headers(
    served: tuple[HttpServer, list[Request]],
) -> None:
    server, seen = served
    reply = exchange(
        server,
        b"PUT /a/b?x=1&y= HTTP/1.1\r\nMetadata-Flavor: Google\r\nAuthorization: Bearer t\r\n"
        b"Content-Length: 3\r\n\r\nabc",
    )
    assert seen == [Request("PUT", "/a/b", {"x": "1", "y": ""}, "Google", "Bearer t", b"abc")]
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 ") and body == b"ok"
    for header in (b"Metadata-Flavor: Google", b"Server: Metadata Server for VM", b"ETag: e1", b"Content-Length: 2"):
        assert b"\r\n" + header + b"\r\n" in head + b"\r\n"


@pytest.mark.parametrize(
    "headers", [b"Content-Length: 9\r\n\r\n123456789", b"Content-Length: many\r\n\r\n", b"Content-Length: 5\r\n\r\n12"]
)
def test_a_body_too_long_or_of_no_usable_length_is_none(
    served: tuple[HttpServer, list[Request]], headers: bytes
) -> None:
    server, seen = served
    exchange(server, b"PUT /a HTTP/1.1\r\n" + headers)
    assert [request.body for request in seen] == [None]


def test_http_servers_own_errors_carry_the_metadata_flavor_too(served: tuple[HttpServer, list[Request]]) -> None:
    server, seen = served
    reply = exchange(server, b"GARBAGE\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 400 ") and b"\r\nMetadata-Flavor: Google\r\n" in reply
    assert seen == []
