"""A stand-in `gcloud` on PATH for the IAP path: the tunnel to the tests' real sshd.

It stands in for `gcloud compute start-iap-tunnel INSTANCE 22 --listen-on-stdin --project P --zone Z`,
which asks Google's Identity-Aware Proxy for a TCP stream to the instance's port 22 and connects it
to its own stdin and stdout (what ssh's ProxyCommand, and paramiko's, talk SSH over). The stand-in
checks that its arguments are exactly those, then connects stdin and stdout to the test sshd's port.
Neither Google nor gcloud can be reached here; the real tunnel is what `up`'s verification uses.

Its `mode` file makes it misbehave as a broken tunnel would: `exit` (prints gcloud's error for a
tunnel to a VM whose sshd is not up, IAP's 4003, and exits 1), `denied` (IAP's 4033: the account is
not granted the tunnel), `logged-out` (gcloud has no account to use), `hang` (runs, sends nothing),
`garbage` (prints text that is not SSH, then stays). Each run appends its pid to `pids`, so a test
can see every tunnel was reaped.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

EXIT_ERROR = "ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting [4003: 'failed to connect to backend']."
NOT_AUTHORIZED = "ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting [4033: 'not authorized']."
# gcloud's own words, over several lines, when no account is logged in.
NOT_LOGGED_IN = """ERROR: (gcloud.compute.start-iap-tunnel) You do not currently have an active account selected.
Please run:

  $ gcloud auth login

to obtain new credentials.

If you have already logged in with a different account, run:

  $ gcloud config set account ACCOUNT

to select an already authenticated account to use."""

_SCRIPT = r"""
import os, select, shlex, socket, sys, time

HERE = {here!r}
with open(os.path.join(HERE, "pids"), "a") as pids:
    pids.write(f"{{os.getpid()}}\n")
expected = shlex.split(open(os.path.join(HERE, "expected")).read())
if sys.argv[1:] != expected:
    print(f"ERROR: stand-in gcloud: unexpected arguments {{sys.argv[1:]}}, not {{expected}}", file=sys.stderr)
    sys.exit(2)
mode = open(os.path.join(HERE, "mode")).read().strip()
said = {{"exit": {exit_error!r}, "denied": {not_authorized!r}, "logged-out": {not_logged_in!r}}}
if mode in said:
    print(said[mode], file=sys.stderr)
    sys.exit(1)
if mode == "hang":
    time.sleep(600)
    sys.exit(0)
if mode == "garbage":
    for _ in range(120):
        sys.stdout.buffer.write(b"Welcome! This is not an SSH server.\r\n")
    sys.stdout.flush()
    time.sleep(600)
    sys.exit(0)
port = int(open(os.path.join(HERE, "port")).read())
conn = socket.create_connection(("127.0.0.1", port))
stdin, stdout = 0, 1
open_in = True
while True:
    readable, _, _ = select.select([conn] + ([stdin] if open_in else []), [], [])
    if conn in readable:
        data = conn.recv(65536)
        if not data:
            break
        os.write(stdout, data)
    if open_in and stdin in readable:
        data = os.read(stdin, 65536)
        if data:
            conn.sendall(data)
        else:
            open_in = False
            conn.shutdown(socket.SHUT_WR)
"""


@dataclass
class StandInGcloud:
    """The stand-in's directory (put first on PATH) and the files that steer it."""

    bin: Path

    def expect(self, instance: str, project: str, zone: str) -> None:
        """The one tunnel it accepts: to INSTANCE of PROJECT in ZONE."""
        arguments = f"compute start-iap-tunnel {instance} 22 --listen-on-stdin --project {project} --zone {zone}"
        (self.bin / "expected").write_text(arguments)

    def connect_to(self, port: int) -> None:
        (self.bin / "port").write_text(str(port))

    def misbehave(self, mode: str) -> None:
        """`ok`, `exit`, `denied`, `logged-out`, `hang` or `garbage` (see the module's docstring)."""
        (self.bin / "mode").write_text(mode)

    def pids(self) -> list[int]:
        """The pid of every run so far."""
        path = self.bin / "pids"
        return [int(line) for line in path.read_text().split()] if path.exists() else []


def install(directory: Path) -> StandInGcloud:
    """Write the stand-in `gcloud` into DIRECTORY, behaving well (`ok`) until told otherwise."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "gcloud"
    body = _SCRIPT.format(
        here=str(directory), exit_error=EXIT_ERROR, not_authorized=NOT_AUTHORIZED, not_logged_in=NOT_LOGGED_IN
    )
    script.write_text(f"#!{sys.executable}\n{body}")
    script.chmod(0o755)
    standin = StandInGcloud(directory)
    standin.misbehave("ok")
    return standin
