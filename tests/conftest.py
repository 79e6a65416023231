"""Shared fixtures: tool lookup that fails in CI, the real cloud-init schema validator, test keys."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.fake_compute_api import FakeComputeApi
    from tests.support.iap_relay import RealGcloudTunnels
    from tests.support.sshd import Sshd

ROOT = Path(__file__).resolve().parent.parent
E2E_TIMINGS = pytest.StashKey[list[tuple[str, float]]]()
"""(label, seconds) rows the local VM end-to-end test records, printed at the end of the run."""
E2E_FACTS = pytest.StashKey[list[tuple[str, str]]]()
"""(label, value) rows: what the local VM's own software says it is, printed at the end of the run."""


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    timings = config.stash.get(E2E_TIMINGS, [])
    if timings:
        terminalreporter.section("local VM end-to-end timing")
        for label, seconds in timings:
            terminalreporter.write_line(f"{label:<52} {seconds:7.1f}s")
    facts = config.stash.get(E2E_FACTS, [])
    if facts:
        terminalreporter.section("local VM as GCE")
        for label, value in facts:
            terminalreporter.write_line(f"{label:<28} {value}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a test user of the sshd fixture, or a process or group of one, is left behind."""
    sshd = sys.modules.get("tests.support.sshd")
    found = sshd.leftovers() if sshd is not None else []
    if found:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        lines = ["the sshd fixture left these behind (see tests/support/sshd.py remove_sshd):", *found]
        for line in lines:
            if reporter is not None:
                reporter.write_line(line, red=True)
            else:
                print(line, file=sys.stderr)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def project_folder(tmp_path: Path) -> Iterator[Path]:
    """Every test's own XDG_CONFIG_HOME, so its project folder (provisioner.paths.project_dir) is its own, never
    the user's `~/.config/course-vm`; the project folder.

    Not through `monkeypatch`: an autouse fixture that took it would set it up before every other fixture, so
    that a test's own PATH would still be set while those fixtures are torn down (sshd's needs `userdel`)."""
    before = os.environ.get("XDG_CONFIG_HOME")
    os.environ["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    yield tmp_path / "xdg-config" / "course-vm"
    if before is None:
        os.environ.pop("XDG_CONFIG_HOME", None)
    else:
        os.environ["XDG_CONFIG_HOME"] = before


def require_tool(name: str) -> str:
    """The path of tool NAME. Missing, it skips the test on a developer machine and fails it in CI."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (.ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def validate_cloud_config(text: str, tmp_path: Path) -> None:
    """Validate TEXT with the real `cloud-init schema` (Debian's cloud-init package)."""
    tool = require_tool("cloud-init")
    document = tmp_path / "user-data.yaml"
    document.write_text(text)
    result = subprocess.run(
        [tool, "schema", "--config-file", str(document)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, f"cloud-init schema rejected the document:\n{result.stdout}{result.stderr}"
    assert "Valid cloud-config" in result.stdout


@pytest.fixture
def public_key() -> str:
    return "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    """A real sshd on loopback, not yet started, its key not yet authorized (see tests/support/sshd.py)."""
    from tests.support.sshd import make_sshd, remove_sshd

    server = make_sshd()
    try:
        yield server
    finally:
        remove_sshd(server)


@pytest.fixture
def ready_sshd(sshd: Sshd) -> Sshd:
    """The same sshd, started, with the client key authorized."""
    sshd.authorize()
    sshd.start()
    wait_for_port(sshd.port)
    return sshd


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def api() -> Iterator[FakeComputeApi]:
    """A local fake of the Compute API's host-key endpoints (see tests/support/fake_compute_api.py)."""
    from tests.support.fake_compute_api import fake_compute_api

    with fake_compute_api() as fake:
        yield fake


@pytest.fixture
def iap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RealGcloudTunnels]:
    """Google's real gcloud first on PATH (and its settings in this test's folder), its IAP tunnels going to
    a relay stand-in on loopback whose backend a test sets (tests/support/iap_relay.py). At the end, every
    gcloud run must have been reaped, and gcloud must have spoken the relay's protocol as IAP takes it."""
    from tests.support.iap_relay import real_gcloud_tunnels
    from tests.support.real_gcloud import without_gcloud_settings

    with real_gcloud_tunnels(tmp_path / "iap") as tunnels:
        for name in set(os.environ) - set(without_gcloud_settings(os.environ)):
            monkeypatch.delenv(name)
        for name, value in tunnels.environment(os.environ["PATH"]).items():
            monkeypatch.setenv(name, value)
        yield tunnels
        tunnels.check()
