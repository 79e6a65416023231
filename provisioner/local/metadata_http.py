"""The metadata server's HTTP side: one request per connection, on a fixed pool of workers, with GCE's headers."""

from __future__ import annotations

import contextlib
import http.server
import socket
import socketserver
import sys
import threading
import traceback
import urllib.parse
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, NamedTuple

WORKERS = 16
"""Connections served at once; more wait their turn. Each answer closes its connection (HTTP/1.0),
so only a request in progress or a held `wait_for_change` occupies a worker."""
READ_SECONDS = 10.0
"""A client that has not sent its whole request (line, headers and body) by then is cut off: a
deadline for the whole request, not for each read, so a byte every few seconds holds nothing."""
MAX_OPEN = 64
"""Connections open at once, being served or waiting for a worker; one more is closed at once."""

Log = Callable[[str], None]


class Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"
    etag: str = ""


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, str]
    flavor: str
    authorization: str
    body: bytes | None
    """A PUT's body; None when it had no usable Content-Length or was too long."""
    host: str = ""
    """The Host header ("" when none was sent)."""
    forwarded: bool = False
    """Whether the request carried X-Forwarded-For: it came through a proxy."""
    from_guest: bool = False
    """Whether it came in on the guest's own socket (through QEMU's relay), not on the loopback port."""


class HttpServer(socketserver.TCPServer):
    """Serves each connection on a fixed pool of threads instead of a thread per connection: each
    request becomes a Request for ANSWER, and a body is read only up to MAX_BODY bytes."""

    allow_reuse_address = True
    request_queue_size = 64  # the default 5 drops a burst of connections (each retried only after 1 s)

    def __init__(
        self, port: int, answer: Callable[[Request], Answer], log: Log, max_body: int, *, unix_path: str = ""
    ) -> None:
        """On 127.0.0.1:PORT; or, given UNIX_PATH, on a unix socket there (the guest's, through the relay)."""
        self.answer = answer
        self.log = log
        self.max_body = max_body
        self.from_guest = bool(unix_path)
        self.workers = ThreadPoolExecutor(WORKERS, thread_name_prefix="metadata-server")
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if unix_path:
            self.address_family = socket.AF_UNIX
            super().__init__(unix_path, _Handler)  # type: ignore[arg-type]  # an AF_UNIX address is a path
        else:
            super().__init__(("127.0.0.1", port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            full = len(self._open) >= MAX_OPEN
            if not full:
                self._open.add(request)
        if full:
            self.log(f"{_who(client_address)}: {MAX_OPEN} connections open already; closed this one")
            self.shutdown_request(request)
            return
        self.workers.submit(self._serve, request, client_address)

    def _serve(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            with self._open_lock:
                self._open.discard(request)
            self.shutdown_request(request)

    def stop_reading(self) -> None:
        """End every connection's reading: those still waiting for a request finish now, not in READ_SECONDS;
        those being answered can still write."""
        with self._open_lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RD)

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        # A client gone mid-answer is routine: one line. Anything else is a bug here: its traceback.
        if isinstance(error, OSError):
            self.log(f"{_who(client_address)}: connection ended early ({error})")
        else:
            self.log(f"{_who(client_address)}: {traceback.format_exc().strip()}")


def _who(client_address: Any) -> str:
    """A client as the log names it: its address on the loopback port, `guest` on the guest's socket."""
    return str(client_address[0]) if isinstance(client_address, tuple) and client_address else "guest"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: HttpServer
    timeout = READ_SECONDS
    protocol_version = "HTTP/1.0"  # one request per connection: an idle keep-alive would hold a worker
    # http.server answers a request line without a version (HTTP/0.9) with a bare body, no headers; no
    # metadata client speaks 0.9, and every answer should carry Metadata-Flavor.
    default_request_version = "HTTP/1.0"

    def version_string(self) -> str:
        return "Metadata Server for VM"  # GCE's Server header

    def address_string(self) -> str:
        return _who(self.client_address)

    def setup(self) -> None:
        super().setup()
        self._too_late = False
        self._deadline = threading.Timer(READ_SECONDS, self._cut_off)
        self._deadline.daemon = True
        self._deadline.start()

    def _cut_off(self) -> None:
        self._too_late = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RD)  # the read in progress ends: no request

    def finish(self) -> None:
        self._deadline.cancel()
        self._deadline.join()  # at once once cancelled: no timer thread outlives its connection
        super().finish()

    def do_GET(self) -> None:
        # Every method comes here: the server's answer (`MetadataServer._answer`) refuses what it does not serve.
        body = self._body() if self.command == "PUT" else None
        self._deadline.cancel()  # the whole request is in: answering may take as long as it takes
        if self._too_late:
            self.close_connection = True  # cut off mid-request: what was read is no request to answer
            return
        self._reply(self._request(body))

    do_PUT = do_POST = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET  # noqa: N815 (http.server's names)

    def _body(self) -> bytes | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        if not 0 <= length <= self.server.max_body:
            return None
        body = self.rfile.read(length)
        return body if len(body) == length else None

    def _request(self, body: bytes | None) -> Answer:
        path, _, query = self.path.partition("?")
        request = Request(
            method=self.command,
            path=path,
            query=dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
            flavor=str(self.headers.get("Metadata-Flavor", "")),
            authorization=str(self.headers.get("Authorization", "")),
            body=body,
            host=str(self.headers.get("Host", "")),
            forwarded="X-Forwarded-For" in self.headers,
            from_guest=self.server.from_guest,
        )
        return self.server.answer(request)

    def _reply(self, answer: Answer) -> None:
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.content_type)
        self.send_header("Content-Length", str(len(answer.body)))
        if answer.etag:
            self.send_header("ETag", answer.etag)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer.body)

    def end_headers(self) -> None:
        # On every answer, http.server's own errors too: clients check it to know whom they reached.
        self.send_header("Metadata-Flavor", "Google")
        super().end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        line = "".join(c if c.isprintable() else "?" for c in format % args)
        self.server.log(line[:300])
