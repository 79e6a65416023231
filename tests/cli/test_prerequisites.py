"""`up`'s prerequisites: every missing one named together with its fix, before anything is created."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from provisioner.cli import prerequisites
from provisioner.errors import EXIT_MISSING_PREREQUISITE
from tests.conftest import ROOT


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
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "up", "--project", "course-project-1"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_MISSING_PREREQUISITE
    assert result.stderr.splitlines() == [
        "course-vm: course-vm up needs 3 things this machine lacks; nothing was created:",
        f"  - the Pulumi CLI is not on PATH (course-vm drives it). Fix: {prerequisites.PULUMI_INSTALL}",
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
