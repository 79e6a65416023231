"""The IAP ProxyCommand: what is run, and paramiko logging in through it to a real sshd."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
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
from tests.support.fake_compute_api import FakeComputeApi
from tests.support.iap_relay import RealGcloudTunnels
from tests.support.real_gcloud import TOKEN
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


def unused_port() -> int:
    """A loopback port nothing listens on (it was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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


# What the real gcloud 528 wrote on stderr for each (test_the_real_gclouds_words_for_each_refusal holds them to it).
DENIED = "ERROR: [0] Error during local connection to [stdin]: Error while connecting [4033: 'not authorized']."
BACKEND = (
    "ERROR: [0] Error during local connection to [stdin]: Error while connecting [4003: 'failed to connect to "
    "backend']. (Failed to connect to port 22)"
)
NO_ACCOUNT = "ERROR: (gcloud.compute.start-iap-tunnel) You do not currently have an active account selected."
TRACEBACK = (
    'Traceback (most recent call last):\n  File "iap_tunnel.py", line 775, in RunReceiveLocalData\n'
    "googlecloudsdk.api_lib.compute.iap_tunnel_websocket.ConnectionCreationError: Error while connecting [{}]."
)


@pytest.mark.parametrize(
    ("said", "exit_code"),
    [
        (DENIED + "\n" + TRACEBACK.format("4033: 'not authorized'"), ExitStatus.UNREACHABLE),
        (
            "ERROR: (gcloud.compute.start-iap-tunnel) Could not fetch resource:\n"
            " - Required 'compute.instances.get' permission for 'projects/p/zones/z/instances/vm-1'",
            ExitStatus.UNREACHABLE,
        ),
        (NO_ACCOUNT + "\nPlease run:\n\n  $ gcloud auth login\n", ExitStatus.MISSING_PREREQUISITE),
        (
            "ERROR: (gcloud.compute.start-iap-tunnel) Reauthentication failed. cannot prompt",
            ExitStatus.MISSING_PREREQUISITE,
        ),
        (BACKEND + "\n" + TRACEBACK.format("4003: 'failed to connect to backend'"), None),  # the VM's sshd is not up
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


# Through Google's real gcloud and the IAP relay stand-in (the `iap` fixture, tests/support/iap_relay.py) to the
# tests' real sshd.


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
@pytest.mark.parametrize(
    ("mode", "token", "status", "said"),
    [("denied", True, 0, DENIED), ("backend", True, 0, BACKEND), ("ok", False, 1, NO_ACCOUNT)],
)
def test_the_real_gclouds_words_for_each_refusal(
    iap: RealGcloudTunnels, monkeypatch: pytest.MonkeyPatch, mode: str, token: bool, status: int, said: str
) -> None:
    """What tunnel_refusal reads is what Google's gcloud writes: 4033 and 4003 exit 0 (gcloud logs the
    error of its stdin tunnel and ends), no account exits 1."""
    iap.relay.mode = mode
    if not token:
        monkeypatch.delenv("CLOUDSDK_AUTH_ACCESS_TOKEN")
    done = subprocess.run(proxy_argv(IAP, INSTANCE, 22), input=b"", capture_output=True, timeout=60, check=False)
    lines = done.stderr.decode().splitlines()
    assert (done.returncode, said in lines) == (status, True), done.stderr.decode()
    assert len(iap.relay.connects) == (1 if token else 0)
    refusal = tunnel_refusal(INSTANCE, done.stderr.decode())
    assert (refusal and refusal.exit_code) == {"denied": ExitStatus.UNREACHABLE, "backend": None}.get(
        mode, ExitStatus.MISSING_PREREQUISITE
    )


@pytest.mark.integration
def test_logs_in_through_the_tunnel_with_the_pinned_key(
    ready_sshd: Sshd, iap: RealGcloudTunnels, api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through gcloud as students run it: the relay is asked for the instance's nic0, port 22, with the
    account's token; megabytes flow both ways without stalling (gcloud ACKs past 32 KiB unacknowledged)."""
    iap.relay.backend_port = ready_sshd.port
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", api.url + "/")
    target = iap_target(ready_sshd)
    messages: list[str] = []
    with connect(target, load_identity(target.identity), time.monotonic() + 20, messages.append) as client:
        result = run(client, "id -un", 10)
        _, down, _ = client.exec_command("head -c 3000000 /dev/zero", timeout=60)
        received = len(down.read())
        up, counted, _ = client.exec_command("wc -c", timeout=60)
        up.write(bytes(3_000_000))
        up.channel.shutdown_write()
        uploaded = counted.read().decode().strip()
    assert result.ok and result.stdout.strip() == ready_sshd.user, result
    assert (received, uploaded) == (3_000_000, "3000000")
    assert messages == []
    assert len(iap.gcloud.pids()) == 1
    [connected] = iap.relay.connects
    assert connected.path == "/v4/connect"
    assert connected.query == {
        "project": PROJECT, "zone": ZONE, "instance": INSTANCE, "interface": "nic0", "port": "22",
        "newWebsocket": "True",
    }  # fmt: skip
    assert connected.headers["authorization"] == f"Bearer {TOKEN}"
    assert connected.headers["sec-websocket-protocol"] == "relay.tunnel.cloudproxy.app"
    assert iap.relay.acked_by_gcloud > 2 * 16384
    # gcloud 528's GA start-iap-tunnel given --zone reads no instance before connecting (nic0 is assumed), and
    # under --listen-on-stdin not after a failed connect either: the Compute API is not called at all.
    assert api.requests == []


@pytest.mark.integration
def test_a_wrong_host_key_through_the_tunnel_is_a_mismatch(
    ready_sshd: Sshd, iap: RealGcloudTunnels, tmp_path: Path
) -> None:
    iap.relay.backend_port = ready_sshd.port
    target = iap_target(ready_sshd, host_keys=(parse_host_key(other_host_key(tmp_path)),))
    with pytest.raises(HostKeyMismatchError, match=f"HOST KEY MISMATCH for {INSTANCE}:22"):
        connect(target, load_identity(target.identity), time.monotonic() + 10, lambda _: None)
    assert len(iap.gcloud.pids()) == 1


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        # Nothing listens on the backend's port: the relay refuses with 4003, as IAP does.
        ("ok", f"the proxy `gcloud compute start-iap-tunnel` ended the connection: {BACKEND}"),
        ("hang", "no SSH server answered through the IAP tunnel (gcloud)"),
        ("garbage", "no SSH server answered through the IAP tunnel (gcloud)"),
    ],
)
def test_a_broken_tunnel_is_one_clear_error(ready_sshd: Sshd, iap: RealGcloudTunnels, mode: str, reason: str) -> None:
    iap.relay.backend_port = unused_port()
    iap.relay.mode = mode
    target = iap_target(ready_sshd)
    messages: list[str] = []
    started = time.monotonic()
    with pytest.raises(CourseVmError) as raised:
        connect(target, load_identity(target.identity), started + 4, messages.append)
    assert raised.value.exit_code == ExitStatus.UNREACHABLE
    message = str(raised.value)
    assert message.startswith(f"could not log in to {ready_sshd.user}@{INSTANCE}:22 within 4s: "), message
    # The last attempt, cut short by the deadline, may end before gcloud (0.5 s to start) says anything: the
    # error quotes what gcloud said last.
    assert reason in message, (message, messages)
    assert "Fix: check that the VM is running, that `gcloud auth login` was done" in message
    assert "\n" not in message
    assert time.monotonic() - started < 15
    assert iap.gcloud.pids(), "the tunnel never ran"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mode", "exit_code", "said", "fix"),
    [
        (
            "denied",
            ExitStatus.UNREACHABLE,
            "was refused: " + DENIED.rstrip("."),
            "Fix: `gcloud auth login` with the Google account granted IAP access to this VM (the roster's `email`, "
            "or studentEmail; a project owner has it too), or ask the instructor to grant yours",
        ),
        (
            "logged-out",
            ExitStatus.MISSING_PREREQUISITE,
            f"gcloud has no Google account to use ({NO_ACCOUNT.rstrip('.')})",
            "Fix: run `gcloud auth login` (with the Google account granted IAP access to this VM)",
        ),
    ],
)
def test_a_tunnel_refused_for_good_ends_at_once(
    ready_sshd: Sshd,
    iap: RealGcloudTunnels,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    exit_code: int,
    said: str,
    fix: str,
) -> None:
    iap.relay.backend_port = ready_sshd.port
    if mode == "logged-out":
        monkeypatch.delenv("CLOUDSDK_AUTH_ACCESS_TOKEN")
    else:
        iap.relay.mode = mode
    target = iap_target(ready_sshd)
    started = time.monotonic()
    with pytest.raises(CourseVmError) as raised:
        connect(target, load_identity(target.identity), started + 60, lambda _: None)
    assert time.monotonic() - started < 10  # not at the deadline: retrying cannot help
    assert len(iap.gcloud.pids()) == 1
    assert raised.value.exit_code == exit_code
    message = str(raised.value)
    assert message.startswith(f"the IAP tunnel to {INSTANCE} was refused: "), message
    assert said in message and message.endswith(fix), message
    assert "\n" not in message


@pytest.mark.integration
def test_a_vm_whose_sshd_is_not_up_yet_is_retried_until_it_is(ready_sshd: Sshd, iap: RealGcloudTunnels) -> None:
    iap.relay.backend_port = ready_sshd.port
    iap.relay.next_modes = ["backend", "backend"]  # IAP's 4003 twice, then the tunnel opens
    target = iap_target(ready_sshd)
    messages: list[str] = []
    with connect(target, load_identity(target.identity), time.monotonic() + 30, messages.append) as client:
        assert run(client, "true", 10).ok
    assert len(iap.gcloud.pids()) == 3
    [said] = messages  # the second 4003 says the same: not said again
    assert said.startswith(
        f"waiting for {INSTANCE}:22: the proxy `gcloud compute start-iap-tunnel` ended the connection: "
    )
    assert BACKEND in said


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
def test_ctrl_c_while_the_tunnel_hangs_leaves_no_tunnel(ready_sshd: Sshd, iap: RealGcloudTunnels) -> None:
    iap.relay.backend_port = ready_sshd.port
    iap.relay.mode = "hang"
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
    assert len(iap.gcloud.pids()) == 1  # reaped: the fixture checks


def test_close_reaps_a_proxy_that_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn"
    script.write_text("#!/bin/sh\ntrap '' TERM\nsleep 600 & wait; sleep 600\n")
    script.chmod(0o755)
    proxy = ProxySocket([str(script)])
    started = time.monotonic()
    proxy.close()
    assert proxy.process.returncode is not None
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("status", "ended"),
    [(0, "ended the connection: ERROR: tunnel refused"), (2, "exited with status 2: ERROR: tunnel refused")],
)
def test_a_proxy_that_ends_says_so_with_its_error_line(tmp_path: Path, status: int, ended: str) -> None:
    """gcloud exits 0 after IAP refuses a tunnel: that is not put as `exited with status 0`, which reads as
    success. (A stand-in process: the point is the wording; the real gcloud's exits are tested above.)"""
    script = tmp_path / "proxy"
    script.write_text(f"#!/bin/sh\necho 'ERROR: tunnel refused' >&2\necho '  at line 3' >&2\nexit {status}\n")
    script.chmod(0o755)
    proxy = ProxySocket([str(script)])
    try:
        proxy.settimeout(10)
        assert proxy.recv(1) == b""
        assert proxy.why() == f"the proxy `{script}` {ended}"
    finally:
        proxy.close()
