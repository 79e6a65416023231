"""Python 3.10, the oldest course-vm supports, proven without a 3.10 interpreter: vermin reads every module for
the oldest Python its standard library and syntax need, and pyproject.toml's version settings name that one.

This proves no behaviour: what a 3.10 interpreter does differently at run time is untested (CONTRIBUTING.md).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.pyproject import pyproject

pytestmark = pytest.mark.integration

OLDEST = (3, 10)
"""The oldest Python course-vm runs on: Ubuntu 22.04's, and many WSL installs'."""
DOTTED = f"{OLDEST[0]}.{OLDEST[1]}"
SOURCES = ["provisioner", "__main__.py", "benchmarks", "tests"]
"""Everything that runs on the user's or the maintainer's Python (not the VM's)."""


def vermin(*paths: str | Path) -> tuple[tuple[int, int] | None, str]:
    """The oldest Python 3 that PATHS need, as vermin finds it (None: none, e.g. a syntax error), and its output.

    --eval-annotations: as if annotations were evaluated at run time, the stricter reading. --pessimistic: a
    module this Python cannot parse counts as no Python 3 at all, not as nothing found.
    """
    options = ["--no-config-file", f"--target={DOTTED}-", "--violations", "--eval-annotations", "--pessimistic"]
    result = subprocess.run(
        [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", *options, "--no-tips", *map(str, paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    output = result.stdout + result.stderr
    line = re.search(r"^Minimum required versions: (.*)$", output, re.MULTILINE)
    assert line, output
    found = [re.fullmatch(r"3\.(\d+)", version) for version in line.group(1).split(", ")]
    minor = next((int(match.group(1)) for match in found if match), None)
    return (None if minor is None else (3, minor)), output


def test_no_module_needs_a_python_newer_than_the_oldest_supported() -> None:
    needed, output = vermin(*SOURCES)
    assert needed is not None and needed <= OLDEST, output


@pytest.mark.parametrize(
    ("source", "feature"),
    [
        ("from datetime import UTC\n", "'datetime.UTC' member requires !2, 3.11"),
        ("import enum\n\n\nclass A(enum.StrEnum):\n    B = 'b'\n", "'enum.StrEnum' member requires !2, 3.11"),
        ("import tomllib\n", "'tomllib' module requires !2, 3.11"),
        ("from typing import Self\n", "'typing.Self' member requires !2, 3.11"),
        ("try:\n    pass\nexcept* OSError:\n    pass\n", "`except*` requires !2, 3.11"),
        ("import subprocess\n\nsubprocess.Popen(['true'], process_group=0)\n", "Popen(process_group)' requires"),
        ("def f(:\n", "invalid syntax"),
    ],
)
def test_a_newer_feature_is_reported_with_its_file(tmp_path: Path, source: str, feature: str) -> None:
    # The check above can fail: each of these, in a module of its own, is caught and named.
    module = tmp_path / "newer.py"
    module.write_text(source)
    needed, output = vermin(module)
    assert needed is None or needed > OLDEST, output
    assert str(module) in output and feature in output, output


def test_a_line_marked_novm_is_not_reported(tmp_path: Path) -> None:
    # vermin reads no `if sys.version_info >= ...` guard: a line the guard keeps from an older Python says so.
    guarded = "import sys\n\nif sys.version_info >= (3, 11):\n    import tomllib{}\nelse:\n    import tomli\n"
    module = tmp_path / "guarded.py"
    module.write_text(guarded.format(""))
    assert vermin(module)[0] == (3, 11)
    module.write_text(guarded.format("  # novm: 3.11 and newer alone"))
    needed, output = vermin(module)
    assert needed is not None and needed <= OLDEST, output


def test_pyprojects_version_settings_name_the_oldest_supported() -> None:
    # pip refuses an older Python, mypy checks the standard library as the oldest has it, ruff's
    # pyupgrade rules suggest nothing newer; the README's install section names the same one.
    settings = pyproject()
    assert settings["project"]["requires-python"] == f">={DOTTED}"
    assert settings["tool"]["mypy"]["python_version"] == DOTTED
    assert settings["tool"]["ruff"]["target-version"] == f"py{OLDEST[0]}{OLDEST[1]}"
    assert f"Python {DOTTED} or newer" in (ROOT / "README.md").read_text()
