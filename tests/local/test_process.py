"""The local VM's processes: liveness that a zombie does not fool, and stopping only our own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from provisioner.local.process import alive, pid_in, runs, stop


def test_a_powered_off_vm_whose_qemu_is_not_reaped_yet_is_not_running() -> None:
    qemu = subprocess.Popen(["true"])  # exits at once; not waited for, so it stays a zombie
    try:
        deadline = time.monotonic() + 10
        while alive(qemu.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not alive(qemu.pid)
        assert Path(f"/proc/{qemu.pid}").exists()  # still there, as a zombie
    finally:
        qemu.wait()
    assert alive(os.getpid())


def test_a_pid_that_is_no_longer_ours_is_left_alone(tmp_path: Path) -> None:
    # After a reboot (or once QEMU is gone) a pid file may name anyone's process.
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not runs(stranger.pid, str(tmp_path))
        stop(stranger.pid, str(tmp_path))
        assert stranger.poll() is None, "a process that is not ours was stopped"
    finally:
        stranger.kill()
        stranger.wait()


def test_our_process_is_stopped(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path)])
    try:
        deadline = time.monotonic() + 10
        while not runs(ours.pid, str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.05)  # its command line is empty until it has started
        assert runs(ours.pid, str(tmp_path))
        stop(ours.pid, str(tmp_path))
        assert ours.wait(5) != 0
    finally:
        ours.kill()
        ours.wait()


def test_a_pid_file_holds_a_number_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "qemu.pid").write_text("1234\n")
    (tmp_path / "bad.pid").write_text("12; rm -rf /\n")
    assert (pid_in(tmp_path / "qemu.pid"), pid_in(tmp_path / "bad.pid"), pid_in(tmp_path / "none")) == (1234, 0, 0)
