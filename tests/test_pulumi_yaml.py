"""Pulumi.yaml follows the documented project-file schema, and its settings are written from the settings table."""

from __future__ import annotations

from typing import Any

import yaml

from provisioner.recipe.settings import PROJECT, SETTINGS
from provisioner.recipe.settings_docs import REGENERATE, with_config_block
from tests.conftest import ROOT

PROJECT_FILE_KEYS = {
    "name",
    "runtime",
    "description",
    "config",
    "main",
    "stackConfigDir",
    "backend",
    "options",
    "template",
    "plugins",
    "packages",
}
CONFIG_SCHEMA_KEYS = {"type", "description", "secret", "default", "items"}
PYTHON_TYPES = {"string": str, "integer": int, "boolean": bool, "array": list}


def project_file() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert isinstance(document, dict)
    return document


def test_project_and_runtime() -> None:
    document = project_file()
    assert set(document) <= PROJECT_FILE_KEYS
    assert document["name"] == PROJECT
    assert document["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}


def test_config_declares_every_setting_with_the_codes_default() -> None:
    config = project_file()["config"]
    assert list(config) == [s.key for s in SETTINGS]
    for setting in SETTINGS:
        declared = config[setting.key]
        assert set(declared) <= CONFIG_SCHEMA_KEYS, setting.key
        assert declared["type"] == setting.type, setting.key
        assert declared["default"] == setting.default, setting.key
        assert type(declared["default"]) is PYTHON_TYPES[setting.type], setting.key
        assert declared["description"] == setting.description, setting.key
        if setting.type == "array":
            assert declared["items"] == {"type": "string"}


def test_the_config_block_is_written_from_the_settings_table() -> None:
    text = (ROOT / "Pulumi.yaml").read_text()
    assert text == with_config_block(text), (
        f"Pulumi.yaml's config block is not the settings table's: run `{REGENERATE}`"
    )
