"""What the settings table writes: Pulumi.yaml's config block and the reference's table, and only those."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from provisioner.recipe import settings_docs
from provisioner.recipe.settings_docs import (
    TABLE_MARK,
    config_block,
    reference_default,
    reference_table,
    with_config_block,
    with_reference_table,
)
from provisioner.recipe.settings_table import ROW, SETTINGS

PROJECT_FILE = "name: course-vm\nconfig:\n  stale:\n    type: string\n\n  # a comment\nbackend:\n  url: file://x\n"
REFERENCE = (
    f"# Reference\n\n## Settings\n\n{TABLE_MARK}\n| key | default | what it is |\n| `stale` | x | y |\n\nAfter.\n"
)


def test_the_config_block_replaces_only_the_old_one() -> None:
    written = with_config_block(PROJECT_FILE)
    assert written == "name: course-vm\n" + config_block() + "backend:\n  url: file://x\n"
    assert with_config_block(written) == written


def test_the_config_block_declares_each_row_as_the_table_has_it() -> None:
    declared = yaml.safe_load(config_block())["config"]
    assert list(declared) == [row.key for row in SETTINGS]
    assert declared["anacondaVersion"] == {  # a string, though it reads like a number
        "type": "string",
        "default": "2022.05",
        "description": "Anaconda release to install; set anacondaSha256 with it.",
    }
    assert declared["students"]["items"] == {"type": "string"} and declared["students"]["default"] == []


def test_the_reference_table_replaces_only_the_old_one() -> None:
    written = with_reference_table(REFERENCE)
    assert written == "# Reference\n\n## Settings\n\n" + reference_table() + "\nAfter.\n"
    assert with_reference_table(written) == written


def test_the_reference_table_starts_with_gcps_keys_and_their_fallbacks() -> None:
    lines = reference_table().splitlines()
    assert lines[:4] == [
        TABLE_MARK,
        "| key | default | what it is |",
        "|---|---|---|",
        "| `gcp:project` | none (or `GOOGLE_PROJECT`, `GOOGLE_CLOUD_PROJECT`, `CLOUDSDK_CORE_PROJECT`) "
        "| the GCP project ID |",
    ]
    assert lines[5] == "| `machineType` | `e2-standard-4` | " + ROW["machineType"].reference + " |"


@pytest.mark.parametrize(
    ("key", "shown"),
    [
        ("diskSizeGb", "`30`"),
        ("verify", "`true`"),
        ("students", "`[]`"),
        ("studentsCsv", "none"),
        ("anacondaVersion", "`2022.05`"),
        ("allowedSshCidrs", "`[]` (must be set under `firewall`)"),
        ("anacondaSha256", "`a7c0afe8…a2db2d` (2022.05)"),
        ("dockerComposeSha256", "`ed793985…599e0f` (v2.6.1)"),
    ],
)
def test_a_default_as_the_reference_shows_it(key: str, shown: str) -> None:
    assert reference_default(ROW[key]) == shown


@pytest.mark.parametrize(
    ("written", "text", "message"),
    [
        (with_config_block, "name: course-vm\n", "Pulumi.yaml has no `config:` line to write the settings under"),
        (with_reference_table, "## Settings\n\n| key |\n", "the reference has no line '<!-- The table below"),
    ],
)
def test_a_file_without_its_place_for_the_settings_is_refused(
    written: Callable[[str], str], text: str, message: str
) -> None:
    with pytest.raises(ValueError) as raised:
        written(text)
    assert str(raised.value).startswith(message)


def test_write_rewrites_a_checkouts_stale_files_and_says_which(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "Pulumi.yaml").write_text(PROJECT_FILE)
    (tmp_path / "docs" / "reference.md").write_text(with_reference_table(REFERENCE))
    assert settings_docs.write(tmp_path) == [tmp_path / "Pulumi.yaml"]
    assert (tmp_path / "Pulumi.yaml").read_text() == with_config_block(PROJECT_FILE)
    assert settings_docs.write(tmp_path) == []
