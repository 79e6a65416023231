"""What OpenSSH itself makes of the ssh configuration course-vm writes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import require_tool


def resolved(home: Path, alias: str) -> dict[str, str]:
    """What `ssh -G` makes of ALIAS through HOME's ~/.ssh/config: OpenSSH's own reading of the files."""
    out = subprocess.run(
        [require_tool("ssh"), "-G", "-F", str(home / ".ssh" / "config"), alias],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
