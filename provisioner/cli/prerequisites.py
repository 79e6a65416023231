"""What `course-vm up` needs besides itself (the Pulumi CLI, Google credentials, gcloud), checked first."""

from __future__ import annotations

import configparser
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from provisioner.driver.workspace import PULUMI_INSTALL
from provisioner.errors import ACCESS_TOKEN, MissingPrerequisiteError
from provisioner.gcp import quotas
from provisioner.gcp.compute_api import ServiceDisabledError, token_problem
from provisioner.paths import ON_WINDOWS
from provisioner.recipe.settings import Settings
from provisioner.stack import DEFAULT_STACK, command

GCLOUD_INSTALL = "install the Google Cloud CLI: https://cloud.google.com/sdk/docs/install"
ADC_LOGIN = "gcloud auth application-default login"
TOKEN_VARIABLES = ("GOOGLE_OAUTH_ACCESS_TOKEN", "CLOUDSDK_AUTH_ACCESS_TOKEN", "GOOGLE_CREDENTIALS")
"""Credentials the GCP provider and course-vm also take, instead of an application-default login."""


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
    for name in TOKEN_VARIABLES[:2]:  # the access tokens; GOOGLE_CREDENTIALS is a key file's JSON
        if environ.get(name) and not ACCESS_TOKEN.fullmatch(environ[name]):
            return token_problem(name)
    if any(environ.get(name) for name in TOKEN_VARIABLES):
        return None
    well_known = gcloud_config_dir(environ, home, windows=windows) / "application_default_credentials.json"
    if well_known.is_file():
        return None
    return f"no Google application-default credentials ({well_known} does not exist). Fix: `{ADC_LOGIN}`"


def _gcloud_account(environ: Mapping[str, str], home: Path, *, windows: bool) -> bool:
    """Whether gcloud has an account to run as: CLOUDSDK_CORE_ACCOUNT, or the one `gcloud auth login`
    set in the active configuration (what `gcloud config get-value account` reads, without running it)."""
    if environ.get("CLOUDSDK_CORE_ACCOUNT") or environ.get("CLOUDSDK_AUTH_ACCESS_TOKEN_FILE"):
        return True
    config_dir = gcloud_config_dir(environ, home, windows=windows)
    try:
        active = environ.get("CLOUDSDK_ACTIVE_CONFIG_NAME") or (config_dir / "active_config").read_text().strip()
        parser = configparser.ConfigParser()
        parser.read_string((config_dir / "configurations" / f"config_{active or 'default'}").read_text())
    except (OSError, configparser.Error):
        return False
    return bool(parser.get("core", "account", fallback="").strip())


def missing(
    environ: Mapping[str, str] = os.environ,
    home: Path | None = None,
    *,
    windows: bool = ON_WINDOWS,
    which: Callable[[str], str | None] = shutil.which,
    iap: bool = False,
) -> list[str]:
    """Every prerequisite of `up` this machine lacks, each as `what. Fix: how`; empty when all are there.

    With IAP (the stack's sshAccess), `up`'s verification reaches the VMs through gcloud's IAP
    tunnel, so gcloud and its own login (`gcloud auth login`, not the application-default one)
    are needed whatever the credentials. The Compute API being enabled is not checked here (that
    takes a call to Google with a known project): `compute_engine_ready` does, after the preview.
    """
    problems: list[str] = []
    home = home or Path.home()
    if which("pulumi") is None:
        problems.append(f"the Pulumi CLI is not on PATH (course-vm drives it). Fix: {PULUMI_INSTALL}")
    credentials = _credentials_problem(environ, home, windows=windows)
    # Without iap gcloud is only the way to log in: with credentials already there, course-vm never runs it.
    if which("gcloud") is None:
        if iap:
            problems.append(
                "the Google Cloud CLI (gcloud) is not on PATH (sshAccess iap: `up` checks the VMs through its IAP "
                f"tunnel). Fix: {GCLOUD_INSTALL}"
            )
        elif credentials:
            problems.append(f"the Google Cloud CLI (gcloud) is not on PATH (it logs you in). Fix: {GCLOUD_INSTALL}")
    elif iap and not _gcloud_account(environ, home, windows=windows):
        problems.append(
            "gcloud has no logged-in account (sshAccess iap: `up` checks the VMs through gcloud's IAP tunnel, "
            "as that account; the application-default login is another one). Fix: `gcloud auth login`"
        )
    if credentials:
        problems.append(credentials)
    return problems


def check(stack: str = DEFAULT_STACK, *, iap: bool = False, verb: str = "up") -> None:
    """Raise MissingPrerequisiteError naming every prerequisite of `up` (or VERB: `image bake`, which needs the
    same) for STACK that is missing (IAP: its settings say sshAccess iap, so it needs gcloud's IAP tunnel),
    before anything is created."""
    problems = missing(iap=iap)
    if problems:
        count = "one thing" if len(problems) == 1 else f"{len(problems)} things"
        untouched = "nothing was deleted" if verb.endswith("delete") else "nothing was created"
        lines = [f"course-vm {verb} needs {count} this machine lacks; {untouched}:"]
        raise MissingPrerequisiteError("\n".join(lines + [f"  - {problem}" for problem in problems]))


def compute_engine_ready(
    stack: str, settings: Settings, created_vms: int, existing: Sequence[quotas.Existing] = ()
) -> None:
    """Before `up` of STACK asks or changes anything: the Compute API is enabled in the settings' project (one
    read of it, always) and, when the change creates CREATED_VMS new VMs, the quotas have room for them.

    Raises MissingPrerequisiteError when the API is not enabled, quotas.QuotaError (exit 6, with
    the table of what is short) when a quota would be exceeded, UnreachableError when the API
    does not answer, CourseVmError when the account may not read the project.
    """
    try:
        quotas.check_before_up(settings, created_vms, stack=stack, existing=existing)
    except ServiceDisabledError as error:
        raise MissingPrerequisiteError(
            f"course-vm up needs the Compute Engine API, which is not enabled in project {error.project}; "
            f"nothing was created. Fix: `gcloud services enable compute.googleapis.com --project {error.project}`, "
            f"wait a minute, then run `{command('up', stack)}` again"
        ) from None
