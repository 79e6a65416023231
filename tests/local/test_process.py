"""The local VM's processes: liveness that a zombie does not fool, and stopping only our own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner.errors import ExitStatus, LocalToolError, MissingPrerequisiteError
from provisioner.local.process import alive, arguments, pid_in, require, run_tool, runs, stop


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
        assert not runs(stranger.pid, "python", str(tmp_path))
        assert stop(stranger.pid, "python", str(tmp_path)) is False
        assert stranger.poll() is None, "a process that is not ours was stopped"
    finally:
        stranger.kill()
        stranger.wait()


def test_ours_is_our_program_with_our_paths_whole(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path / "one")])
    try:
        deadline = time.monotonic() + 10
        while not arguments(ours.pid)[1:] and time.monotonic() < deadline:
            time.sleep(0.05)  # its command line is empty until it has started
        assert arguments(ours.pid) == [sys.executable, "-c", "import time; time.sleep(60)", str(tmp_path / "one")]
        assert runs(ours.pid, "python", str(tmp_path / "one"))
        # A path that merely starts with ours (VM `o`'s directory, and VM `one`'s) is not ours; nor another program.
        assert not runs(ours.pid, "python", str(tmp_path / "o"))
        assert not runs(ours.pid, "python", str(tmp_path))
        assert not runs(ours.pid, "qemu-system", str(tmp_path / "one"))
        assert stop(ours.pid, "python", str(tmp_path / "one")) is True
        assert ours.wait(5) != 0
    finally:
        ours.kill()
        ours.wait()


def test_a_pid_file_holds_a_number_or_nothing(tmp_path: Path) -> None:
    (tmp_path / "qemu.pid").write_text("1234\n")
    (tmp_path / "bad.pid").write_text("12; rm -rf /\n")
    assert (pid_in(tmp_path / "qemu.pid"), pid_in(tmp_path / "bad.pid"), pid_in(tmp_path / "none")) == (1234, 0, 0)


def test_a_tool_that_fails_is_a_local_tool_failure_ending_with_its_own_words() -> None:
    script = "import sys; print('line 1'); print('qemu-img: disk.img: Permission denied', file=sys.stderr); exit(3)"
    with pytest.raises(LocalToolError) as raised:
        run_tool([sys.executable, "-c", script], "qemu-img")
    assert str(raised.value) == "qemu-img failed (exit 3):\nline 1\nqemu-img: disk.img: Permission denied"
    assert raised.value.exit_code == ExitStatus.LOCAL_TOOL_FAILED
    run_tool([sys.executable, "-c", "print('fine')"], "python")  # a tool that succeeds says nothing


def test_a_missing_tool_is_a_missing_prerequisite_naming_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(
        MissingPrerequisiteError, match=r"^qemu-img is not installed\. Fix: sudo apt-get install qemu-utils$"
    ):
        require("qemu-img", "qemu-utils")
