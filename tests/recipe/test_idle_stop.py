"""The idle-stop script's logic, run by real bash against a stand-in /proc.

Stand-ins (this test's point is the decision, not the system): /proc/PID/cmdline, /proc/net/tcp{,6},
/proc/stat and /proc/uptime are files this test writes, and `systemctl poweroff` is a script that
records its call. The process titles are those real OpenSSH servers give (one test takes them from
this machine's sshd). The real timer powering a real VM off is in tests/test_local_vm.py.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paramiko
import pytest

from provisioner.recipe.user_data import render_idle_stop_script
from tests.conftest import require_tool
from tests.support.sshd import Sshd

pytestmark = pytest.mark.integration

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
# sshd listening (0A) on :22, which is not a connection, and a web server's established connection.
LISTEN_22 = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
HTTP_ESTABLISHED = "   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2\n"
SSH_ESTABLISHED = "   2: 0F02000A:0016 0202000A:C350 01 00000000:00000000 00:00000000 00000000     0        0 3\n"
SSH6_ESTABLISHED = (
    "   0: 00000000000000000000000001000000:0016 00000000000000000000000001000000:C351 01 "
    "00000000:00000000 00:00000000 00000000     0        0 4\n"
)


def title(text: str) -> bytes:
    """/proc/PID/cmdline of a process that set its title as sshd does: the text, then NUL padding."""
    return text.encode() + bytes(40)


# Processes of a logged-in SSH session: OpenSSH up to 9.7 (sshd), and from 9.8 on (sshd-session).
LOGGED_IN = {
    "a terminal": [title("sshd: alice [priv]"), title("sshd: alice@pts/0"), b"-bash\0"],
    "scp, VS Code Remote-SSH, the checker": [title("sshd: alice [priv]"), title("sshd: alice@notty")],
    "OpenSSH 9.8 or later": [title("sshd-session: alice [priv]"), title("sshd-session: alice@pts/3")],
    "a port forward only (ssh -N for Jupyter)": [title("sshd: alice [priv]"), title("sshd: alice")],
}
# Connections that have not logged in (a port scanner, a bot guessing keys), and other processes.
NOT_LOGGED_IN = {
    "accepted": [title("sshd: [accepted]"), title("sshd: [net]")],
    "user named, not authenticated": [title("sshd: alice [priv]"), title("sshd: alice [net]")],
    "unknown user": [title("sshd: unknown [priv]"), title("sshd: unknown [net]")],
    "OpenSSH 9.8 or later": [title("sshd-session: [accepted]"), title("sshd-auth: alice [net]")],
    "the listener and other programs": [
        title("sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups"),
        b"/usr/bin/python3\0train.py\0--notty\0",
        b"/usr/sbin/sshd\0-D\0",
    ],
}


@dataclass
class Vm:
    """A stand-in /proc and the script's state, advanced one timer run at a time."""

    root: Path
    script: Path
    uptime: int = 1000
    cpu_total: int = 100_000
    cpu_idle: int = 90_000

    def __post_init__(self) -> None:
        (self.root / "proc" / "net").mkdir(parents=True)
        (self.root / "result.json").write_text("{}")
        self.connections("", "")

    def connections(self, tcp: str, tcp6: str) -> None:
        (self.root / "proc" / "net" / "tcp").write_text(TCP_HEADER + LISTEN_22 + tcp)
        (self.root / "proc" / "net" / "tcp6").write_text(TCP_HEADER + tcp6)

    def processes(self, *cmdlines: bytes) -> None:
        """The VM's processes, as /proc/PID/cmdline, besides init and a shell that are always there."""
        for old in (self.root / "proc").glob("[0-9]*"):
            (old / "cmdline").unlink(missing_ok=True)
            old.rmdir()
        for pid, cmdline in enumerate((b"/sbin/init\0", b"bash\0", *cmdlines), start=1):
            (self.root / "proc" / str(pid)).mkdir()
            (self.root / "proc" / str(pid) / "cmdline").write_bytes(cmdline)

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
        env = {
            "PATH": os.environ["PATH"],
            "COURSE_VM_PROC": str(self.root / "proc"),
            "COURSE_VM_IDLE_STATE": str(self.root / "state"),
            "COURSE_VM_CLOUD_INIT_RESULT": str(self.root / "result.json"),
            "COURSE_VM_POWEROFF": str(self.root / "poweroff"),
            "COURSE_VM_CONSOLE": str(self.root / "console"),
        }
        result = subprocess.run(
            [require_tool("bash"), str(self.script)], env=env, capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    @property
    def powered_off(self) -> bool:
        return (self.root / "powered-off").exists()


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    script = tmp_path / "course-vm-idle-stop"
    script.write_text(render_idle_stop_script(3))
    poweroff = tmp_path / "poweroff"
    poweroff.write_text(f"#!/bin/sh\ntouch {tmp_path / 'powered-off'}\n")
    poweroff.chmod(0o755)
    return Vm(tmp_path, script)


def test_an_idle_vm_powers_off_once_the_limit_has_passed(vm: Vm) -> None:
    assert "idle: counting from now" in vm.run()
    assert "idle for 60s of 180s" in vm.run()
    assert "idle for 120s of 180s" in vm.run()
    assert not vm.powered_off
    vm.run()
    assert vm.powered_off
    assert "idle for 3 minutes: powering off" in (vm.root / "console").read_text()


@pytest.mark.parametrize("session", LOGGED_IN)
def test_a_logged_in_ssh_session_keeps_it_running_and_restarts_the_count(vm: Vm, session: str) -> None:
    vm.run()
    vm.run(after=150)
    vm.connections(SSH_ESTABLISHED, SSH6_ESTABLISHED)
    vm.processes(*LOGGED_IN[session])
    for _ in range(10):
        assert "an SSH session is logged in" in vm.run()
    vm.processes()
    vm.connections("", "")
    assert "idle: counting from now" in vm.run()
    assert "idle for 60s" in vm.run()
    assert not vm.powered_off


@pytest.mark.parametrize("connection", NOT_LOGGED_IN)
def test_connections_that_never_log_in_are_not_use(vm: Vm, connection: str) -> None:
    # A port scanner (SSH open to the world) must not keep the VM running, and billing, forever.
    vm.connections(SSH_ESTABLISHED + HTTP_ESTABLISHED, SSH6_ESTABLISHED)
    vm.processes(*NOT_LOGGED_IN[connection])
    assert "idle: counting from now" in vm.run()
    for _ in range(3):
        vm.run()
    assert vm.powered_off


def test_a_process_that_ends_while_it_is_read_is_no_error(vm: Vm) -> None:
    # A process can exit between the listing of /proc and the reading of its cmdline.
    vm.processes(title("sshd: [accepted]"))
    (vm.root / "proc" / "9").mkdir()  # a directory whose cmdline is already gone
    assert "idle: counting from now" in vm.run()


def test_a_short_gap_between_sessions_is_not_idleness(vm: Vm) -> None:
    vm.processes(*LOGGED_IN["a terminal"])
    vm.run()
    vm.processes()
    vm.run(after=179)  # between two logins: the count starts here, not at the last busy run
    vm.processes(*LOGGED_IN["a terminal"])
    vm.run(after=2)
    assert not vm.powered_off


def test_a_busy_cpu_keeps_it_running(vm: Vm) -> None:
    vm.run()
    for _ in range(10):
        assert "the CPU was 50% busy" in vm.run(busy_percent=50)
    assert not vm.powered_off
    assert "idle: counting from now" in vm.run(busy_percent=5)


def test_a_running_cloud_init_keeps_it_running(vm: Vm) -> None:
    (vm.root / "result.json").unlink()
    for _ in range(10):
        assert "cloud-init is still running" in vm.run()
    assert not vm.powered_off


def _below(sshd: Sshd) -> list[bytes]:
    """The cmdlines of every process below SSHD's listener, read from the real /proc."""
    assert sshd.process is not None
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    below: list[int] = []
    frontier = [sshd.process.pid]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        below += children
        frontier += children
    titles = []
    for pid in below:
        try:
            titles.append(Path(f"/proc/{pid}/cmdline").read_bytes())
        except OSError:
            continue
    return titles


def _wait_for(sshd: Sshd, seen: Callable[[list[bytes]], bool], what: str) -> list[bytes]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        titles = _below(sshd)
        if seen(titles):
            return titles
        time.sleep(0.1)
    raise AssertionError(f"sshd never showed {what}: {_below(sshd)}")


@pytest.mark.integration
def test_the_titles_of_this_machines_sshd_are_told_apart(ready_sshd: Sshd, vm: Vm) -> None:
    # What the script reads, taken from a real OpenSSH: connections that have not logged in (a
    # scanner; a client that named a real user but did not authenticate), then logged-in ones: a
    # terminal, a command without one (scp, VS Code, the checker) and a port forward alone.
    user = ready_sshd.user.encode()

    def titles(cmdlines: list[bytes]) -> list[bytes]:
        return [c.rstrip(b"\0") for c in cmdlines]

    def shows(expected: bytes) -> Callable[[list[bytes]], bool]:
        return lambda cmdlines: expected in titles(cmdlines)

    with socket.create_connection(("127.0.0.1", ready_sshd.port)) as scanner:
        scanner.sendall(b"SSH-2.0-scanner\r\n")
        unauthenticated = _wait_for(ready_sshd, lambda t: bool(t), "the scanner's connection")
        vm.processes(*unauthenticated)
        assert "idle: counting from now" in vm.run(), titles(unauthenticated)
    _wait_for(ready_sshd, lambda t: not t, "the scanner's connection closed")

    with paramiko.Transport(("127.0.0.1", ready_sshd.port)) as transport:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType):
            transport.auth_none(ready_sshd.user)
        named = _wait_for(ready_sshd, lambda t: user + b" [net]" in b" ".join(titles(t)), "a named user")
        vm.processes(*named)
        assert "idle for 60s" in vm.run(), titles(named)
    _wait_for(ready_sshd, lambda t: not t, "the named user's connection closed")

    ssh = [require_tool("ssh"), "-i", str(ready_sshd.client_key), "-p", str(ready_sshd.port), "-o", "BatchMode=yes"]
    ssh += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", f"{ready_sshd.user}@127.0.0.1"]
    # `cat` ends with the connection, so nothing outlives the test; -N runs nothing.
    for flags, seen in ((["-tt", "cat"], b"cat"), (["-T", "cat"], b"cat"), (["-N"], b"sshd: " + user)):
        with subprocess.Popen(
            [*ssh, *flags], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        ) as client:
            try:
                logged_in = _wait_for(ready_sshd, shows(seen), f"ssh {flags}")
                vm.processes(*logged_in)
                assert "an SSH session is logged in" in vm.run(), titles(logged_in)
            finally:
                client.terminate()
        _wait_for(ready_sshd, lambda t: not t, f"the ssh {flags} session closed")
        vm.processes()
