"""`up`'s prerequisites: every missing one named together with its fix, before anything is created."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.cli import prerequisites
from provisioner.cli.main import main
from provisioner.driver.workspace import PULUMI_INSTALL
from provisioner.errors import ExitStatus, MissingPrerequisiteError
from provisioner.paths import project_dir
from provisioner.recipe.settings import parse_settings
from tests.support.cli import in_this_process, run_cli
from tests.support.fake_compute_api import FakeComputeApi
from tests.support.pulumi_state import STACK_CONFIG
from tests.support.stand_in_pulumi import stand_in_pulumi


def tools(tmp_path: Path, *names: str) -> Path:
    """A PATH directory holding only stand-ins for NAMES."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\nexit 0\n")
        (directory / name).chmod(0o755)
    return directory


def test_with_nothing_installed_up_names_everything_and_creates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    environment = {"PATH": str(tools(tmp_path)), "HOME": str(home), "XDG_STATE_HOME": str(home / "state")}
    flags = ["--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "203.0.113.7/32"]
    result = run_cli("up", *flags, env=environment)
    assert result.returncode == ExitStatus.MISSING_PREREQUISITE
    assert result.stderr.splitlines() == [
        "course-vm up needs 3 things this machine lacks; nothing was created:",
        f"  - the Pulumi CLI is not on PATH (course-vm drives it). Fix: {PULUMI_INSTALL}",
        f"  - the Google Cloud CLI (gcloud) is not on PATH (it logs you in). Fix: {prerequisites.GCLOUD_INSTALL}",
        f"  - no Google application-default credentials ({home}/.config/gcloud/application_default_credentials.json "
        "does not exist). Fix: `gcloud auth application-default login`",
    ]
    assert not (home / "state").exists()


def test_all_there_is_nothing_missing(tmp_path: Path) -> None:
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text("{}")
    path = tools(tmp_path, "pulumi", "gcloud")
    found = prerequisites.missing({}, tmp_path, windows=False, which=lambda name: str(path / name))
    assert found == []


def test_windows_keeps_gclouds_login_under_appdata(tmp_path: Path) -> None:
    appdata = tmp_path / "AppData" / "Roaming"
    environ = {"APPDATA": str(appdata)}
    assert prerequisites.gcloud_config_dir(environ, tmp_path, windows=True) == appdata / "gcloud"
    found = prerequisites.missing(environ, tmp_path, windows=True, which=lambda name: name)
    assert found == [
        f"no Google application-default credentials ({appdata / 'gcloud' / 'application_default_credentials.json'} "
        "does not exist). Fix: `gcloud auth application-default login`"
    ]
    (appdata / "gcloud").mkdir(parents=True)
    (appdata / "gcloud" / "application_default_credentials.json").write_text("{}")
    assert prerequisites.missing(environ, tmp_path, windows=True, which=lambda name: name) == []


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"GOOGLE_APPLICATION_CREDENTIALS": "/nowhere/key.json"}, "GOOGLE_APPLICATION_CREDENTIALS names /nowhere"),
        ({"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.token"}, None),
        ({"GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.token\r"}, "GOOGLE_OAUTH_ACCESS_TOKEN holds a character no access token"),
        ({"CLOUDSDK_AUTH_ACCESS_TOKEN": "ya29.to ken"}, "CLOUDSDK_AUTH_ACCESS_TOKEN holds a character no access token"),
        ({"CLOUDSDK_CONFIG": "/elsewhere/gcloud"}, "(/elsewhere/gcloud/application_default_credentials.json does not"),
    ],
)
def test_other_ways_to_give_credentials(tmp_path: Path, environ: dict[str, str], problem: str | None) -> None:
    found = prerequisites.missing(environ, tmp_path, windows=False, which=lambda name: name)
    if problem is None:
        assert found == []
    else:
        assert len(found) == 1 and problem in found[0]


def test_a_key_file_named_by_google_application_credentials_is_enough(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    found = prerequisites.missing({"GOOGLE_APPLICATION_CREDENTIALS": str(key)}, tmp_path, windows=False, which=str)
    assert found == []


def test_with_credentials_already_given_gcloud_is_not_needed(tmp_path: Path) -> None:
    # gcloud only logs you in; a key file (or a token) is the login itself, and course-vm never runs gcloud.
    key = tmp_path / "key.json"
    key.write_text("{}")
    path = tools(tmp_path, "pulumi")
    found = prerequisites.missing(
        {"GOOGLE_APPLICATION_CREDENTIALS": str(key)},
        tmp_path,
        windows=False,
        which=lambda name: str(path / name) if (path / name).exists() else None,
    )
    assert found == []
    without = prerequisites.missing({}, tmp_path, windows=False, which=lambda name: None)
    assert any("gcloud) is not on PATH" in problem for problem in without)


# sshAccess iap: `up`'s verification opens the IAP tunnel with gcloud, as gcloud's logged-in account.
IAP_CONFIG = {"gcp:project": "course-project-1", "gcp:zone": "europe-west1-b", "course-vm:sshAccess": "iap"}


def logged_in(config_dir: Path, account: str = "teacher@example.edu") -> None:
    """What `gcloud auth login` leaves: the active configuration names the account."""
    (config_dir / "configurations").mkdir(parents=True, exist_ok=True)
    (config_dir / "active_config").write_text("default")
    (config_dir / "configurations" / "config_default").write_text(f"[core]\naccount = {account}\n")


@pytest.mark.parametrize(
    ("config", "iap"),
    [
        (IAP_CONFIG, True),
        ({**STACK_CONFIG, "course-vm:sshAccess": "firewall"}, False),
        (STACK_CONFIG, False),
        (None, False),  # a stack that does not exist yet
    ],
)
def test_up_knows_iap_from_the_stacks_settings(tmp_path: Path, config: dict[str, str] | None, iap: bool) -> None:
    # gcloud is there but logged in to no account: only an iap stack needs that login (for its IAP tunnel).
    stacks: dict[str, dict[str, object]] = {} if config is None else {"dev": {}}
    pulumi = stand_in_pulumi(tmp_path, stacks, config={"dev": config} if config else {},
                             fail={"preview": {"stderr": "error: the preview is not this test's\n"}})  # fmt: skip
    env = {k: v for k, v in pulumi.environment.items() if k not in ("CLOUDSDK_CORE_ACCOUNT", "CLOUDSDK_CONFIG")}
    # A stack that does not exist yet gets its settings from the flags (they are checked before anything else).
    flags = [] if config else ["--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "203.0.113.7/32"]
    result = run_cli("up", "--yes", *flags, env=env)
    lacks = "gcloud has no logged-in account (sshAccess iap: `up` checks the VMs through gcloud's IAP tunnel"
    assert (lacks in result.stderr) is iap, result.stderr
    assert (result.returncode == ExitStatus.MISSING_PREREQUISITE) is iap
    assert ("course-vm: previewing the changes to stack dev" in result.stderr) is not iap, "past the prerequisites"
    if iap:
        assert pulumi.verbs() == ["stack export", "config"], "the stack is read, and nothing is created or stored"


def test_under_iap_gcloud_is_needed_even_with_credentials(tmp_path: Path) -> None:
    key = tmp_path / "key.json"
    key.write_text("{}")
    environ = {"GOOGLE_APPLICATION_CREDENTIALS": str(key)}
    path = tools(tmp_path, "pulumi")
    which = lambda name: str(path / name) if (path / name).exists() else None  # noqa: E731
    assert prerequisites.missing(environ, tmp_path, windows=False, which=which) == []
    assert prerequisites.missing(environ, tmp_path, windows=False, which=which, iap=True) == [
        "the Google Cloud CLI (gcloud) is not on PATH (sshAccess iap: `up` checks the VMs through its IAP tunnel). "
        f"Fix: {prerequisites.GCLOUD_INSTALL}"
    ]


def test_under_iap_gcloud_must_be_logged_in(tmp_path: Path) -> None:
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True)
    adc.write_text("{}")
    path = tools(tmp_path, "pulumi", "gcloud")
    which = lambda name: str(path / name)  # noqa: E731
    assert prerequisites.missing({}, tmp_path, windows=False, which=which, iap=True) == [
        "gcloud has no logged-in account (sshAccess iap: `up` checks the VMs through gcloud's IAP tunnel, "
        "as that account; the application-default login is another one). Fix: `gcloud auth login`"
    ]
    logged_in(adc.parent)
    assert prerequisites.missing({}, tmp_path, windows=False, which=which, iap=True) == []
    assert prerequisites.missing({"CLOUDSDK_CORE_ACCOUNT": "ci@p.iam.gserviceaccount.com"}, tmp_path / "x",
                                 windows=False, which=which, iap=True) == [
        f"no Google application-default credentials ({tmp_path / 'x' / '.config' / 'gcloud'}"
        "/application_default_credentials.json does not exist). Fix: `gcloud auth application-default login`"
    ]  # fmt: skip


def test_up_of_an_iap_stack_without_gcloud_says_so_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Application-default credentials are there (the stand-in's home has them); gcloud is not.
    pulumi = stand_in_pulumi(tmp_path, {"class": {}}, config={"class": IAP_CONFIG})
    in_this_process(monkeypatch, pulumi.environment)
    (tmp_path / "bin" / "gcloud").unlink()  # the stand-in's; PATH is its folder alone
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    for name in ("CLOUDSDK_CONFIG", "GOOGLE_APPLICATION_CREDENTIALS", *prerequisites.TOKEN_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    assert main(["up", "--stack", "class"]) == ExitStatus.MISSING_PREREQUISITE
    assert capsys.readouterr().err.splitlines() == [
        "course-vm up needs one thing this machine lacks; nothing was created:",
        "  - the Google Cloud CLI (gcloud) is not on PATH (sshAccess iap: `up` checks the VMs through its IAP "
        f"tunnel). Fix: {prerequisites.GCLOUD_INSTALL}",
    ]
    # To learn that the stack uses iap, up reads it (on its own backend); it stores, creates and previews nothing.
    assert pulumi.verbs() == ["stack export", "config"]


IAP_STACK_FILE = "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n  course-vm:sshAccess: iap\n"
GCLOUD_LOGIN = (
    "gcloud has no logged-in account (sshAccess iap: `up` checks the VMs through gcloud's IAP tunnel, as that "
    "account; the application-default login is another one). Fix: `gcloud auth login`"
)


def test_a_stack_the_backend_has_not_yet_is_iap_when_its_stack_file_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A stack file copied from a colleague, or kept by `pulumi stack rm --preserve-config`: `stack init` keeps it.
    pulumi = stand_in_pulumi(tmp_path, {}, config={})
    project_dir().mkdir(parents=True)
    (project_dir() / "Pulumi.dev.yaml").write_text(IAP_STACK_FILE)
    in_this_process(monkeypatch, pulumi.environment)
    for name in ("CLOUDSDK_CORE_ACCOUNT", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(["up"]) == ExitStatus.MISSING_PREREQUISITE
    assert GCLOUD_LOGIN in capsys.readouterr().err
    assert pulumi.verbs() == ["stack export"], "nothing is created before what up needs is there"


def test_without_pulumi_the_stack_file_still_says_whether_gclouds_login_is_needed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    project_dir().mkdir(parents=True)
    (project_dir() / "Pulumi.dev.yaml").write_text(IAP_STACK_FILE)
    path = tools(tmp_path, "gcloud")
    monkeypatch.setenv("PATH", str(path))
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("CLOUDSDK_CORE_ACCOUNT", "CLOUDSDK_CONFIG", "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(name, raising=False)
    assert main(["up"]) == ExitStatus.MISSING_PREREQUISITE
    err = capsys.readouterr().err
    assert "the Pulumi CLI is not on PATH" in err and GCLOUD_LOGIN in err, err


def test_a_disabled_compute_api_names_the_stack_to_run_up_for_again(
    api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in api.gcloud_environment().items():
        monkeypatch.setenv(name, value)
    api.api_enabled = False
    settings = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"]}, "course-project-1", "europe-west1-b")
    with pytest.raises(MissingPrerequisiteError, match=r"then run `course-vm up --stack fall` again$"):
        prerequisites.compute_engine_ready("fall", settings, 0)
