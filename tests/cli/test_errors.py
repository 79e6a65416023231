"""No invocation ends in a traceback: bad input, failing back ends and Ctrl-C each end in one clear
line and their documented exit status (provisioner/errors.py)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner import errors
from provisioner.cli import render
from provisioner.cli.main import left_running, main, parser
from provisioner.driver.engine_errors import RAW_CLI_NOTE
from provisioner.local import vm as local_vm
from provisioner.local.process import alive, pid_in
from provisioner.paths import project_dir
from provisioner.recipe.settings import DEFAULTS
from tests.conftest import ROOT
from tests.support.cli import run_cli, started_cli
from tests.support.fake_compute_api import INSTANCE, FakeComputeApi
from tests.support.fixes import assert_fixes_are_valid
from tests.support.outputs import class_outputs
from tests.support.stand_in_pulumi import stand_in_pulumi


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose home, state and cache are TMP_PATH's: nothing of the user's is touched."""
    environment = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    }
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        environment.pop(name, None)
    return environment


def serve(answer: bytes | None) -> Iterator[int]:
    """A TCP server on loopback: each connection gets ANSWER and is closed, or (None) is held in silence."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def loop() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if answer is None:
                held.append(connection)
            else:
                connection.sendall(answer)
                connection.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for connection in held:
            connection.close()


@pytest.fixture
def not_ssh() -> Iterator[int]:
    """A port that is open but speaks no SSH: a web server's answer to every connection."""
    yield from serve(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts and never answers: a command against it blocks until interrupted."""
    yield from serve(None)


@pytest.fixture
def key(tmp_path: Path) -> tuple[Path, str]:
    """A private key (mode 0400) and a public key to pin as a host key."""
    path = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    path.chmod(0o400)
    return path, (tmp_path / "key.pub").read_text().strip()


def check_args(port: int, key: tuple[Path, str], *extra: str) -> list[str]:
    path, public = key
    return ["check", "--host", "127.0.0.1", "--port", str(port), "--user", "u", "--identity", str(path),
            "--host-key", public, *extra]  # fmt: skip


def no_traceback(result: subprocess.CompletedProcess[str] | tuple[str, str]) -> str:
    """The output of a run, after asserting that it holds no traceback; its stderr's last line."""
    out, err = (result.stdout, result.stderr) if isinstance(result, subprocess.CompletedProcess) else result
    assert "Traceback" not in out + err, out + err
    return (err.strip().splitlines() or [""])[-1]


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (["frobnicate"], errors.ExitStatus.BAD_INPUT, "invalid choice: 'frobnicate'"),
        (["check", "--timeout", "soon"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["check", "--timeout", "0"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["check", "--timeout", "nan"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["start", "--timeout", "nan"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["start", "--timeout", "-1"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["stop", "--timeout", "nan"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["stop", "--timeout", "0"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["stop", "--student"], errors.ExitStatus.BAD_INPUT, "argument --student: expected one argument"),
        (["status", "--json", "--student", "x"], errors.ExitStatus.BAD_INPUT, "unrecognized arguments: --student x"),
        (["status", "--json"], errors.ExitStatus.MISSING_PREREQUISITE, "the Pulumi CLI is not installed"),
        (["stop"], errors.ExitStatus.MISSING_PREREQUISITE, "the Pulumi CLI is needed to read the stack's outputs"),
        (["check", "--port", "99999"], errors.ExitStatus.BAD_INPUT, "argument --port: "),
        (["check", "--workers", "0"], errors.ExitStatus.BAD_INPUT, "argument --workers: "),
        (["local", "up", "--cpus", "0"], errors.ExitStatus.BAD_INPUT, "argument --cpus: "),
        (["local", "up", "--memory", "-1"], errors.ExitStatus.BAD_INPUT, "argument --memory: "),
        (["local", "up", "--disk-size", "big"], errors.ExitStatus.BAD_INPUT, "argument --disk-size: "),
        (["local", "up", "--timeout", "-5"], errors.ExitStatus.BAD_INPUT, "argument --timeout: "),
        (["local", "metadata-server", "--attributes", "a.json", "--port", "70000"], 2, "argument --port: "),
        (["local", "check", "--name", "nothing-here"], errors.ExitStatus.BAD_INPUT, "no local VM named 'nothing-here'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], status: int, message: str, home: dict[str, str]) -> None:
    result = run_cli(*args, env=home)
    assert result.returncode == status, result.stderr
    assert message in no_traceback(result)


def test_a_port_that_is_open_but_not_ssh_is_unreachable_without_paramikos_tracebacks(
    not_ssh: int, key: tuple[Path, str], home: dict[str, str]
) -> None:
    result = run_cli(*check_args(not_ssh, key, "--timeout", "4"), env=home)
    assert result.returncode == errors.ExitStatus.UNREACHABLE, result.stderr
    last = no_traceback(result)
    assert "Exception (client)" not in result.stderr
    assert f"could not log in to u@127.0.0.1:{not_ssh} within 4s: " in last
    # What matters is in the one line.
    assert (
        f"(Error reading SSH protocol banner): sshd is not up yet, or another program listens on port {not_ssh}" in last
    )


def test_a_missing_local_tool_names_it(tmp_path: Path, home: dict[str, str]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_cli("local", "up", "--image", str(image), env={**home, "PATH": str(empty)})
    assert result.returncode == errors.ExitStatus.MISSING_PREREQUISITE
    assert "qemu-img is not installed. Fix: sudo apt-get install qemu-utils" in no_traceback(result)


def test_a_local_tool_that_fails_is_exit_8_with_its_own_words(tmp_path: Path, home: dict[str, str]) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "qemu-img").write_text('#!/bin/sh\necho "qemu-img: $5: Could not create: Permission denied" >&2\nexit 1\n')
    (tools / "qemu-img").chmod(0o755)
    disk = tmp_path / "home.qcow2"
    result = run_cli("local", "up", "--home-disk", str(disk), env={**home, "PATH": str(tools)})
    assert result.returncode == errors.ExitStatus.LOCAL_TOOL_FAILED, result.stderr
    assert result.stderr.endswith(
        f"course-vm: qemu-img failed (exit 1):\nqemu-img: {disk}: Could not create: Permission denied\n"
    )
    assert "Traceback" not in result.stderr


def test_local_ssh_without_an_ssh_client_names_it(tmp_path: Path, home: dict[str, str]) -> None:
    record = Path(home["XDG_STATE_HOME"]) / "course-vm" / "local" / "one" / "vm.json"
    record.parent.mkdir(parents=True)
    record.write_text(
        f'{{"name": "one", "directory": "{record.parent}", "pid": 0, "ssh_port": 2222, "user": "student",'
        f' "identity": "{tmp_path / "key"}", "host_keys": [], "accel": "tcg"}}'
    )
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_cli("local", "ssh", "--name", "one", env={**home, "PATH": str(empty)})
    assert result.returncode == errors.ExitStatus.MISSING_PREREQUISITE
    assert "ssh is not installed" in no_traceback(result)


def wait_for(process: subprocess.Popen[str], text: str, seconds: float = 60) -> str:
    """Stderr of PROCESS up to its first line holding TEXT."""
    assert process.stderr is not None
    seen = ""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} never came; stderr so far:\n{seen}")


def interrupt(process: subprocess.Popen[str], seen: str) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    return out, seen + err


def test_ctrl_c_during_check_exits_130_saying_nothing_is_left_running(
    silent: int, key: tuple[Path, str], home: dict[str, str]
) -> None:
    process = started_cli(*check_args(silent, key, "--timeout", "60"), env=home)
    seen = wait_for(process, "connecting to")
    time.sleep(0.5)  # into the login, which the silent server holds
    out, err = interrupt(process, seen)
    assert process.returncode == errors.ExitStatus.INTERRUPTED, err
    last = no_traceback((out, err))
    assert last.startswith("course-vm: interrupted: ")
    assert "check changes nothing on the VM" in last


def test_ctrl_c_during_a_class_check_exits_at_once(silent: int, key: tuple[Path, str], tmp_path: Path) -> None:
    # Each student's check is held by the silent server until its deadline (120 s); Ctrl-C must not
    # wait for those checks to run out (a thread pool's exit would).
    path, public = key
    outputs = class_outputs("alice", "bob", ip="127.0.0.1", username="u", identityFile=str(path), host_keys=[public])
    pulumi = stand_in_pulumi(tmp_path, {"dev": outputs}, selected="dev")
    process = started_cli("check", "--port", str(silent), "--timeout", "120", env=pulumi.environment)
    seen = wait_for(process, "connecting to")
    time.sleep(0.5)  # into the logins, which the silent server holds
    began = time.monotonic()
    out, err = interrupt(process, seen)
    assert process.returncode == errors.ExitStatus.INTERRUPTED, err
    assert time.monotonic() - began < 10, "Ctrl-C waited for the running checks"
    assert no_traceback((out, err)).startswith("course-vm: interrupted: the check changes nothing on the VM")


def test_ctrl_c_while_start_waits_exits_at_once(api: FakeComputeApi, tmp_path: Path) -> None:
    # A SUSPENDED VM is not started by `start` (GCE wants a resume), so start waits its whole timeout.
    api.instance_status = "SUSPENDED"
    outputs = class_outputs("alice", instanceName=INSTANCE.name, identityFile=str(tmp_path / "key"))
    env = {**stand_in_pulumi(tmp_path, {"dev": outputs}).environment, **api.gcloud_environment()}
    process = started_cli("start", "--timeout", "120", env=env)
    seen = wait_for(process, "SUSPENDED")
    began = time.monotonic()
    out, err = interrupt(process, seen)
    assert process.returncode == errors.ExitStatus.INTERRUPTED, err
    assert time.monotonic() - began < 10, "Ctrl-C waited for the VMs being started"
    assert no_traceback((out, err)).startswith("course-vm: interrupted: VMs already asked to start go on starting")


# `local up` with QEMU replaced by Python under QEMU's name, which writes its pid file and waits, printing nothing.
QEMU_STAND_IN = """
import sys
from pathlib import Path
from provisioner.local import qemu
from provisioner.cli.main import main

script = "import os, sys, time; open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(600)"
qemu.command = lambda _image, directory, *_: [sys.argv[1], "-c", script, "-pidfile", str(directory / "qemu.pid")]
sys.exit(main(sys.argv[2:]))
"""


def test_ctrl_c_while_local_up_boots_stops_the_vm_it_started(tmp_path: Path, home: dict[str, str]) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.symlink_to(sys.executable)
    args = ("local", "up", "--name", "one", "--image", str(image), "--accel", "tcg")
    process = subprocess.Popen(
        [sys.executable, "-c", QEMU_STAND_IN, str(qemu), *args],
        cwd=ROOT,
        env=home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = wait_for(process, "booting one")
    directory = Path(home["XDG_STATE_HOME"]) / "course-vm" / "local" / "one"
    deadline = time.monotonic() + 10
    while not (pid := pid_in(directory / "qemu.pid")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the stand-in writes it once it runs
    assert pid and alive(pid)
    out, err = interrupt(process, seen)
    assert process.returncode == errors.ExitStatus.INTERRUPTED, err
    last = no_traceback((out, err))
    assert last == "course-vm: interrupted while local VM one was booting: stopped it; nothing is left running"
    assert not alive(pid)
    assert not directory.exists()


def test_ctrl_c_once_the_local_vm_booted_says_it_still_runs_and_how_to_remove_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Past boot(): the setup runs in the VM whatever the checker does, so the VM is left running.
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * 65536)

    def booted(name: str, *_: object, **__: object) -> local_vm.LocalVm:
        raise KeyboardInterrupt  # as if Ctrl-C came while pinning the host keys

    monkeypatch.setattr("provisioner.cli.local.pinning", booted)
    monkeypatch.setattr(local_vm, "boot", lambda name, *_, **__: local_vm.LocalVm(
        name, tmp_path, 1, 2222, "student", tmp_path / "key", (), "tcg", None))  # fmt: skip
    assert main(["local", "up", "--name", "one", "--image", str(image)]) == errors.ExitStatus.INTERRUPTED
    assert capsys.readouterr().err == (
        "course-vm: interrupted: the local VM one is still running (its setup goes on). "
        "`course-vm local check --name one` checks it again; "
        "`course-vm local down --name one` removes it\n"
    )


def test_an_unexpected_error_is_one_line_exit_70_and_its_traceback_is_kept(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("COURSE_VM_TRACEBACK", raising=False)

    def broken(*_: object) -> Path:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(render, "rendered_settings", broken)
    assert main(["render"]) == errors.ExitStatus.BUG
    assert errors.ExitStatus.BUG.value == 70
    err = capsys.readouterr().err
    saved = tmp_path / "state" / "course-vm" / "last-error.txt"
    assert err == (
        "course-vm: unexpected error: ZeroDivisionError: division by zero. This is a bug in course-vm: "
        f"please report it with the traceback saved in {saved}\n"
    )
    assert "Traceback (most recent call last)" in saved.read_text()
    assert "ZeroDivisionError: division by zero" in saved.read_text()
    assert saved.stat().st_mode & 0o777 == 0o600


def test_an_unexpected_error_never_prints_or_keeps_a_token_or_a_private_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("COURSE_VM_TRACEBACK", raising=False)
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"

    def broken(*_: object) -> Path:
        # What http.client raises for a header value with a line break: the whole header in the message.
        raise ValueError(f"Invalid header value b'Bearer ya29.a0AfB_secret-token\\r' and {key} and Bearer abc.DEF_1")

    monkeypatch.setattr(render, "rendered_settings", broken)
    assert main(["render"]) == errors.ExitStatus.BUG
    err = capsys.readouterr().err
    saved = (tmp_path / "state" / "course-vm" / "last-error.txt").read_text()
    for text in (err, saved):
        assert "secret-token" not in text and "b3BlbnNzaC1rZXktdjEAAAAA" not in text and "abc.DEF_1" not in text
        assert "Bearer [redacted]" in text and "[private key redacted]" in text
    assert "Invalid header value" in err and "Traceback (most recent call last)" in saved


def test_course_vm_traceback_shows_an_unexpected_errors_traceback(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("COURSE_VM_TRACEBACK", "1")

    def broken(*_: object) -> Path:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(render, "rendered_settings", broken)
    with pytest.raises(ZeroDivisionError):
        main(["render"])


@pytest.fixture
def no_pulumi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine without the Pulumi CLI, and a home of its own."""
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def stack_file(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"Pulumi.{name}.yaml"
    path.write_text(text)
    return path


GOOD_STACK = (
    "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
    "  course-vm:allowedSshCidrs:\n    - 203.0.113.7/32\n"
)


def failing(argv: list[str], capsys: pytest.CaptureFixture[str], status: int = errors.ExitStatus.BAD_INPUT) -> str:
    """What ARGV prints on stderr, after asserting that it fails as expected failures do (exit STATUS)."""
    assert main(argv) == status
    err = capsys.readouterr().err
    assert err.startswith("course-vm") and "Traceback" not in err, err
    return err


@pytest.mark.usefixtures("no_pulumi")
@pytest.mark.parametrize("command", ["start", "stop", "status"])
def test_start_stop_and_status_without_pulumi_suggest_nothing_they_do_not_have(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [command, "--stack", "dev"]
    err = failing(argv, capsys, errors.ExitStatus.MISSING_PREREQUISITE)
    assert "--host" not in err and "--identity" not in err
    assert_fixes_are_valid(argv, err)


@pytest.mark.usefixtures("no_pulumi")
@pytest.mark.parametrize(
    "argv",
    [
        # `up` checks its options first: with good ones, what this machine lacks is next.
        ["up", "--yes", "--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "203.0.113.7/32"],
        ["down", "--yes"], ["status"], ["start"], ["stop"], ["check"], ["check", "--student", "a"],
        ["handout", "--out", "out"], ["image", "bake", "--yes"], ["image", "delete", "--yes"],
    ],
)  # fmt: skip
def test_a_missing_pulumi_cli_is_exit_6_for_every_command_that_needs_it(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [str(tmp_path / word) if word == "out" else word for word in argv]
    assert "the Pulumi CLI" in failing(argv, capsys, errors.ExitStatus.MISSING_PREREQUISITE)
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("no_pulumi")
def test_check_without_pulumi_suggests_its_own_flags(capsys: pytest.CaptureFixture[str]) -> None:
    err = failing(["check"], capsys, errors.ExitStatus.MISSING_PREREQUISITE)
    assert "--host, --user, --identity" in err
    assert_fixes_are_valid(["check"], err)


@pytest.mark.usefixtures("no_pulumi")
@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("config:\n  gcp:project: [unclosed\n", "is not valid YAML"),
        ("- a list\n- not a stack\n", "is not a stack's settings"),
        ("config:\n  - a list\n", "is not a stack's settings"),
        ("\0binary", "is not valid YAML"),
    ],
)
def test_render_of_a_broken_stack_file_says_to_correct_it(
    text: str, why: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = stack_file(project_dir(), "dev", text)
    argv = ["render"]
    err = failing(argv, capsys)
    assert f"{path} {why}" in err
    assert "pulumi stack init" not in err
    assert_fixes_are_valid(argv, err)


@pytest.mark.usefixtures("no_pulumi")
def test_render_of_a_duplicate_student_suggests_another_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file(project_dir(), "dev", GOOD_STACK + "  course-vm:students:\n    - alice\n    - alice\n")
    argv = ["render", "--student", "alice"]
    err = failing(argv, capsys)
    # One item of a list is set with the raw CLI (`up --set` would replace the whole list), and the note says how.
    assert "pulumi config set --path 'students[1]' alice-2" in err
    assert err.splitlines()[-1] == RAW_CLI_NOTE
    assert_fixes_are_valid(["up"], "\n".join(err.splitlines()[:-1]))


@pytest.mark.usefixtures("no_pulumi")
@pytest.mark.parametrize(
    ("setting", "fix"),
    [
        ("diskSizeGb=10", "Fix: --set diskSizeGb=30"),
        ("bogus=1", "Fix: leave out --set bogus=..."),
        ("verify=maybe", "Fix: --set verify=true"),
    ],
)
def test_local_up_settings_are_fixed_with_set(
    setting: str, fix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["local", "up", "--image", str(tmp_path / "none"), "--set", setting]
    err = failing(argv, capsys)
    assert fix in err
    assert_fixes_are_valid(argv, err)


@pytest.mark.usefixtures("no_pulumi")
def test_local_up_every_bad_setting_is_fixed_with_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["local", "up", "--image", str(tmp_path / "none")]
    for key in DEFAULTS:
        argv += ["--set", f"{key}=not valid!"]
    err = failing(argv, capsys)
    assert err.count("Fix: ") >= 10
    assert_fixes_are_valid(argv, err)


def test_check_with_a_missing_identity_file_suggests_identity(
    tmp_path: Path, key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = check_args(22, (tmp_path / "missing", key[1]))
    err = failing(argv, capsys)
    assert "set sshKeyPath" not in err
    assert f"--identity {tmp_path / 'missing'} does not exist" in err
    assert_fixes_are_valid(argv, err)


def test_check_with_a_public_key_as_identity_suggests_the_private_key_beside_it(
    key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    private, public = key[0], key[0].with_name("key.pub")
    argv = check_args(22, (public, key[1]))
    err = failing(argv, capsys)
    assert err == (
        f"course-vm: --identity {public} is a public key; ssh logs in with the private key beside it. "
        f"Fix: --identity {private}\n"
    )
    assert_fixes_are_valid(argv, err)


@pytest.mark.parametrize("option", ["--identity", "sshKeyPath"])
def test_a_file_that_is_no_private_key_is_named_so_not_told_to_chmod(
    option: str,
    tmp_path: Path,
    key: tuple[Path, str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    not_a_key = tmp_path / "passwd"
    not_a_key.write_text("root:x:0:0:root:/root:/bin/bash\n")
    not_a_key.chmod(0o644)
    argv = (
        check_args(22, (not_a_key, key[1]))
        if option == "--identity"
        else ["local", "up", "--image", str(tmp_path / "none"), "--set", f"sshKeyPath={not_a_key}"]
    )
    err = failing(argv, capsys)
    assert err.startswith(f"course-vm: {option} {not_a_key} is not an OpenSSH private key"), err
    assert "chmod" not in err and "root:" not in err
    assert_fixes_are_valid(argv, err)


def test_check_with_a_host_key_cut_short_says_all_of_what_is_wrong_and_where_to_get_one(
    key: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*check_args(22, key)[:-1], "ssh-ed25519 AAAA"]
    err = failing(argv, capsys)
    assert err.startswith("course-vm: malformed host key 'ssh-ed25519 AAAA': its 4 base64 characters are no whole ")
    assert "`ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…`" in err and err.endswith("--gce-project PROJECT\n")
    assert_fixes_are_valid(argv, err)


def test_local_check_of_no_vm_suggests_a_command_that_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    argv = ["local", "check", "--name", "nothing-here"]
    assert_fixes_are_valid(argv, failing(argv, capsys))


@pytest.mark.parametrize(
    ("argv", "fix"),
    [
        (["check"], "Fix: pass --host, --user and --identity"),
        (["start"], "Fix: pass --host"),
        (["local", "up"], "Fix: pulumi config set diskSizeGb 30"),
        (["local", "up"], "Fix: --set nothing=1"),
        (["local", "up"], "Fix: `course-vm local frobnicate`"),
    ],
)
def test_the_fix_checker_catches_a_wrong_fix(argv: list[str], fix: str) -> None:
    # The check above must be able to fail: each of these is a Fix: line its command cannot follow.
    if fix == "Fix: pass --host, --user and --identity":
        assert_fixes_are_valid(argv, fix)  # right for check
        return
    with pytest.raises(AssertionError):
        assert_fixes_are_valid(argv, fix)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["local", "image", "build"], "the image was not finished"),
        (["local", "down", "--name", "one"], "the local VM one may be half removed"),
        (["stop", "--stack", "prod"], "VMs already asked to stop go on stopping; `course-vm stop --stack prod` waits"),
    ],
)
def test_ctrl_c_names_what_each_command_leaves(argv: list[str], said: str) -> None:
    # What main() prints for an interrupted command comes from the command line as parsed.
    assert said in left_running(parser().parse_args(argv))
