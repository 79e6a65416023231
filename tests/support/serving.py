"""A test server answering on a thread of its own for a block's length: the stand-ins on loopback (the fake
Compute API, the IAP relay, the artifacts and release folders, the setup script's downloads)."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def serving(server: socketserver.TCPServer) -> Iterator[int]:
    """SERVER answering on a daemon thread, its port given; shut down and closed when the block ends."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
