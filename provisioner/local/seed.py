"""The NoCloud seed ISO: how a local VM whose image is no GCE twin gets its user-data."""

from __future__ import annotations

import secrets
from pathlib import Path

from provisioner.local.process import require, run_tool


def write_seed(directory: Path, name: str, user_data: str) -> Path:
    """DIRECTORY/seed.iso for the local VM NAME: USER_DATA, and meta-data naming a new instance."""
    tool = require("cloud-localds", "cloud-image-utils")
    (directory / "user-data").write_text(user_data)
    # A new instance-id per boot of a new VM: cloud-init runs the recipe once per instance.
    (directory / "meta-data").write_text(
        f"instance-id: course-vm-{name}-{secrets.token_hex(4)}\nlocal-hostname: course-vm-{name}\n"
    )
    seed = directory / "seed.iso"
    run_tool([tool, str(seed), str(directory / "user-data"), str(directory / "meta-data")], "cloud-localds")
    return seed
