"""The `course-vm` command as pip installs it from a wheel, for tests that run it as a user would."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT


@dataclass(frozen=True)
class Installed:
    wheel: Path
    prefix: Path
    home: Path
    """An unrelated directory: the working directory and HOME of every run."""

    def run(self, *args: str, home: Path | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`course-vm ARGS` with HOME (default: `home`) and its XDG folders, in CWD (default: HOME), with no
        Pulumi CLI on PATH (this machine has none)."""
        home = home or self.home
        environment = {
            "PATH": f"{self.prefix / 'bin'}:/usr/bin:/bin",
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_STATE_HOME": str(home / "state"),
        }
        return subprocess.run(
            [str(self.prefix / "bin" / "course-vm"), *args],
            cwd=cwd or home,
            env=environment,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )


def install_wheel(base: Path) -> Installed:
    """course-vm built as a wheel in BASE and installed into a fresh virtualenv there, which reaches the
    dependencies through a .pth file naming this interpreter's site-packages (installing them from PyPI would
    take minutes); course-vm itself comes only from the wheel, never from the checkout."""
    # Without build isolation: hatchling comes from requirements-dev.txt, not a download per run.
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(base / "dist"), str(ROOT)]
    built = subprocess.run(
        [sys.executable, "-m", "pip", *build],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (base / "dist").glob("course_vm-*.whl")
    prefix = base / "venv"
    venv.create(prefix, with_pip=False)
    site = Path(
        subprocess.run(
            [str(prefix / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = [sys.executable, "-m", "pip", "--python", str(prefix / "bin" / "python"), "install", "-q", "--no-deps"]
    result = subprocess.run([*install, str(wheel)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    home = base / "elsewhere"
    home.mkdir()
    return Installed(wheel, prefix, home)
