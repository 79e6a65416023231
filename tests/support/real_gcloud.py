"""The real Google Cloud CLI (`gcloud`, preinstalled on these machines and CI's), pointed at the tests' stand-ins.

gcloud is the client students run: as the IAP ProxyCommand, and for `gcloud auth login`. The tests
run Google's own program against the fake Compute API, the twin's Compute API view and the IAP relay
stand-in, so that what those stand-ins answer is held to what Google's client accepts. It cannot be
installed here by the tests (no internet): a machine without it fails loudly, it is never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.support.fake_compute_api import TOKEN as TOKEN  # what gcloud sends: the only token the fake accepts

INSTALL = "install the Google Cloud CLI (Debian package google-cloud-cli; `gcloud version` must run)"


def gcloud_path() -> str:
    """The real gcloud on PATH; the test fails (never skips) when the machine lacks it."""
    found = shutil.which("gcloud")
    if found is None:
        pytest.fail(f"gcloud is not on PATH: the tests hold the stand-ins to Google's real client. Fix: {INSTALL}")
    return found


def environment(config: Path, compute_api: str | None = None, *, token: str | None = TOKEN) -> dict[str, str]:
    """gcloud's variables for a run with its settings in CONFIG (never the user's ~/.config/gcloud),
    the Compute API at COMPUTE_API (a base URL ending in `/compute/v1`; gcloud's override takes it
    with a trailing slash), and TOKEN as the access token (None: no account at all, as before
    `gcloud auth login`). No prompts, no update check, no usage report: the machine has no internet.
    """
    variables = {
        "CLOUDSDK_CONFIG": str(config),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true",
        "CLOUDSDK_SURVEY_DISABLE_PROMPTS": "true",
    }
    if compute_api is not None:
        variables["CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"] = compute_api.rstrip("/") + "/"
    if token is not None:
        variables["CLOUDSDK_AUTH_ACCESS_TOKEN"] = token
    return variables


def run(
    arguments: list[str], config: Path, compute_api: str | None = None, *, token: str | None = TOKEN
) -> subprocess.CompletedProcess[str]:
    """Run the real `gcloud ARGUMENTS` with `environment(CONFIG, COMPUTE_API, token=TOKEN)` over this
    process's, and capture what it prints."""
    env = {**without_gcloud_settings(os.environ), **environment(config, compute_api, token=token)}
    return subprocess.run(
        [gcloud_path(), *arguments], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def without_gcloud_settings(variables: Mapping[str, str]) -> dict[str, str]:
    """VARIABLES without gcloud's own (`CLOUDSDK_*`) and the proxy ones: a developer's settings must not
    point the tests' gcloud elsewhere (the stand-ins are on loopback, which a proxy would not reach)."""
    proxies = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}
    return {name: value for name, value in variables.items()
            if not name.startswith("CLOUDSDK_") and name.lower() not in proxies}  # fmt: skip
