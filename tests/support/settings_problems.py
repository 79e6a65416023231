"""The problems `parse_settings` reports for settings that are valid but for the values a test adds."""

from __future__ import annotations

import pytest

from provisioner.errors import SettingsError
from provisioner.recipe.settings import parse_settings

GOOD = {"allowedSshCidrs": ["203.0.113.7/32"]}
PROJECT, ZONE = "course-project-1", "europe-west1-b"
NAME_RULE = (
    "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with - "
    "(it becomes their login and part of the VM's name)"
)
"""Why a roster refuses a name that is no name, as its message says it."""


def problems(raw: dict[str, object], project: object = PROJECT, zone: object = ZONE) -> list[str]:
    """The problems of GOOD with RAW added (in PROJECT and ZONE), each as the message says it."""
    with pytest.raises(SettingsError) as raised:
        parse_settings({**GOOD, **raw}, project, zone)
    return list(raised.value.problems)
