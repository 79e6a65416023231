"""The settings table: one row per key, each saying on one line what Pulumi.yaml and the reference show."""

from __future__ import annotations

import pytest

from provisioner.recipe.rules import Setting
from provisioner.recipe.settings_table import PROVIDER_KEYS, SETTINGS

TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}
"""Pulumi.yaml's config types, and the Python type of a default of each."""


def test_every_key_and_field_is_named_once() -> None:
    keys = [row.key for row in SETTINGS] + [key.key for key in PROVIDER_KEYS]
    fields = [row.field for row in SETTINGS if row.field] + [key.field for key in PROVIDER_KEYS]
    assert len(set(keys)) == len(keys)
    assert len(set(fields)) == len(fields)


@pytest.mark.parametrize("row", SETTINGS, ids=[row.key for row in SETTINGS])
def test_every_row_has_a_pulumi_type_and_one_line_texts(row: Setting) -> None:
    assert type(row.default) is TYPES[row.type]
    assert row.description.endswith(".") and "\n" not in row.description
    # A reference text is one cell of a Markdown table: no line break, no `|`, no full stop of its own.
    assert row.reference and not row.reference.endswith(".")
    assert "\n" not in row.reference + row.reference_default and "|" not in row.reference + row.reference_default
