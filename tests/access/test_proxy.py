"""The IAP ProxyCommand: what is run, and paramiko logging in through it to a real sshd."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType

import pytest

from provisioner.access.host_keys import parse_host_key
from provisioner.access.proxy import (
    ProxyMissingError,
    ProxySocket,
    find_program,
    iap_location,
    iap_proxy_command,
    proxy_argv,
    tunnel_refusal,
)
from provisioner.access.ssh import Target, connect, load_identity, run
from provisioner.errors import CourseVmError, ExitStatus, HostKeyMismatchError
from tests.support import gcloud
from tests.support.sshd import Sshd, other_host_key

PROJECT, ZONE, INSTANCE = "course-project-1", "europe-west1-b", "course-vm-vm-1a2b3c"
IAP = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"


def test_the_iap_proxy_command() -> None:
    assert iap_proxy_command(PROJECT, ZONE) == IAP
    assert iap_location(IAP) == (PROJECT, ZONE)
    assert proxy_argv(IAP, INSTANCE, 22) == [
        "gcloud", "compute", "start-iap-tunnel", INSTANCE, "22", "--listen-on-stdin",
        "--project", PROJECT, "--zone", ZONE,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [
        "",
        IAP + " ; touch /tmp/x",
        IAP.replace("gcloud", "./gcloud"),
        IAP.replace(PROJECT, "Course_Project"),
        IAP.replace(ZONE, "$(id)"),
        IAP.replace("%h", "other-vm"),
        IAP + "\nMatch exec true",
        "sh -c 'nc %h 22'",
    ],
)
def test_nothing_but_the_iap_command_is_run(command: str) -> None:
    assert iap_location(command) is None
    with pytest.raises(CourseVmError, match="runs only its own IAP tunnel"):
        proxy_argv(command, INSTANCE, 22)


def test_gcloud_cmd_is_the_iap_command_too() -> None:
    windows = IAP.replace("gcloud ", "gcloud.cmd ", 1)
    assert iap_proxy_command(PROJECT, ZONE, windows=True) == windows
    assert iap_location(windows) == (PROJECT, ZONE)
    assert proxy_argv(windows, INSTANCE, 22)[0] == "gcloud.cmd"


def planted(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    program = folder / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    return program


@pytest.mark.parametrize("path", ["{bin}", ":{bin}", "{bin}:", ".:{bin}", "{bin}::{other}", "relative:{bin}"])
def test_gcloud_is_found_on_path_only_never_in_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    here = tmp_path / "cwd"
    for name in ("gcloud", "gcloud.cmd"):
        planted(here, name)
    planted(here / "relative", "gcloud")
    monkeypatch.chdir(here)
    real = planted(tmp_path / "bin", "gcloud")
    value = path.format(bin=tmp_path / "bin", other=tmp_path / "other")
    assert find_program("gcloud", value, windows=False) == str(real)
    assert find_program("gcloud", ":.:relative", windows=False) is None


def test_on_windows_gcloud_cmd_is_found_through_pathext_in_path_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    here = tmp_path / "cwd"
    planted(here, "gcloud.cmd")
    monkeypatch.chdir(here)
    real = planted(tmp_path / "sdk" / "bin", "gcloud.cmd")
    path = f";.;{tmp_path / 'empty'};{tmp_path / 'sdk' / 'bin'}"
    assert find_program("gcloud", path, windows=True, pathext=".COM;.EXE;.BAT;.CMD") == str(real)
    assert find_program("gcloud.cmd", path, windows=True, pathext=".COM;.EXE;.BAT;.CMD") == str(real)
    assert find_program("gcloud", ";.", windows=True, pathext=".COM;.EXE;.BAT;.CMD") is None


@pytest.mark.parametrize("host", ["10.42.0.2", "Course-VM", "vm;id", "-oProxyCommand=x", ""])
def test_the_host_is_an_instance_name(host: str) -> None:
    with pytest.raises(CourseVmError, match="runs only its own IAP tunnel"):
        proxy_argv(IAP, host, 22)


def test_bad_project_or_zone_is_refused() -> None:
    with pytest.raises(CourseVmError, match="not a GCP project ID"):
        iap_proxy_command("x y", ZONE)


@pytest.mark.parametrize(
    ("said", "exit_code"),
    [
        (gcloud.NOT_AUTHORIZED, ExitStatus.UNREACHABLE),
        (
            "ERROR: (gcloud.compute.start-iap-tunnel) Could not fetch resource:\n"
            " - Required 'compute.instances.get' permission for 'projects/p/zones/z/instances/vm-1'",
            ExitStatus.UNREACHABLE,
        ),
        (gcloud.NOT_LOGGED_IN, ExitStatus.MISSING_PREREQUISITE),
        (
            "ERROR: (gcloud.compute.start-iap-tunnel) Reauthentication failed. cannot prompt",
            ExitStatus.MISSING_PREREQUISITE,
        ),
        (gcloud.EXIT_ERROR, None),  # 4003: the VM or its sshd is not up yet
        ("ERROR: (gcloud.compute.start-iap-tunnel) Error while connecting [4047: 'Failed to lookup instance'].", None),
        ("", None),
    ],
)
def test_only_a_refusal_no_retry_can_change_is_final(said: str, exit_code: int | None) -> None:
    refusal = tunnel_refusal(INSTANCE, said)
    assert (refusal and refusal.exit_code) == exit_code
    if refusal is not None:
        assert str(refusal).startswith(f"the IAP tunnel to {INSTANCE} was refused: ")
        assert "\n" not in str(refusal) and ". Fix: " in str(refusal) and ".." not in str(refusal)


# Through the stand-in gcloud (tests/support/gcloud.py) to the tests' real sshd.


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[gcloud.StandInGcloud]:
    fake = gcloud.install(tmp_path / "gcloud-bin")
    fake.expect(INSTANCE, PROJECT, ZONE)
    monkeypatch.setenv("PATH", f"{fake.bin}:{Path('/usr/bin')}:{Path('/bin')}")
    yield fake
    assert_reaped(fake)


def assert_reaped(fake: gcloud.StandInGcloud) -> None:
    """Every tunnel the stand-in ran has ended and been reaped (a zombie still has its /proc entry)."""
    deadline = time.monotonic() + 5
    while (left := [pid for pid in fake.pids() if Path(f"/proc/{pid}").exists()]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == [], f"tunnel processes left: {left}"


def iap_target(sshd: Sshd, **changes: object) -> Target:
    fields: dict[str, object] = {
        "host": INSTANCE,
        "port": 22,
        "user": sshd.user,
        "identity": sshd.client_key,
        "host_keys": (sshd.host_key,),
        "proxy_command": IAP,
    }
    fields.update(changes)
    return Target(**fields)  # type: ignore[arg-type]


@pytest.mark.integration
def test_logs_in_through_the_tunnel_with_the_pinned_key(ready_sshd: Sshd, standin: gcloud.StandInGcloud) -> None:
    standin.connect_to(ready_sshd.port)
    target = iap_target(ready_sshd)
    messages: list[str] = []
    with connect(target, load_identity(target.identity), time.monotonic() + 20, messages.append) as client:
        result = run(client, "id -un", 10)
    assert result.ok and result.stdout.strip() == ready_sshd.user, result
    assert messages == []
    assert len(standin.pids()) == 1


@pytest.mark.integration
def test_a_wrong_host_key_through_the_tunnel_is_a_mismatch(
    ready_sshd: Sshd, standin: gcloud.StandInGcloud, tmp_path: Path
) -> None:
    standin.connect_to(ready_sshd.port)
    target = iap_target(ready_sshd, host_keys=(parse_host_key(other_host_key(tmp_path)),))
    with pytest.raises(HostKeyMismatchError, match=f"HOST KEY MISMATCH for {INSTANCE}:22"):
        connect(target, load_identity(target.identity), time.monotonic() + 10, lambda _: None)
    assert len(standin.pids()) == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("exit", f"the proxy `gcloud compute start-iap-tunnel` exited with status 1: {gcloud.EXIT_ERROR}"),
        ("hang", "no SSH server answered through the IAP tunnel (gcloud)"),
        ("garbage", "no SSH server answered through the IAP tunnel (gcloud)"),
        # The real gcloud says `Error while connecting [4003: 'failed to connect to backend']`.
        ("refused", "exited with status 1: ConnectionRefusedError: [Errno 111] Connection refused"),
    ],
)
def test_a_broken_tunnel_is_one_clear_error(
    ready_sshd: Sshd, standin: gcloud.StandInGcloud, mode: str, reason: str
) -> None:
    standin.connect_to(ready_sshd.port)
    target = iap_target(ready_sshd)
    if mode == "refused":
        standin.connect_to(1)  # nothing listens: the stand-in fails as a tunnel to a VM without sshd
    else:
        standin.misbehave(mode)
    messages: list[str] = []
    started = time.monotonic()
    with pytest.raises(CourseVmError) as raised:
        connect(target, load_identity(target.identity), started + 4, messages.append)
    assert raised.value.exit_code == ExitStatus.UNREACHABLE
    message = str(raised.value)
    assert message.startswith(f"could not log in to {ready_sshd.user}@{INSTANCE}:22 within 4s: "), message
    assert reason in message
    assert "Fix: check that the VM is running, that `gcloud auth login` was done" in message
    assert "\n" not in message
    assert time.monotonic() - started < 15
    assert standin.pids(), "the tunnel never ran"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "exit_code", "said", "fix"),
    [
        (
            "denied",
            ExitStatus.UNREACHABLE,
            gcloud.NOT_AUTHORIZED,
            "Fix: `gcloud auth login` with the Google account granted IAP access to this VM (the roster's `email`, "
            "or studentEmail; a project owner has it too), or ask the instructor to grant yours",
        ),
        (
            "logged-out",
            ExitStatus.MISSING_PREREQUISITE,
            "gcloud has no Google account to use",
            "Fix: run `gcloud auth login` (with the Google account granted IAP access to this VM)",
        ),
    ],
)
def test_a_tunnel_refused_for_good_ends_at_once(
    ready_sshd: Sshd, standin: gcloud.StandInGcloud, mode: str, exit_code: int, said: str, fix: str
) -> None:
    standin.connect_to(ready_sshd.port)
    standin.misbehave(mode)
    target = iap_target(ready_sshd)
    started = time.monotonic()
    with pytest.raises(CourseVmError) as raised:
        connect(target, load_identity(target.identity), started + 60, lambda _: None)
    assert time.monotonic() - started < 10  # not at the deadline: retrying cannot help
    assert len(standin.pids()) == 1
    assert raised.value.exit_code == exit_code
    message = str(raised.value)
    assert message.startswith(f"the IAP tunnel to {INSTANCE} was refused: "), message
    assert said in message and message.endswith(fix), message
    assert "\n" not in message


@pytest.mark.integration
def test_a_vm_whose_sshd_is_not_up_yet_is_retried(ready_sshd: Sshd, standin: gcloud.StandInGcloud) -> None:
    standin.connect_to(ready_sshd.port)
    standin.misbehave("exit")  # IAP's 4003: failed to connect to backend
    target = iap_target(ready_sshd)
    messages: list[str] = []
    with pytest.raises(CourseVmError):
        connect(target, load_identity(target.identity), time.monotonic() + 3, messages.append)
    assert len(standin.pids()) > 1
    assert "4003: 'failed to connect to backend'" in messages[0]


def test_without_gcloud_the_prerequisite_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ProxyMissingError) as raised:
        ProxySocket(proxy_argv(IAP, INSTANCE, 22))
    assert raised.value.exit_code == ExitStatus.MISSING_PREREQUISITE
    assert str(raised.value) == (
        "the SSH connection goes through `gcloud` (sshAccess iap), which is not on PATH. Fix: install the Google "
        "Cloud CLI (https://cloud.google.com/sdk/docs/install), then `gcloud auth login`"
    )


@pytest.mark.integration
def test_ctrl_c_while_the_tunnel_hangs_leaves_no_tunnel(ready_sshd: Sshd, standin: gcloud.StandInGcloud) -> None:
    standin.connect_to(ready_sshd.port)
    standin.misbehave("hang")
    target = iap_target(ready_sshd)

    def interrupt(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.setitimer(signal.ITIMER_REAL, 1.5)
    try:
        with pytest.raises(KeyboardInterrupt):
            connect(target, load_identity(target.identity), time.monotonic() + 30, lambda _: None)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(standin.pids()) == 1  # reaped: the fixture checks


def test_close_reaps_a_proxy_that_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn"
    script.write_text("#!/bin/sh\ntrap '' TERM\nsleep 600 & wait; sleep 600\n")
    script.chmod(0o755)
    proxy = ProxySocket([str(script)])
    started = time.monotonic()
    proxy.close()
    assert proxy.process.returncode is not None
    assert time.monotonic() - started < 5
