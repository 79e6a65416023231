"""The `course-vm` command as pip/pipx installs it: built as a wheel, installed into a fresh
virtualenv, and run from a directory that is not the checkout.

The fresh virtualenv reaches the dependencies through a .pth file naming this interpreter's
site-packages (installing them from PyPI would take minutes); course-vm itself comes only from
the wheel, never from the checkout.
"""

from __future__ import annotations

import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

import provisioner
from tests.conftest import ROOT
from tests.support.cli import run_cli
from tests.support.installed import Installed, install_wheel
from tests.support.pyproject import pyproject

TEMPLATES = [f"cloud-init/{path.name}" for path in sorted((ROOT / "cloud-init").iterdir())]
PROGRAM_FILES = ["Pulumi.yaml", "__main__.py", *TEMPLATES]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_wheel(tmp_path_factory.mktemp("packaging"))


def test_the_wheel_carries_the_program_and_its_templates(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        names = set(wheel.namelist())
        for name in PROGRAM_FILES:
            assert f"provisioner/_program/{name}" in names, name
            assert wheel.read(f"provisioner/_program/{name}") == (ROOT / name).read_bytes(), name
        metadata = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        entry_points = wheel.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert f"Version: {provisioner.__version__}\n" in metadata
    assert "Requires-Python: >=3.10\n" in metadata
    assert "course-vm = provisioner.cli.main:main" in entry_points


def test_the_installed_command_runs_from_anywhere(installed: Installed) -> None:
    version = installed.run("--version")
    assert (version.returncode, version.stdout) == (0, f"course-vm {provisioner.__version__}\n"), version.stderr
    render_help = installed.run("render", "--help")
    assert render_help.returncode == 0, render_help.stderr
    assert render_help.stdout.startswith("usage: course-vm render")


def test_an_installed_copy_renders_from_its_own_templates_and_project_directory(installed: Installed) -> None:
    # `course-vm env` prepares the project directory (as `up` does) and says where it is.
    env = installed.run("env")
    assert env.returncode == 0, env.stderr
    project = installed.home / "config" / "course-vm"
    assert env.stdout.endswith(f"cd {project}\n")
    runtime = yaml.safe_load((project / "Pulumi.yaml").read_text())["runtime"]
    assert runtime["options"]["virtualenv"] == str(installed.prefix)
    assert (project / "__main__.py").read_text() == (ROOT / "__main__.py").read_text()
    (project / "Pulumi.dev.yaml").write_text(
        "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
        f"  course-vm:sshKeyPath: {installed.home}/keys/course-vm\n"
        "  course-vm:allowedSshCidrs: ['203.0.113.7/32']\n"
    )
    rendered = installed.run("render", "--stack", "dev")
    assert rendered.returncode == 0, rendered.stderr
    assert rendered.stdout.startswith("#cloud-config")
    where = installed.prefix / "lib"
    imported = subprocess.run(
        [str(installed.prefix / "bin" / "python"), "-c", "from provisioner import paths; print(paths.TEMPLATES)"],
        cwd=installed.home,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    packaged = r"/python3\.\d+/site-packages/provisioner/_program/cloud-init"
    assert re.fullmatch(re.escape(str(where)) + packaged, imported)


def test_pyprojects_dependencies_are_requirements_txt() -> None:
    declared = pyproject()["project"]["dependencies"]
    lines = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert declared == [line for line in lines if line]


def test_python_m_provisioner_is_the_same_command() -> None:
    result = run_cli("--version")  # `python -m provisioner` in the checkout
    assert result.stdout == f"course-vm {provisioner.__version__}\n"
    assert os.path.samefile(Path(provisioner.__file__).parent.parent, ROOT)
