"""Where course-vm's files are: the Pulumi program, the project directory, and its XDG directories."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
"""The directory `provisioner` is imported from: the checkout, or site-packages when course-vm is installed."""
_SOURCE = PACKAGE_ROOT
PACKAGED_PROGRAM = Path(__file__).resolve().parent / "_program"
"""An installed copy's Pulumi.yaml, __main__.py and cloud-init/: the wheel ships them here."""
FROM_CHECKOUT = (_SOURCE / "Pulumi.yaml").is_file()
"""Whether course-vm runs from a checkout (or an editable install of one) rather than an installed copy."""

PROGRAM_DIR = _SOURCE if FROM_CHECKOUT else PACKAGED_PROGRAM
"""The Pulumi program as shipped: Pulumi.yaml, __main__.py and cloud-init/."""
TEMPLATES = PROGRAM_DIR / "cloud-init"
"""The recipe's Jinja2 templates."""


def config_home() -> Path:
    """`$XDG_CONFIG_HOME/course-vm` (default `~/.config/course-vm`): the project folder (see project_dir)."""
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "course-vm"


ON_WINDOWS = os.name == "nt"
"""The one switch for Windows' rules (key ACLs, drive-letter paths, PowerShell lines); tests pass `windows=`."""


def project_dir() -> Path:
    """The project folder, `$XDG_CONFIG_HOME/course-vm` (default `~/.config/course-vm`), the one place of
    Pulumi.yaml and the stack files (Pulumi.STACK.yaml) for `course-vm` and `python -m provisioner` alike,
    wherever they run from: an installed copy cannot keep stack files in site-packages, and a checkout run
    with its own folder would show other stacks than the installed command. Course-vm writes its Pulumi.yaml
    there, whose python runtime is the interpreter course-vm runs in (see driver/workspace.py)."""
    return config_home()


def state_home() -> Path:
    """`$XDG_STATE_HOME/course-vm` (default `~/.local/state/course-vm`): VMs and Pulumi state."""
    return Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state") / "course-vm"


def cache_home() -> Path:
    """`$XDG_CACHE_HOME/course-vm` (default `~/.cache/course-vm`): downloaded and built images."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "course-vm"
