"""Reaching a VM through a ProxyCommand (Google's IAP tunnel, run by gcloud) as paramiko's socket."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shlex
import subprocess
import tempfile
import threading
from typing import IO

from provisioner.errors import CourseVmError, ExitStatus, UnreachableError
from provisioner.paths import ON_WINDOWS
from provisioner.recipe.settings import GCE_ZONE, GCP_PROJECT_ID

IAP_PROGRAM = "gcloud"
IAP_PROGRAM_WINDOWS = "gcloud.cmd"
"""What a ProxyCommand names on Windows, whose OpenSSH starts it without a shell: gcloud there is a .cmd script."""
GCLOUD_INSTALL = "install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), then `gcloud auth login`"
_IAP_COMMAND = "{program} compute start-iap-tunnel %h 22 --listen-on-stdin --project {project} --zone {zone}"
# Exactly `gcloud` or `gcloud.cmd`, found on PATH: no path, no other program.
_IAP = re.compile(
    r"gcloud(\.cmd)? compute start-iap-tunnel %h 22 --listen-on-stdin --project (?P<project>\S+) --zone (?P<zone>\S+)"
)
INSTANCE_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
"""A GCE instance name: what `%h` becomes, and an ssh `HostName` only behind the IAP proxy."""
_STDERR_TAIL = 4096
_CHUNK = 65536


class ProxyMissingError(CourseVmError):
    """The ProxyCommand's program (gcloud) is not installed, or has no account logged in."""

    exit_code = ExitStatus.MISSING_PREREQUISITE


# What gcloud says when the tunnel is refused for good: no retry changes it, only the user can.
# IAP's own codes (Error while connecting [CODE: 'reason']): 4033 not authorized is final; 4003 failed to
# connect to backend (the VM or its sshd is not up yet) and the rest may pass, and are retried. gcloud 528
# exits 0 after such a refusal under --listen-on-stdin (it logs the error, then a traceback): only its words
# tell it apart; exit 1 without an account.
_NOT_AUTHORIZED = re.compile(r"\[4033: |not authorized|Required '[a-zA-Z.]+' permission")
_NOT_LOGGED_IN = ("do not currently have an active account", "gcloud auth login", "Reauthentication failed")
_GRANT_FIX = (
    "`gcloud auth login` with the Google account granted IAP access to this VM (the roster's `email`, or "
    "studentEmail; a project owner has it too), or ask the instructor to grant yours"
)


def tunnel_refusal(host: str, said: str) -> CourseVmError | None:
    """The error for gcloud's stderr SAID when it refused the tunnel to HOST for good, None when a retry may help.

    Not logged in is a missing prerequisite (exit 6); an account without the grant is unreachable (exit 3).
    """
    lines = [line.strip() for line in said.splitlines() if line.strip()]
    if any(words in said for words in _NOT_LOGGED_IN):
        return ProxyMissingError(
            f"the IAP tunnel to {host} was refused: gcloud has no Google account to use "
            f"({lines[0].rstrip('.') if lines else 'gcloud auth login'}). "
            "Fix: run `gcloud auth login` (with the Google account granted IAP access to this VM)"
        )
    if match := next((line for line in lines if _NOT_AUTHORIZED.search(line)), None):
        said_so = " ".join(match.split()).rstrip(".")
        return UnreachableError(f"the IAP tunnel to {host} was refused: {said_so}. Fix: {_GRANT_FIX}")
    return None


def iap_proxy_command(project: str, zone: str, *, windows: bool = False) -> str:
    """The ProxyCommand that tunnels to an instance of PROJECT in ZONE through Identity-Aware Proxy.

    `%h` is the ssh HostName, the instance's name; gcloud connects its stdin and stdout to the
    instance's port 22. For an ssh config on WINDOWS the program is `gcloud.cmd`. Raises
    CourseVmError for a project or zone that is not a plain name.
    """
    if not (GCP_PROJECT_ID.fullmatch(project) and GCE_ZONE.fullmatch(zone)):
        raise CourseVmError(
            f"cannot build the IAP ProxyCommand for project {project!r}, zone {zone!r}: not a GCP project ID and "
            "a GCE zone. Fix: set gcp:project and gcp:zone (`pulumi config set gcp:project ID`)"
        )
    program = IAP_PROGRAM_WINDOWS if windows else IAP_PROGRAM
    return _IAP_COMMAND.format(program=program, project=project, zone=zone)


def iap_location(command: object) -> tuple[str, str] | None:
    """(project, zone) of COMMAND if it is exactly the IAP ProxyCommand course-vm writes, else None.

    Nothing else is ever run or written as a ProxyCommand: the command may come from a stack's
    outputs, which whoever can write the state could otherwise make run anything.
    """
    match = _IAP.fullmatch(command) if isinstance(command, str) else None
    if match is None or not (GCP_PROJECT_ID.fullmatch(match["project"]) and GCE_ZONE.fullmatch(match["zone"])):
        return None
    return match["project"], match["zone"]


def proxy_argv(command: str, host: str, port: int) -> list[str]:
    """COMMAND's words with ssh's `%h` (HOST), `%p` (PORT) and `%%` expanded, as ssh would run them.

    Raises CourseVmError unless COMMAND is the IAP ProxyCommand (iap_location) and HOST an instance name.
    """
    if iap_location(command) is None or not INSTANCE_NAME.fullmatch(host):
        raise CourseVmError(
            f"refusing to run ProxyCommand {command!r} for host {host!r}: course-vm runs only its own IAP "
            "tunnel to a GCE instance name. Fix: run `course-vm up` again to write the stack's outputs anew"
        )
    tokens = {"%h": host, "%p": str(port), "%%": "%"}
    return [re.sub(r"%[hp%]", lambda m: tokens[m.group(0)], word) for word in shlex.split(command)]


def find_program(name: str, path: str, *, windows: bool = ON_WINDOWS, pathext: str | None = None) -> str | None:
    """The program NAME in the first of PATH's absolute folders that holds it (on WINDOWS trying each
    extension of PATHEXT too, as cmd does), or None.

    Unlike `shutil.which`, never the current folder: Windows searches it first, and an empty or
    relative entry of PATH means it everywhere; a gcloud.cmd planted in a course folder would run.
    """
    folders = [folder for folder in path.split(";" if windows else ":") if folder and os.path.isabs(folder)]
    names = [name]
    if windows:
        extensions = (os.environ.get("PATHEXT", ".COM;.EXE;.BAT;.CMD") if pathext is None else pathext).split(";")
        extensions = [ext for ext in extensions if ext]
        if not any(name.lower().endswith(ext.lower()) for ext in extensions):
            names = [name + ext.lower() for ext in extensions]
    for folder in folders:
        for candidate in names:
            found = os.path.join(folder, candidate)
            if os.path.isfile(found) and (windows or os.access(found, os.X_OK)):
                return found
    return None


class ProxySocket:
    """A ProxyCommand's process as the socket paramiko talks SSH over: its stdin and its stdout.

    Unlike paramiko's own ProxyCommand, the end of the output is an end of file (paramiko's spins
    until its timeout), the process's stderr is kept for the error message, `close` always reaps
    the process (no tunnel outlives its connection), and the output is read by a thread rather
    than `select`, which takes no pipe on Windows.
    """

    def __init__(self, argv: list[str]) -> None:
        """Start ARGV. Raises ProxyMissingError when its program is not installed, CourseVmError when it cannot run."""
        self.argv = argv
        self.timeout: float | None = None
        self._closed = False
        self._eof = False
        self._said = ""
        self._said_stderr = ""
        self._chunks: queue.Queue[bytes] = queue.Queue()
        self._pending = b""
        # Kept open for the object's life: `why` reads it after the process has gone.
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115
        # Found as a shell finds it (on Windows gcloud is gcloud.cmd, which CreateProcess would not find by
        # name), but in PATH's folders only: never the current folder, where a planted gcloud.cmd would run.
        program = find_program(argv[0], os.environ.get("PATH", ""))
        try:
            if program is None:
                raise FileNotFoundError(argv[0])
            self.process = subprocess.Popen(
                [program, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
            )
        except FileNotFoundError:
            self._stderr.close()
            raise ProxyMissingError(
                f"the SSH connection goes through `{argv[0]}` (sshAccess iap), which is not on PATH. "
                f"Fix: {GCLOUD_INSTALL}"
            ) from None
        except OSError as error:
            self._stderr.close()
            raise CourseVmError(f"cannot run the proxy `{argv[0]}`: {error.strerror}. Fix: {GCLOUD_INSTALL}") from None
        self._reader = threading.Thread(target=self._read, name=f"proxy-{self.process.pid}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        """Move the proxy's output into the queue as it comes; b"" marks its end."""
        stdout = self.process.stdout
        try:
            while stdout is not None and (data := stdout.read(_CHUNK)):
                self._chunks.put(data)
        except (OSError, ValueError):
            pass  # closed by `close`: the end too
        self._chunks.put(b"")

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def send(self, data: bytes) -> int:
        """Write DATA to the proxy; OSError (which paramiko reads as a closed connection) once it has gone."""
        if self._closed or self.process.stdin is None:
            raise OSError("the proxy is closed")
        try:
            written = self.process.stdin.write(data)
        except ValueError:  # closed meanwhile by another thread
            raise OSError("the proxy is closed") from None
        return len(data) if written is None else written

    def recv(self, size: int) -> bytes:
        """Up to SIZE bytes of the proxy's output; b"" at its end; socket.timeout when none came in time."""
        if self._closed or self._eof:
            return b""
        if not self._pending:
            try:
                self._pending = self._chunks.get(timeout=self.timeout)
            except queue.Empty:
                raise TimeoutError("the proxy sent nothing") from None  # socket.timeout, which paramiko waits on
            if not self._pending:
                self._eof = True
                return b""
        data, self._pending = self._pending[:size], self._pending[size:]
        return data

    @property
    def closed(self) -> bool:
        return self._closed

    def why(self) -> str:
        """What the proxy did, for an error: that it exited by itself (with the last line it wrote on
        stderr), or "" while it runs (or ran until `close` ended it)."""
        if self._closed:
            return self._said
        if self._eof:
            # Its output has ended, so it is exiting: give it a moment to be done.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(0.5)
        status = self.process.poll()
        if status is None:
            return ""
        tail = self.stderr_tail()
        # gcloud exits 0 when IAP refuses the tunnel; "exited with status 0" would read as success.
        ended = f"exited with status {status}" if status else "ended the connection"
        return f"the proxy `{' '.join(self.argv[:3])}` {ended}" + (f": {tail}" if tail else "")

    def refusal(self, host: str) -> CourseVmError | None:
        """The error to end with at once when the proxy exited refusing the tunnel to HOST for good
        (tunnel_refusal), else None: it runs, or what it said may pass."""
        if self._closed:
            return tunnel_refusal(host, self._said_stderr)
        if not self.why():
            return None
        return tunnel_refusal(host, self._stderr_text())

    def _stderr_text(self) -> str:
        """The last few KiB the proxy wrote on stderr."""
        try:
            self._stderr.seek(0, os.SEEK_END)
            size = self._stderr.tell()
            self._stderr.seek(max(size - _STDERR_TAIL, 0))
            return self._stderr.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""

    def stderr_tail(self) -> str:
        """The last `ERROR:` line the proxy wrote on stderr, else its last line ("" for none).

        gcloud's tunnel that fails to connect writes `ERROR: [0] Error during local connection to [stdin]:
        Error while connecting [4003: ...]`, then its traceback: the ERROR line says it without the class path.
        """
        lines = self._stderr_text().strip().splitlines()
        errors = [line for line in lines if line.startswith("ERROR:")]
        return " ".join((errors or lines)[-1].split()) if lines else ""

    def close(self) -> None:
        """End the proxy and reap it: SIGTERM, then SIGKILL after 2 s. Safe to call more than once."""
        if self._closed:
            return
        self._said = self.why()  # before it is ended here; paramiko closes its socket before it reports
        self._said_stderr = self._stderr_text() if self._said else ""
        self._closed = True
        try:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(2.0)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
        finally:
            self._reader.join(2.0)  # the process has gone, so its output has ended
            for pipe in (self.process.stdin, self.process.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
            self._stderr.close()
