"""What the settings table is made of: its row types, value coercions and rule makers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Problems is imported from here by the roster's rules and the command line.
from provisioner.recipe.problems import Problems as Problems
from provisioner.recipe.problems import set_key

# A file path that is safe in YAML and shell: it cannot carry a newline, a quote or a metacharacter.
PATH = re.compile(r"[A-Za-z0-9_./~@+-][A-Za-z0-9_./~@+ -]*")

Rule = Callable[[Problems, "Setting", object], Any]
"""Turns a row's raw value into its typed value, or adds problems (what it returns then is never used)."""


@dataclass(frozen=True)
class Setting:
    """One row of the settings table: a course-vm config key, what Pulumi.yaml and the reference say of it,
    the rule its value must pass, and the Settings field its typed value fills."""

    key: str
    type: str
    """Its type in Pulumi.yaml: string, integer, boolean or array (of strings)."""
    default: Any
    description: str
    """What Pulumi.yaml says of it: one sentence."""
    rule: Rule
    field: str = ""
    """The Settings field its typed value fills; "" when it only feeds a field made from several rows
    (`settings.DERIVED`). Tests keep the rows and the fields in step."""
    only_for_gcp: bool = False
    """A local VM has no use for it, so there it is neither needed nor checked: it takes its default."""
    reference: str = ""
    """What the reference's settings table says of it (docs/reference.md; Markdown, one line)."""
    reference_default: str = ""
    """Its default as the reference shows it, when that is more than the default itself (see settings_docs)."""

    def check(self, problems: Problems, value: object) -> Any:
        """The typed value of VALUE, or a placeholder after adding to PROBLEMS what is wrong with it."""
        return self.rule(problems, self, value)


@dataclass(frozen=True)
class ProviderKey:
    """A key of the GCP provider that the program needs set (`gcp:project`, `gcp:zone`); not course-vm's own,
    so neither in Pulumi.yaml nor checked by a rule of the table, but checked and documented beside it."""

    key: str
    field: str
    """The Settings field its value fills."""
    pattern: re.Pattern[str]
    why: str
    """Why a value PATTERN does not match cannot be."""
    example: str
    hint: str
    """Where to find a value, said after the fix when the key is not set."""
    environment: tuple[str, ...]
    """The environment variables the provider falls back to, in its order."""
    reference: str


# Pulumi hands every config value over as a string; a stack file or `parse_settings`' callers may
# give typed values. Each coercion accepts both and returns None for anything else.


def as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        return int(value)
    return None


def as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def as_list(value: object) -> list[object] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def check_text(problems: Problems, key: str, value: object, pattern: re.Pattern[str], why: str, example: object) -> str:
    """VALUE if it is a string PATTERN matches in full; else "" and a problem whose fix sets EXAMPLE."""
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    problems.add(key, value, why, set_key(key, example))
    return ""


def text(
    pattern: str,
    why: str,
    example: object = None,
    *,
    refused: Callable[[str], bool] = lambda _: False,
    refused_why: str = "",
    then: Callable[[str], str] | None = None,
) -> Rule:
    """A string PATTERN matches in full and not REFUSED, normalised by THEN.

    The fix of either problem sets EXAMPLE, or the row's default when no example is given.
    """
    compiled = re.compile(pattern)

    def rule(problems: Problems, setting: Setting, value: object) -> str:
        fix_value = setting.default if example is None else example
        checked = check_text(problems, setting.key, value, compiled, why, fix_value)
        if checked and refused(checked):
            problems.add(setting.key, checked, refused_why, set_key(setting.key, fix_value))
            return ""
        return then(checked) if then and checked else checked

    return rule


def whole_number(low: int, high: int, why: str, example: object = None, *, or_zero: bool = False) -> Rule:
    """A whole number from LOW to HIGH (or 0, with OR_ZERO); the fix sets EXAMPLE, or the row's default."""

    def rule(problems: Problems, setting: Setting, value: object) -> int:
        number = as_int(value)
        if number is None or not (low <= number <= high or (or_zero and number == 0)):
            fix = set_key(setting.key, setting.default if example is None else example)
            problems.add(setting.key, value, why, fix)
            return 0
        return number

    return rule


def boolean(problems: Problems, setting: Setting, value: object) -> bool:
    """true or false; the fix sets the row's default."""
    flag = as_bool(value)
    if flag is None:
        problems.add(setting.key, value, "it must be true or false", set_key(setting.key, setting.default))
        return False
    return flag
