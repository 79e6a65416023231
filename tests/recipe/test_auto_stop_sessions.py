"""The idle stop's verdict on real SSH sessions: Debian's real sshd on loopback, real ssh and scp clients,
and the auto-stop script run against the real /proc of those sessions and their real terminals.

Stand-ins, for what is not the sessions: /proc/stat and /proc/uptime (this machine's CPU is busy with
other tests), cloud-init's result, the console and `systemctl poweroff`. The script's /proc links to the
real /proc/PID of each process below the test's sshd, and its /dev/pts to those sessions' real
terminals, so that it judges these sessions and not the others of this machine
(tests/support/auto_stop.py). Each verdict comes from one timer run that stands for a minute.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.auto_stop import Client, Vm, link_sessions, make_vm, ssh_command, wait_for
from tests.support.sshd import Sshd

pytestmark = pytest.mark.integration

NOT_USE = re.compile(r"idle: counting from now|idle for \d+s|idle stop: nothing has used this VM")


@contextmanager
def logged_in(sshd: Sshd, vm: Vm, flags: list[str], title: bytes, command: tuple[str, ...] = ()) -> Iterator[Client]:
    """A session of `ssh FLAGS HOST COMMAND`, once sshd titles it TITLE, seen by one timer run (a new login is
    use)."""
    client = Client(ssh_command(sshd, flags, list(command)))
    try:
        wait_for(sshd, lambda titles: any(title in t for t in titles), f"ssh {flags}")
        link_sessions(vm, sshd)
        said = vm.run()
        assert "in use: " in said, said  # a new login, or (for a terminal) its new tty
        yield client
    finally:
        client.end()


def next_eight_seconds() -> None:
    """Wait until the wall clock enters its next 8-second block: the kernel moves a terminal's access time
    only when it is that much out of date, so input in the block of the last run is seen at the next one."""
    now = time.time()
    time.sleep(8 - now % 8 + 0.2)


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    return make_vm(tmp_path, 3)


def test_an_idle_port_forward_with_keepalives_is_not_use(ready_sshd: Sshd, vm: Vm) -> None:
    # `ssh -N -L 8888:...` left open: what Jupyter's forward does while nobody uses the notebook. Four
    # keepalives, a second apart, are what ServerAliveInterval=15 sends in a minute.
    user = ready_sshd.user.encode()
    with logged_in(ready_sshd, vm, ["-N", "-o", "ServerAliveInterval=1"], b"sshd: " + user + b"\0"):
        time.sleep(4.5)
        link_sessions(vm, ready_sshd)
        said = vm.run()
    assert NOT_USE.search(said) and "in use" not in said, said


def test_an_idle_editor_session_with_a_heartbeat_is_not_use(ready_sshd: Sshd, vm: Vm) -> None:
    # VS Code Remote-SSH's window left open: a session without a terminal whose server and client trade
    # a small heartbeat; two of them, and their answers, are a minute's at 30 s.
    with logged_in(ready_sshd, vm, ["-T"], b"@notty", ("cat",)) as editor:
        for beat in (b"heartbeat-1", b"heartbeat-2"):
            editor.send(beat.ljust(63, b".") + b"\n")
            editor.wait_for_output(beat)
        link_sessions(vm, ready_sshd)
        said = vm.run()
    assert NOT_USE.search(said) and "in use" not in said, said


def test_typing_in_a_terminal_is_use_and_an_idle_terminal_is_told_before_the_stop(ready_sshd: Sshd, vm: Vm) -> None:
    with logged_in(ready_sshd, vm, ["-tt"], b"@pts/", ("cat",)) as terminal:
        next_eight_seconds()
        terminal.send(b"typed by a person\n")
        terminal.wait_for_output(b"typed by a person")
        assert "in use: input was typed in a terminal" in vm.run()
        next_eight_seconds()
        # Typed in the 8 seconds before a run, so seen again by the next: a minute more, never one less.
        assert "in use: input was typed in a terminal" in vm.run()
        said = vm.run()
        # Nothing typed since: with autoStopIdleMinutes=3 the warning comes at once, on the terminal itself.
        assert NOT_USE.search(said) and "in use" not in said, said
        terminal.wait_for_output(b"[course-vm] idle stop: nothing has used this VM since")
        assert "idle for 60s of 180s" in vm.run(), "the warning written to the terminal is not input"


def test_an_scp_of_a_few_megabytes_is_use(ready_sshd: Sshd, vm: Vm, tmp_path: Path) -> None:
    # scp over a connection already open (ControlMaster): the copy moves through the session the
    # script saw at the last run. -O: scp's own protocol (the test's sshd runs no sftp subsystem).
    control = tmp_path / "control"
    data = tmp_path / "data.bin"
    data.write_bytes(os.urandom(4 << 20))
    user = ready_sshd.user.encode()
    with logged_in(ready_sshd, vm, ["-N", "-M", "-S", str(control)], b"sshd: " + user + b"\0"):
        scp = [require_tool("scp"), "-O", "-o", f"ControlPath={control}", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]
        scp += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-P", str(ready_sshd.port)]
        copied = subprocess.run(
            [*scp, str(data), f"{ready_sshd.user}@127.0.0.1:/dev/null"], capture_output=True, timeout=60, check=False
        )
        assert copied.returncode == 0, copied.stderr
        link_sessions(vm, ready_sshd)
        said = vm.run()
    moved = re.search(r"in use: an SSH session moved (\d+) KiB", said)
    assert moved and int(moved.group(1)) >= 4096, said
