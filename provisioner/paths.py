"""Where course-vm's files are: its project directory, and its XDG state and cache directories."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
"""The project directory: Pulumi.yaml, the stack files, cloud-init/ and relative roster paths."""
TEMPLATES = PROJECT_DIR / "cloud-init"
"""The recipe's Jinja2 templates."""


def state_home() -> Path:
    """`$XDG_STATE_HOME/course-vm` (default `~/.local/state/course-vm`): VMs and Pulumi state."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "course-vm"


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/course-vm` (default `~/.cache/course-vm`): downloaded and built images."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "course-vm"
