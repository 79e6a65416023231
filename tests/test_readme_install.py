"""The README's first block, run as a student would on a fresh clone: its install line (pipx, into a
throwaway PIPX_HOME), then `course-vm --version` and a `render` with no Pulumi CLI, from another folder.

pipx installs course-vm and its dependencies from the package index (the same releases .ci/run installs,
so pip's cache has them), exactly as the line says; nothing of the checkout is imported.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import provisioner
from tests.conftest import ROOT


def first_block(readme: str) -> list[str]:
    """The commands of README's first ```bash block, comments and blank lines left out."""
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL)
    assert block, "the README has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_the_first_block_installs_then_runs_up_and_nothing_for_contributors() -> None:
    install, run = first_block((ROOT / "README.md").read_text())
    assert install == "pipx install . && pipx ensurepath"
    assert run.startswith("course-vm up --project YOUR-PROJECT-ID --zone ")
    assert "sudo" not in install + run


@pytest.mark.integration
def test_the_readmes_install_line_gives_a_working_course_vm_on_a_fresh_clone(tmp_path: Path) -> None:
    git = shutil.which("git")
    assert git is not None, "git is not installed (.ci/run clones with it)"
    clone = tmp_path / "course-vm"
    subprocess.run([git, "clone", "-q", str(ROOT), str(clone)], check=True, capture_output=True)
    home, bin_dir = tmp_path / "home", tmp_path / "home" / ".local" / "bin"
    home.mkdir()
    environment = {
        "HOME": str(home),
        "SHELL": "/bin/bash",  # whose start-up files `pipx ensurepath` extends
        # pipx comes from requirements-dev.txt, beside this interpreter; no `pulumi` anywhere on PATH, and no
        # course-vm either until `pipx ensurepath` has put pipx's folder there for the next shell.
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "PIPX_HOME": str(home / "pipx"),
        "PIPX_BIN_DIR": str(bin_dir),
        "PIPX_MAN_DIR": str(home / "man"),
        **{
            name: os.environ[name]
            for name in ("PIP_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE")
            if name in os.environ
        },
    }
    install, _ = first_block((clone / "README.md").read_text())
    installed = subprocess.run(
        ["sh", "-c", install], cwd=clone, env=environment, capture_output=True, text=True, timeout=900, check=False
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (bin_dir / "course-vm").exists()
    assert shutil.which("course-vm", path=environment["PATH"]) is None, "only a new shell finds it, on pipx's PATH"
    elsewhere = home / "work"
    elsewhere.mkdir()

    def course_vm(*args: str) -> subprocess.CompletedProcess[str]:
        # A new terminal, as the README says: a login shell, which reads what `pipx ensurepath` wrote.
        return subprocess.run(
            ["bash", "-l", "-c", 'course-vm "$@"', "bash", *args], cwd=elsewhere, env=environment,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    version = course_vm("--version")
    assert (version.returncode, version.stdout) == (0, f"course-vm {provisioner.__version__}\n"), version.stderr
    rendered = course_vm("render", "--set", "username=ana")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("#cloud-config\n")
    assert '  - name: "ana"\n' in rendered.stdout
    assert f"no settings in {home}/.config/course-vm yet" in rendered.stderr
