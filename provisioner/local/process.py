"""The local VM's own processes and the tools it runs: finding a tool, whether one runs, and stopping only ours."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from provisioner.errors import LocalToolError, MissingPrerequisiteError

TAIL_LINES = 15
"""How much of a failed tool's output its error quotes: its last lines, where the reason is."""


def require(tool: str, package: str) -> str:
    """The path of TOOL. Raises MissingPrerequisiteError naming the Debian PACKAGE that has it when it is
    not installed."""
    path = shutil.which(tool)
    if path is None:
        raise MissingPrerequisiteError(f"{tool} is not installed. Fix: sudo apt-get install {package}")
    return path


def run_tool(command: list[str], name: str) -> None:
    """Run COMMAND, a tool called NAME, to its end. Raises LocalToolError with the end of its output when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-TAIL_LINES:])
        raise LocalToolError(f"{name} failed (exit {result.returncode})" + (f":\n{tail}" if tail else ""))


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


def arguments(pid: int) -> list[str]:
    """PID's command line, argument by argument; [] when it is gone or cannot be read."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in command.split(b"\0")[:-1]]


def runs(pid: int, program: str, *markers: str) -> bool:
    """Whether PID runs PROGRAM (its file name starts so) with each of MARKERS (paths of ours) as a
    whole argument. After a reboot, or once the process is gone, the same PID may be anyone's: a
    `sleep`, another VM's QEMU (whose paths start with this VM's directory), a `tail -f` of a log."""
    command = arguments(pid)
    return (
        bool(command)
        and Path(command[0]).name.startswith(program)
        and all(marker in command[1:] for marker in markers)
        and alive(pid)
    )


def stop(pid: int, program: str, *markers: str, seconds: float = 10.0) -> bool:
    """Stop PID if it is ours (see `runs`): SIGTERM, then SIGKILL after SECONDS. False: it was not ours."""
    if pid <= 0 or not runs(pid, program, *markers):
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            return True
        time.sleep(0.1)
    return True


def pid_in(path: Path) -> int:
    """The PID a pid file holds, 0 if none."""
    try:
        text = path.read_text().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0
