"""The idle-stop script's logic, run by real bash against a stand-in /proc.

Stand-ins (this test's point is the decision, not the system): /proc/net/tcp{,6}, /proc/stat and
/proc/uptime are files this test writes, and `systemctl poweroff` is a script that records its
call. The real timer powering a real VM off is in tests/test_local_vm.py.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.recipe.user_data import render_idle_stop_script
from tests.conftest import require_tool

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


@pytest.mark.parametrize(
    ("tcp", "tcp6"), [(SSH_ESTABLISHED, ""), ("", SSH6_ESTABLISHED)], ids=["ssh over IPv4", "ssh over IPv6"]
)
def test_an_open_ssh_connection_keeps_it_running_and_restarts_the_count(vm: Vm, tcp: str, tcp6: str) -> None:
    vm.run()
    vm.run(after=150)
    vm.connections(tcp, tcp6)
    for _ in range(10):
        assert "an SSH connection is open" in vm.run()
    vm.connections("", "")
    assert "idle: counting from now" in vm.run()
    assert "idle for 60s" in vm.run()
    assert not vm.powered_off


def test_listening_sshd_and_other_connections_are_not_use(vm: Vm) -> None:
    vm.connections(HTTP_ESTABLISHED, "")
    for _ in range(4):
        vm.run()
    assert vm.powered_off


def test_a_short_gap_between_connections_is_not_idleness(vm: Vm) -> None:
    vm.connections(SSH_ESTABLISHED, "")
    vm.run()
    vm.connections("", "")
    vm.run(after=179)  # between two logins: the count starts here, not at the last busy run
    vm.connections(SSH_ESTABLISHED, "")
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
