"""What `course-vm up` needs besides itself (the Pulumi CLI, Google credentials, gcloud to log in), checked first."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from provisioner.errors import EXIT_MISSING_PREREQUISITE, CourseVmError
from provisioner.gcp import quotas
from provisioner.gcp.compute_api import ServiceDisabledError
from provisioner.paths import ON_WINDOWS
from provisioner.recipe.settings import Settings

PULUMI_INSTALL = (
    "install the Pulumi CLI: https://www.pulumi.com/docs/install/ "
    "(Linux, macOS: `curl -fsSL https://get.pulumi.com | sh`; Windows: `winget install pulumi`)"
)
GCLOUD_INSTALL = "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
ADC_LOGIN = "gcloud auth application-default login"
TOKEN_VARIABLES = ("GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_CREDENTIALS")
"""Credentials the GCP provider and course-vm also take, instead of an application-default login."""


class MissingPrerequisiteError(CourseVmError):
    """A tool or login course-vm needs is missing; the message says how to get it."""

    exit_code = EXIT_MISSING_PREREQUISITE


def gcloud_config_dir(environ: Mapping[str, str], home: Path, *, windows: bool) -> Path:
    """Where gcloud keeps its settings: CLOUDSDK_CONFIG, else %APPDATA%\\gcloud on Windows, else ~/.config/gcloud."""
    if environ.get("CLOUDSDK_CONFIG"):
        return Path(environ["CLOUDSDK_CONFIG"])
    if windows:
        return Path(environ.get("APPDATA") or home / "AppData" / "Roaming") / "gcloud"
    return home / ".config" / "gcloud"


def _credentials_problem(environ: Mapping[str, str], home: Path, *, windows: bool) -> str | None:
    """Why no Google credentials would be found, or None when some are there."""
    named = environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if named:
        if Path(named).is_file():
            return None
        return (
            f"GOOGLE_APPLICATION_CREDENTIALS names {named}, which does not exist. "
            f"Fix: point it at your key file, or unset it and run `{ADC_LOGIN}`"
        )
    if any(environ.get(name) for name in TOKEN_VARIABLES):
        return None
    well_known = gcloud_config_dir(environ, home, windows=windows) / "application_default_credentials.json"
    if well_known.is_file():
        return None
    return f"no Google application-default credentials ({well_known} does not exist). Fix: `{ADC_LOGIN}`"


def missing(
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
    *,
    windows: bool = ON_WINDOWS,
    which: Callable[[str], str | None] = shutil.which,
) -> list[str]:
    """Every prerequisite of `up` this machine lacks, each as `what. Fix: how`; empty when all are there.

    The Compute API being enabled is not checked here (that takes a call to Google with a known
    project): `compute_engine_ready` does, after the preview.
    """
    problems: list[str] = []
    if which("pulumi") is None:
        problems.append(f"the Pulumi CLI is not on PATH (course-vm drives it). Fix: {PULUMI_INSTALL}")
    credentials = _credentials_problem(environ, home or Path.home(), windows=windows)
    # gcloud is only the way to log in: with credentials already there, course-vm never runs it.
    if credentials and which("gcloud") is None:
        problems.append(f"the Google Cloud CLI (gcloud) is not on PATH (it logs you in). Fix: {GCLOUD_INSTALL}")
    if credentials:
        problems.append(credentials)
    return problems


def check() -> None:
    """Raise MissingPrerequisiteError naming every prerequisite of `up` that is missing, before anything is created."""
    problems = missing()
    if problems:
        count = "one thing" if len(problems) == 1 else f"{len(problems)} things"
        lines = [f"course-vm up needs {count} this machine lacks; nothing was created:"]
        raise MissingPrerequisiteError("\n".join(lines + [f"  - {problem}" for problem in problems]))


def compute_engine_ready(settings: Settings, created_vms: int, *, external_addresses_per_vm: int = 1) -> None:
    """Before `up` asks or changes anything: the Compute API is enabled in the settings' project (one
    read of it, always) and, when the change creates CREATED_VMS new VMs, the quotas have room for them.

    Raises MissingPrerequisiteError when the API is not enabled, quotas.QuotaError (exit 6, with
    the table of what is short) when a quota would be exceeded, UnreachableError when the API
    does not answer, CourseVmError when the account may not read the project.
    """
    try:
        quotas.check_before_up(settings, created_vms, external_addresses_per_vm=external_addresses_per_vm)
    except ServiceDisabledError as error:
        raise MissingPrerequisiteError(
            f"course-vm up needs the Compute Engine API, which is not enabled in project {error.project}; "
            f"nothing was created. Fix: `gcloud services enable compute.googleapis.com --project {error.project}`, "
            "wait a minute, then run `course-vm up` again"
        ) from None
