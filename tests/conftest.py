"""Shared fixtures: tool lookup that fails in CI, the real cloud-init schema validator, test keys."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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
