"""The documentation stays true to the code: every setting, command and exit status is documented."""

from __future__ import annotations

import argparse
import re

from provisioner import errors
from provisioner.cli.main import parser
from provisioner.recipe.settings_docs import REGENERATE, with_reference_table
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()
REFERENCE = (ROOT / "docs" / "reference.md").read_text()
ERRORS = (ROOT / "docs" / "errors.md").read_text()


def test_the_settings_table_is_written_from_the_code() -> None:
    assert with_reference_table(REFERENCE) == REFERENCE, f"the reference's settings table is stale: run `{REGENERATE}`"


def test_every_command_is_in_the_readme() -> None:
    commands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing = [name for name in commands.choices if f"course-vm {name}" not in README]
    assert missing == []


def test_every_exit_status_is_in_the_errors_table() -> None:
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", ERRORS, re.MULTILINE)}
    assert {int(status) for status in errors.ExitStatus} == documented


def test_the_readme_names_every_exit_status() -> None:
    listed = " ".join(README.split("[exit statuses](docs/errors.md#exit-statuses):", 1)[1].split(".\n", 1)[0].split())
    assert {int(code) for code in re.findall(r"(?:^|, )(\d+) ", listed)} == {int(s) for s in errors.ExitStatus}


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of TEXT's headings: lowercased, punctuation dropped, spaces as `-`."""
    headings = re.findall(r"^#+ (.+)$", text, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_link_between_the_documents_leads_somewhere() -> None:
    pages = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # https://, mailto: ...
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked.read_text()):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []
