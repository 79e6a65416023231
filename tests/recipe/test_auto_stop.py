"""The auto-stop script's logic, run by real bash against a stand-in /proc and /dev.

Stand-ins (this test's point is the decision, not the system): /proc/PID/cmdline and /proc/PID/io,
/proc/net/tcp{,6}, /proc/stat and /proc/uptime are files this test writes, a terminal is a file
whose access time says when it was last read from, and `systemctl poweroff` is a script that records
its call. The process titles are those real OpenSSH servers give (one test takes them from this
machine's sshd). Real SSH sessions against the real /proc are in test_auto_stop_sessions.py; the real
timer powering a real VM off is in tests/local/test_vm.py.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import socket
import subprocess
import termios
import time
from collections.abc import Callable
from pathlib import Path

import paramiko
import pytest

from provisioner.recipe.user_data import render_auto_stop_script
from tests.support.auto_stop import (
    HTTP_ESTABLISHED,
    SSH6_ESTABLISHED,
    SSH_ESTABLISHED,
    Vm,
    make_vm,
    ssh_command,
    wait_for,
)
from tests.support.sshd import Sshd

pytestmark = pytest.mark.integration


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


@pytest.fixture
def vm(tmp_path: Path) -> Vm:
    """A VM with autoStopIdleMinutes=3 and no running cap: its warning comes at the first idle run."""
    return make_vm(tmp_path, 3)


WARNED = re.compile(
    r"\[course-vm\] idle stop: nothing has used this VM since \d\d:\d\d UTC; it powers off at \d\d:\d\d UTC"
)
POWERING_OFF = "[course-vm] idle stop: powering off after 3 idle minutes (autoStopIdleMinutes)"


def test_an_idle_vm_is_warned_and_then_powered_off_once_the_limit_has_passed(vm: Vm) -> None:
    tty = vm.terminal(0, typed_seconds_ago=3600)
    assert WARNED.search(vm.run()), "with 3 minutes, the warning comes at the first idle run"
    assert WARNED.search(vm.shown(tty)) and WARNED.search(vm.console)
    assert "idle for 60s of 180s" in vm.run()
    assert "idle for 120s of 180s" in vm.run()
    assert not vm.powered_off
    vm.run()
    assert vm.powered_off
    assert POWERING_OFF in vm.console and POWERING_OFF in vm.shown(tty)


def test_a_longer_limit_is_warned_five_minutes_ahead_at_the_time_it_names(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, 10)
    assert "idle: counting from now" in vm.run()
    for minute in range(1, 5):
        assert f"idle for {minute * 60}s of 600s" in vm.run()
    said = vm.run()
    warned = WARNED.search(said)
    assert warned and "autoStopIdleMinutes=10" in said and WARNED.search(vm.console)
    # It names the wall-clock time of the stop: five minutes from now.
    stop = re.findall(r"powers off at (\d\d:\d\d) UTC", said)[0]
    expected = {time.strftime("%H:%M", time.gmtime(time.time() + 300 + delta)) for delta in (-5, 5)}
    assert stop in expected
    for _ in range(4):
        vm.run()
    assert not vm.powered_off
    vm.run()
    assert vm.powered_off


def test_use_after_the_warning_keeps_it_up_and_says_so(vm: Vm) -> None:
    tty = vm.terminal(0, typed_seconds_ago=3600)
    assert WARNED.search(vm.run())
    vm.terminal(0, typed_seconds_ago=0)
    assert "in use: input was typed in a terminal" in vm.run()
    assert "the VM is in use again (input was typed in a terminal) and stays up" in vm.shown(tty)
    vm.terminal(0, typed_seconds_ago=3600)
    for _ in range(3):
        vm.run()
    assert not vm.powered_off, "the count starts again, and so does the warning"
    vm.run()
    assert vm.powered_off


def test_a_late_run_warns_before_it_powers_off(vm: Vm) -> None:
    # A timer that missed its runs (a suspended VM): the limit has passed, but nobody was told yet.
    assert WARNED.search(vm.run())
    (vm.root / "state" / "warned-idle").unlink()
    vm.run(after=3600)
    assert not vm.powered_off
    vm.run()
    assert vm.powered_off


@pytest.mark.parametrize("session", LOGGED_IN)
def test_a_new_ssh_login_is_use_and_an_idle_session_is_not(vm: Vm, session: str) -> None:
    vm.run()
    vm.connections(SSH_ESTABLISHED, SSH6_ESTABLISHED)
    vm.processes(*LOGGED_IN[session])
    assert "in use: an SSH session logged in" in vm.run()
    # Still logged in, moving only keepalives: a VS Code window left open overnight.
    for _ in range(3):
        for pid in vm.io:
            vm.move(pid, 4096)
        assert "in use" not in vm.run()
    vm.run()
    assert vm.powered_off


def test_an_ssh_session_moving_data_is_use(vm: Vm) -> None:
    vm.processes(*LOGGED_IN["scp, VS Code Remote-SSH, the checker"])
    vm.run()
    for _ in range(10):
        vm.move(4, 5 << 20)
        assert "in use: an SSH session moved 5120 KiB" in vm.run()
    vm.move(4, 64 << 10)  # the floor itself is not use
    assert WARNED.search(vm.run())


def test_input_typed_in_any_terminal_is_use(vm: Vm) -> None:
    vm.terminal(0, typed_seconds_ago=3600)
    vm.terminal(7, typed_seconds_ago=3600)  # VS Code's or Jupyter's terminal, tmux: a pty all the same
    vm.run()
    for _ in range(5):
        vm.terminal(7, typed_seconds_ago=0)
        assert "in use: input was typed in a terminal" in vm.run()
    vm.terminal(7, typed_seconds_ago=600)
    assert WARNED.search(vm.run())


@pytest.mark.parametrize("connection", NOT_LOGGED_IN)
def test_connections_that_never_log_in_are_not_use(vm: Vm, connection: str) -> None:
    # A port scanner (SSH open to the world) must not keep the VM running, and billing, forever.
    vm.connections(SSH_ESTABLISHED + HTTP_ESTABLISHED, SSH6_ESTABLISHED)
    vm.processes(*NOT_LOGGED_IN[connection])
    assert WARNED.search(vm.run())
    for pid in vm.io:
        vm.move(pid, 1 << 20)  # even when they move data: a bot guessing keys
    for _ in range(3):
        vm.run()
    assert vm.powered_off


def test_a_process_that_ends_while_it_is_read_is_no_error(vm: Vm) -> None:
    # A process can exit between the listing of /proc and the reading of its cmdline or io.
    vm.processes(title("sshd: [accepted]"), title("sshd: alice@pts/1"))
    (vm.root / "proc" / "9").mkdir()  # a directory whose cmdline is already gone
    (vm.root / "proc" / "4" / "io").unlink()  # a session that ended after its title was read
    assert WARNED.search(vm.run())


def test_a_short_gap_between_sessions_is_not_idleness(vm: Vm) -> None:
    vm.processes(*LOGGED_IN["a terminal"])
    vm.run()
    vm.processes()
    vm.run(after=179)  # between two logins: the count starts here, not at the last busy run
    vm.processes(*LOGGED_IN["a terminal"])
    assert "in use: an SSH session logged in" in vm.run(after=2)
    assert not vm.powered_off


def test_a_busy_cpu_keeps_it_running(vm: Vm) -> None:
    vm.run()
    for _ in range(10):
        assert "the CPU was 50% busy" in vm.run(busy_percent=50)
    assert not vm.powered_off
    assert WARNED.search(vm.run(busy_percent=5))


def test_a_running_cloud_init_keeps_it_running(vm: Vm) -> None:
    (vm.root / "result.json").unlink()
    for _ in range(10):
        assert "cloud-init is still running" in vm.run()
    assert not vm.powered_off


CAP_WARNED = re.compile(
    r"\[course-vm\] running cap: this VM started at \d\d:\d\d UTC and powers off at \d\d:\d\d UTC whatever it is "
    r"doing \(maxRunHours=2\)"
)


@pytest.mark.parametrize("idle_minutes", [0, 60])
def test_the_running_cap_powers_off_a_busy_vm_after_a_warning(tmp_path: Path, idle_minutes: int) -> None:
    vm = make_vm(tmp_path, idle_minutes, max_run_hours=2)
    vm.uptime = 2 * 3600 - 7 * 60
    vm.processes(*LOGGED_IN["a terminal"])
    tty = vm.terminal(0, typed_seconds_ago=0)
    assert not CAP_WARNED.search(vm.run(busy_percent=90))
    said = vm.run(busy_percent=90)  # five minutes before
    assert CAP_WARNED.search(said) and CAP_WARNED.search(vm.shown(tty)) and CAP_WARNED.search(vm.console)
    for _ in range(4):
        vm.terminal(0, typed_seconds_ago=0)
        assert not CAP_WARNED.search(vm.run(busy_percent=90)), "one warning, not one a minute"
    assert not vm.powered_off
    vm.run(busy_percent=90)
    assert vm.powered_off
    assert "[course-vm] running cap: powering off after 2 hours (maxRunHours)" in vm.console


def test_a_cap_passed_unwarned_is_warned_first(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, 0, max_run_hours=1)
    vm.uptime = 5 * 3600
    assert "running cap: this VM started at" in vm.run()
    assert not vm.powered_off
    vm.run()
    assert vm.powered_off


def test_with_both_rules_off_there_is_no_script() -> None:
    assert render_auto_stop_script(0, 0) == ""
    assert "IDLE_MINUTES=0\nMAX_RUN_HOURS=12\n" in render_auto_stop_script(0, 12)


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
        unauthenticated = wait_for(ready_sshd, lambda t: bool(t), "the scanner's connection")
        vm.processes(*unauthenticated)
        assert WARNED.search(vm.run()), titles(unauthenticated)
    wait_for(ready_sshd, lambda t: not t, "the scanner's connection closed")

    with paramiko.Transport(("127.0.0.1", ready_sshd.port)) as transport:
        transport.start_client(timeout=10)
        with pytest.raises(paramiko.BadAuthenticationType):
            transport.auth_none(ready_sshd.user)
        named = wait_for(ready_sshd, lambda t: user + b" [net]" in b" ".join(titles(t)), "a named user")
        vm.processes(*named)
        assert "idle for 60s" in vm.run(), titles(named)
    wait_for(ready_sshd, lambda t: not t, "the named user's connection closed")

    # `cat` ends with the connection, so nothing outlives the test; -N runs nothing.
    for flags, command, seen in ((["-tt"], ["cat"], b"cat"), (["-T"], ["cat"], b"cat"), (["-N"], [], b"sshd: " + user)):
        with subprocess.Popen(
            ssh_command(ready_sshd, flags, command),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        ) as client:
            try:
                logged_in = wait_for(ready_sshd, shows(seen), f"ssh {flags}")
                vm.processes(*logged_in)
                assert "in use: an SSH session logged in" in vm.run(), titles(logged_in)
            finally:
                client.terminate()
        wait_for(ready_sshd, lambda t: not t, f"the ssh {flags} session closed")
        vm.processes()
        vm.run()  # the session is gone: the next one is a new login


def test_the_cpu_counts_as_use_above_ten_percent_busy_as_documented(vm: Vm) -> None:
    vm.run()
    assert "in use: the CPU was 11% busy" in vm.run(busy_percent=11)
    assert "in use" not in vm.run(busy_percent=10)


def test_a_process_that_only_looks_like_an_ssh_session_is_not_use(vm: Vm) -> None:
    # `exec -a "sshd: x@pts/0" cat /dev/zero`: any user may give a program sshd's title.
    vm.processes(*LOGGED_IN["a terminal"], program="/usr/bin/cat")
    vm.move(4, 5 << 20)
    assert WARNED.search(vm.run())
    vm.move(4, 5 << 20)
    vm.processes(*LOGGED_IN["a terminal"], program="/usr/sbin/sshd (deleted)")  # sshd, since upgraded
    assert "in use: an SSH session logged in" in vm.run()


def test_a_terminal_whose_access_time_was_set_ahead_is_not_typed_in(vm: Vm) -> None:
    # The terminal's owner may set its times: `touch -a -d 2099-01-01 $(tty)` types nothing, ever.
    vm.terminal(0, typed_seconds_ago=-100 * 24 * 3600)
    assert WARNED.search(vm.run())


@pytest.mark.parametrize("state", ["", "garbage\n", "12x"])
def test_a_damaged_state_file_starts_the_count_again(vm: Vm, state: str) -> None:
    vm.run()
    (vm.root / "state" / "idle-since").write_text(state)
    (vm.root / "state" / "last-run").write_text(state)
    said = vm.run()
    assert not vm.powered_off, said
    assert "idle: counting from now" in said, said


def test_a_terminal_that_does_not_take_output_does_not_hold_the_script(vm: Vm) -> None:
    # A terminal stopped with Ctrl-S whose output buffer is full: a blocking write would wait forever,
    # and the timer would start no other run.
    controller, terminal = pty.openpty()
    try:
        attributes = termios.tcgetattr(terminal)
        attributes[0] |= termios.IXON
        termios.tcsetattr(terminal, termios.TCSANOW, attributes)
        os.write(controller, b"\x13")  # Ctrl-S
        os.set_blocking(terminal, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(terminal, b"x" * 4096)
        (vm.root / "dev" / "pts" / "0").symlink_to(os.ttyname(terminal))
        os.utime(os.ttyname(terminal), (time.time() - 3600, time.time() - 3600))
        started = time.monotonic()
        assert WARNED.search(vm.run())
        assert time.monotonic() - started < 4, "the script waited for the stopped terminal"
        assert WARNED.search(vm.console)
    finally:
        os.close(terminal)
        os.close(controller)


def test_the_running_cap_waits_for_a_setup_still_running(tmp_path: Path) -> None:
    vm = make_vm(tmp_path, 0, max_run_hours=1)
    vm.uptime = 2 * 3600
    (vm.root / "result.json").unlink()
    for _ in range(3):
        assert "running cap" not in vm.run()
    (vm.root / "result.json").write_text("{}")
    assert "running cap: this VM started at" in vm.run()
    vm.run()
    assert vm.powered_off
