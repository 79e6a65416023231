"""Run by QEMU once per guest connection: relays the guest's bytes (stdin/stdout) to and from the
metadata server's guest socket (a path), or 127.0.0.1:PORT (a number).

QEMU runs it as a script (`python3 -I -S relay.py SOCKET`, from `guestfwd=...-cmd:`), so it imports
nothing from course-vm. libslirp hands it the guest's connection as stdin, stdout and stderr alike:
anything it printed would reach the guest, so it prints nothing and fails quietly.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading

CHUNK = 65536


def _guest_to_server(server: socket.socket) -> None:
    try:
        while data := os.read(0, CHUNK):
            server.sendall(data)
        server.shutdown(socket.SHUT_WR)  # the guest is done sending; the answer may still be coming
    except OSError:
        pass


def _server_to_guest(server: socket.socket) -> None:
    try:
        while data := server.recv(CHUNK):
            view = memoryview(data)
            while view:
                view = view[os.write(1, view) :]
    except OSError:
        pass
    # Tell the guest the answer is complete. Under QEMU stdout is a socket that stdin and stderr share,
    # so closing fd 1 alone would not end it: shut its sending side down; a pipe is just closed.
    try:
        guest = socket.socket(fileno=1)
    except OSError:
        os.close(1)
    else:
        with contextlib.suppress(OSError):
            guest.shutdown(socket.SHUT_WR)
        guest.detach()


def _connect(target: str) -> socket.socket:
    if target.isdigit():
        return socket.create_connection(("127.0.0.1", int(target)))
    # By its name in its folder: a socket's path may have at most 108 bytes, its folder's path more.
    os.chdir(os.path.dirname(target))
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(os.path.basename(target))
    except OSError:
        server.close()
        raise
    return server


def main() -> int:
    # Whatever Python itself might write to stderr (a thread's traceback, a fatal error) goes nowhere.
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        with _connect(sys.argv[1]) as server:
            incoming = threading.Thread(target=_guest_to_server, args=(server,), daemon=True)
            incoming.start()
            _server_to_guest(server)
            # The server has answered and closed: what the guest still sends has nowhere to go.
            incoming.join(timeout=5)
    except BaseException:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
