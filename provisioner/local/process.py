"""The local VM's own processes (QEMU, its metadata server): whether one runs, and stopping only ours."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def alive(pid: int) -> bool:
    """Whether PID runs; a zombie (it exited, its new parent has not reaped it yet) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "PID (COMMAND) STATE ..."; COMMAND may itself hold spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def runs(pid: int, marker: str) -> bool:
    """Whether PID runs and its command line holds MARKER (a path of ours): after a reboot, or once
    the process is gone, the same PID may be anyone's."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return marker in command and alive(pid)


def stop(pid: int, marker: str, seconds: float = 10.0) -> None:
    """Stop PID if it is ours (see `runs`): SIGTERM, then SIGKILL after SECONDS."""
    if pid <= 0 or not runs(pid, marker):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.1)


def pid_in(path: Path) -> int:
    """The PID a pid file holds, 0 if none."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
