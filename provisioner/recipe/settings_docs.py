"""Pulumi.yaml's `config:` block and the reference's settings table, written from the settings table."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

from provisioner.paths import FROM_CHECKOUT, PACKAGE_ROOT
from provisioner.recipe.rules import Setting
from provisioner.recipe.settings_table import PROVIDER_KEYS, SETTINGS

REGENERATE = "python -m provisioner.recipe.settings_docs"
"""The command that rewrites both in a checkout (tests/test_pulumi_yaml.py and tests/test_docs.py say it)."""

_CONFIG_HEADER = (
    "  # Every course-vm setting with its default, written from the settings table",
    "  # (provisioner/recipe/settings_table.py) by `python -m provisioner.recipe.settings_docs`: edit it there.",
    "  # gcp:project and gcp:zone are the GCP provider's own keys and are set per stack.",
)
TABLE_MARK = (
    "<!-- The table below is written from provisioner/recipe/settings_table.py by "
    "`python -m provisioner.recipe.settings_docs`: edit it there. -->"
)
"""The line above the reference's settings table; the table ends at the first blank line after it."""


def config_block() -> str:
    """Pulumi.yaml's `config:` block: each row's type, default and description, in the table's order."""
    lines = ["config:", *_CONFIG_HEADER]
    for row in SETTINGS:
        lines += [f"  {row.key}:", f"    type: {row.type}"]
        if row.type == "array":
            lines += ["    items:", "      type: string"]
        lines += [f"    default: {_yaml_scalar(row.default)}", f"    description: {_yaml_scalar(row.description)}"]
    return "\n".join(lines) + "\n"


def _yaml_scalar(value: object) -> str:
    """VALUE as YAML on one line, quoted only where YAML needs it (so `'2022.05'` stays a string)."""
    return yaml.safe_dump(value, default_flow_style=True, width=sys.maxsize).removesuffix("\n").removesuffix("\n...")


def reference_table() -> str:
    """The reference's settings table: GCP's keys, then each setting in the table's order."""
    lines = [TABLE_MARK, "| key | default | what it is |", "|---|---|---|"]
    for key in PROVIDER_KEYS:
        fallbacks = ", ".join(f"`{name}`" for name in key.environment)
        lines.append(f"| `{key.key}` | none (or {fallbacks}) | {key.reference} |")
    lines += [f"| `{row.key}` | {reference_default(row)} | {row.reference} |" for row in SETTINGS]
    return "\n".join(lines) + "\n"


def reference_default(row: Setting) -> str:
    """ROW's default as the reference shows it: its own words, `none` for an empty string, or the value
    in backticks as `pulumi config` writes it (`true`, `[]`)."""
    if row.reference_default:
        return row.reference_default
    if row.default == "":
        return "none"
    return f"`{row.default if isinstance(row.default, str) else json.dumps(row.default)}`"


def with_config_block(project_file: str) -> str:
    """PROJECT_FILE, Pulumi.yaml's text, with its `config:` block written anew (up to the next top-level key).

    Raises ValueError when it has no `config:` line.
    """
    lines = project_file.splitlines(keepends=True)
    if "config:\n" not in lines:
        raise ValueError("Pulumi.yaml has no `config:` line to write the settings under")
    start = lines.index("config:\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i][:1] not in (" ", "\n")), len(lines))
    return "".join(lines[:start]) + config_block() + "".join(lines[end:])


def with_reference_table(reference: str) -> str:
    """REFERENCE, docs/reference.md's text, with its settings table written anew (from TABLE_MARK to the
    first blank line). Raises ValueError when it has no TABLE_MARK line."""
    lines = reference.splitlines(keepends=True)
    if TABLE_MARK + "\n" not in lines:
        raise ValueError(f"the reference has no line {TABLE_MARK!r} above its settings table")
    start = lines.index(TABLE_MARK + "\n")
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return "".join(lines[:start]) + reference_table() + "".join(lines[end:])


def write(checkout: Path = PACKAGE_ROOT) -> list[Path]:
    """Rewrite CHECKOUT's Pulumi.yaml block and reference table from the settings table; the files that changed."""
    changed = []
    for path, written in (
        (checkout / "Pulumi.yaml", with_config_block),
        (checkout / "docs" / "reference.md", with_reference_table),
    ):
        text = path.read_text()
        new = written(text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


if __name__ == "__main__":
    if not FROM_CHECKOUT:
        sys.exit("course-vm runs from an installed copy here: run this in a checkout")
    for path in write():
        print(f"wrote {path}")
