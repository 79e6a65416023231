"""What OpenSSH itself makes of the ssh configuration course-vm writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool


def resolved(home: Path, alias: str) -> dict[str, str]:
    """What `ssh -G` makes of ALIAS through HOME's ~/.ssh/config: OpenSSH's own reading of the files."""
    return dict(line.split(" ", 1) for line in _ssh_g(home / ".ssh" / "config", alias) if " " in line)


def resolved_all(home: Path, alias: str, option: str) -> list[str]:
    """Every value `ssh -G` gives ALIAS's OPTION through HOME's ~/.ssh/config (one per LocalForward, say)."""
    return [line.split(" ", 1)[1] for line in _ssh_g(home / ".ssh" / "config", alias) if line.startswith(f"{option} ")]


def resolved_by(config: Path, alias: str) -> dict[str, str]:
    """What `ssh -G -F CONFIG ALIAS` makes of ALIAS: CONFIG alone, as `ssh -F` reads it. Options OpenSSH
    lists several times (identityfile) are joined by a space."""
    options: dict[str, str] = {}
    for line in _ssh_g(config, alias):
        if " " in line:
            key, value = line.split(" ", 1)
            options[key] = f"{options[key]} {value}" if key in options else value
    return options


def _ssh_g(config: Path, alias: str) -> list[str]:
    """The lines of `ssh -G -F CONFIG ALIAS`: OpenSSH's own reading of ALIAS's options."""
    return subprocess.run(
        [require_tool("ssh"), "-G", "-F", str(config), alias], capture_output=True, text=True, check=True
    ).stdout.splitlines()
