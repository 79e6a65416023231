"""pyproject.toml as the tests read it, on every Python course-vm supports (tomllib is 3.11's; tomli before)."""

from __future__ import annotations

import sys
from typing import Any

from tests.conftest import ROOT

if sys.version_info >= (3, 11):
    import tomllib  # novm: read on 3.11 and newer alone; vermin reads no version guard
else:
    import tomli as tomllib


def pyproject() -> dict[str, Any]:
    """pyproject.toml's tables, parsed."""
    return tomllib.loads((ROOT / "pyproject.toml").read_text())
