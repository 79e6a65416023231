"""A stand-in VM for the auto-stop script (cloud-init/auto-stop.sh.j2), and the processes of a real sshd.

The script reads /proc, /dev/pts, a state folder, cloud-init's result file and writes the console;
each has a hook (COURSE_VM_PROC and the like) that `Vm` points at files under one folder. `Vm` writes
stand-ins for all of them; the tests of real sessions (tests/recipe/test_auto_stop_sessions.py and
benchmarks/ssh_idle_traffic.py) instead link its /proc and /dev/pts to the real ones of an sshd's sessions.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.recipe.user_data import render_auto_stop_script
from tests.conftest import require_tool
from tests.support.sshd import Sshd

LOGGED_IN_TITLE = re.compile(r"sshd(-session)?: [^][\s@]+(@(pts/[0-9]+|notty))?")
"""A logged-in session's process title, as the script's ssh_sessions() matches it."""

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
# sshd listening (0A) on :22, which is not a connection, and a web server's established connection.
LISTEN_22 = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
HTTP_ESTABLISHED = "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
SSH_ESTABLISHED = "   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3\n"
SSH6_ESTABLISHED = (
    "   0: 00000000000000000000000001000000:0016 00000000000000000000000001000000:C351 01 "
    "00000000:00000000 00:00000000 00000000     0        0 4\n"
)


@dataclass
class Vm:
    """A stand-in /proc and /dev and the script's state, advanced one timer run at a time."""

    root: Path
    script: Path
    uptime: int = 1000
    cpu_total: int = 100_000
    cpu_idle: int = 90_000
    io: dict[int, int] = field(default_factory=dict)
    """Bytes each process has read and written, as /proc/PID/io's rchar plus wchar."""

    def __post_init__(self) -> None:
        (self.root / "proc" / "net").mkdir(parents=True)
        (self.root / "dev" / "pts").mkdir(parents=True)
        (self.root / "result.json").write_text("{}")
        self.connections("", "")

    def connections(self, tcp: str, tcp6: str) -> None:
        (self.root / "proc" / "net" / "tcp").write_text(TCP_HEADER + LISTEN_22 + tcp)
        (self.root / "proc" / "net" / "tcp6").write_text(TCP_HEADER + tcp6)

    def processes(self, *cmdlines: bytes, program: str | None = None) -> None:
        """The VM's processes, as /proc/PID/cmdline, besides init and a shell that are always there.

        Each starts with 1,500 bytes read and written (a login's); PIDs are 3, 4, ... in order. Their
        /proc/PID/exe is PROGRAM, by default the one their title names (sshd's own for sshd's titles).
        """
        for old in (self.root / "proc").glob("[0-9]*"):
            for file in old.iterdir():
                file.unlink()
            old.rmdir()
        self.io = {}
        for pid, cmdline in enumerate((b"/sbin/init\0", b"bash\0", *cmdlines), start=1):
            (self.root / "proc" / str(pid)).mkdir()
            (self.root / "proc" / str(pid) / "cmdline").write_bytes(cmdline)
            (self.root / "proc" / str(pid) / "exe").symlink_to(program or _program(cmdline))
            self.move(pid, 1500)

    def move(self, pid: int, size: int) -> None:
        """Process PID reads and writes SIZE more bytes."""
        self.io[pid] = self.io.get(pid, 0) + size
        read = self.io[pid] // 2
        (self.root / "proc" / str(pid) / "io").write_text(
            f"rchar: {read}\nwchar: {self.io[pid] - read}\nsyscr: 5\nsyscw: 5\nread_bytes: 0\nwrite_bytes: 0\n"
        )

    def terminal(self, number: int, typed_seconds_ago: float) -> Path:
        """/dev/pts/NUMBER, last read from (a key typed) that long ago."""
        tty = self.root / "dev" / "pts" / str(number)
        tty.touch()
        typed = time.time() - typed_seconds_ago
        os.utime(tty, (typed, typed))
        return tty

    @staticmethod
    def shown(tty: Path) -> str:
        """What was written to the terminal TTY. Reading a file sets its access time; a terminal's output
        does not, so the stand-in's is put back."""
        before = tty.stat()
        text = tty.read_text()
        os.utime(tty, ns=(before.st_atime_ns, before.st_mtime_ns))
        return text

    def run(self, *, after: int = 60, busy_percent: int = 1) -> str:
        """One timer run AFTER seconds later, the CPU BUSY_PERCENT busy in between."""
        self.uptime += after
        ticks = after * 100 * 2  # two CPUs at USER_HZ 100
        self.cpu_total += ticks
        self.cpu_idle += ticks * (100 - busy_percent) // 100
        user = self.cpu_total - self.cpu_idle
        # user nice system idle iowait irq softirq steal guest guest_nice
        (self.root / "proc" / "stat").write_text(
            f"cpu  {user} 0 0 {self.cpu_idle} 0 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
        )
        (self.root / "proc" / "uptime").write_text(f"{self.uptime}.42 1234.56\n")
        return run_script(self.script, self.root)

    @property
    def powered_off(self) -> bool:
        return (self.root / "powered-off").exists()

    @property
    def console(self) -> str:
        path = self.root / "console"
        return path.read_text() if path.exists() else ""


def _program(cmdline: bytes) -> str:
    """The program a process of this CMDLINE runs, as /proc/PID/exe shows it."""
    if cmdline.startswith(b"sshd-session:"):
        return "/usr/lib/openssh/sshd-session"
    if cmdline.startswith(b"sshd"):
        return "/usr/sbin/sshd"
    return "/usr/bin/" + cmdline.split(b"\0")[0].decode().rsplit("/", 1)[-1].lstrip("-")


def run_script(script: Path, root: Path) -> str:
    """Run SCRIPT once as the timer would, its /proc, /dev, state and console under ROOT; its output."""
    env = {
        "PATH": os.environ["PATH"],
        "COURSE_VM_PROC": str(root / "proc"),
        "COURSE_VM_DEV": str(root / "dev"),
        "COURSE_VM_IDLE_STATE": str(root / "state"),
        "COURSE_VM_CLOUD_INIT_RESULT": str(root / "result.json"),
        "COURSE_VM_POWEROFF": str(root / "poweroff"),
        "COURSE_VM_CONSOLE": str(root / "console"),
    }
    result = subprocess.run([require_tool("bash"), str(script)], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_vm(root: Path, idle_minutes: int, max_run_hours: int = 0) -> Vm:
    script = root / "course-vm-auto-stop"
    script.write_text(render_auto_stop_script(idle_minutes, max_run_hours))
    poweroff = root / "poweroff"
    poweroff.write_text(f"#!/bin/sh\ntouch {root / 'powered-off'}\n")
    poweroff.chmod(0o755)
    return Vm(root, script)


def pids_below(sshd: Sshd) -> list[int]:
    """Every process below SSHD's listener, from the real /proc."""
    assert sshd.process is not None
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found: list[int] = []
    frontier = [sshd.process.pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def below(sshd: Sshd) -> list[bytes]:
    """The cmdlines of every process below SSHD's listener, read from the real /proc."""
    titles = []
    for pid in pids_below(sshd):
        try:
            titles.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    return titles


def wait_for(sshd: Sshd, seen: Callable[[list[bytes]], bool], what: str) -> list[bytes]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        titles = below(sshd)
        if seen(titles):
            return titles
        time.sleep(0.1)
    raise AssertionError(f"sshd never showed {what}: {below(sshd)}")


def link_sessions(vm: Vm, sshd: Sshd) -> None:
    """Point VM's /proc at the real /proc/PID of every process below SSHD, and its /dev/pts at the real
    terminals those processes' titles name (USER@pts/N): the script judges these sessions, and not the
    others of this machine. /proc/stat and /proc/uptime stay the stand-in's."""
    for old in [*(vm.root / "proc").glob("[0-9]*"), *(vm.root / "dev" / "pts").iterdir()]:
        old.unlink()
    for pid in pids_below(sshd):
        (vm.root / "proc" / str(pid)).symlink_to(f"/proc/{pid}")
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        except OSError:
            continue
        if "@pts/" in title:
            number = title.rsplit("@pts/", 1)[1]
            if not (vm.root / "dev" / "pts" / number).exists():
                (vm.root / "dev" / "pts" / number).symlink_to(f"/dev/pts/{number}")


def session_bytes(sshd: Sshd) -> dict[int, int]:
    """Each logged-in session's process below SSHD, and the bytes it has read and written (rchar + wchar)."""
    found = {}
    for pid in pids_below(sshd):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
        except (OSError, ValueError):
            continue
        if LOGGED_IN_TITLE.fullmatch(title):
            found[pid] = int(io["rchar"]) + int(io["wchar"])
    return found


class Client:
    """An ssh or scp client process, its output gathered as it comes."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.output = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := os.read(self.process.stdout.fileno(), 4096):
            self.output += chunk

    def send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def wait_for_output(self, text: bytes, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while text not in self.output:
            if time.monotonic() > deadline:
                raise AssertionError(f"the client never showed {text!r}: {bytes(self.output)!r}")
            time.sleep(0.05)

    def end(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        self._reader.join(10)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


def ssh_command(sshd: Sshd, flags: list[str], command: list[str]) -> list[str]:
    return [
        require_tool("ssh"),
        *("-i", str(sshd.client_key), "-p", str(sshd.port), "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"),
        *("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", *flags),
        f"{sshd.user}@127.0.0.1",
        *command,
    ]
