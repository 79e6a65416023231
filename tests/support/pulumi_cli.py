"""A stand-in for the Pulumi CLI (not installable here): a `pulumi` on PATH that prints a stack's outputs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path


def stand_in_pulumi(tmp_path: Path, outputs: Mapping[str, object]) -> dict[str, str]:
    """An environment whose `pulumi` (a stand-in for the CLI, not installable here) prints OUTPUTS,
    but only when it is asked on the backend `up` uses (the local file backend, by default)."""
    state = tmp_path / "state"
    backend = (state / "course-vm" / "pulumi").as_uri()
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        "#!/bin/sh\n[ \"$1 $2\" = 'stack output' ] || exit 9\n"
        f"[ \"$PULUMI_BACKEND_URL\" = '{backend}' ] || {{ echo 'no stack on this backend' >&2; exit 1; }}\n"
        f"echo '{json.dumps(outputs)}'\n"
    )
    fake.chmod(0o755)
    environment = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "XDG_STATE_HOME": str(state)}
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME"):
        environment.pop(name, None)
    environment["PULUMI_HOME"] = str(tmp_path / "pulumi-home")  # not logged in anywhere
    return environment
