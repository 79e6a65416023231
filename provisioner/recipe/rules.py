"""What each setting's rule is made of: the row type, the problem list, value coercions and rule makers."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A file path that is safe in YAML and shell: it cannot carry a newline, a quote or a metacharacter.
PATH = re.compile(r"[A-Za-z0-9_./~@+-][A-Za-z0-9_./~@+ -]*")


class Problems:
    """Collects `key: got VALUE, but WHY. Fix: WHAT` lines so that all are reported together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, value: object, why: str, fix: str) -> None:
        self.lines.append(f"{key}: got {value!r}, but {why}. Fix: {fix}")


Rule = Callable[[Problems, "Setting", object], Any]
"""Turns a row's raw value into its typed value, or adds problems (what it returns then is never used)."""


@dataclass(frozen=True)
class Setting:
    """One project config key: its Pulumi.yaml type, default and description, and the rule its value must pass."""

    key: str
    type: str
    default: Any
    description: str
    rule: Rule
    only_for_gcp: bool = False
    """A local VM has no use for it, so there it is neither needed nor checked."""

    def check(self, problems: Problems, value: object) -> Any:
        """The typed value of VALUE, or a placeholder after adding to PROBLEMS what is wrong with it."""
        return self.rule(problems, self, value)


def set_command(key: str, example: object, *, at: int = 0) -> str:
    """The command that sets KEY (a list: its item AT), for the `Fix:` part of a message.

    It is `pulumi config`'s; a front end that takes settings otherwise rewrites it (`as_set_flags`).
    """
    if isinstance(example, list):
        return f"pulumi config set --path '{key}[{at}]' {example[0]}"
    if isinstance(example, bool):
        example = str(example).lower()
    return f"pulumi config set {key} {example}"


_PULUMI_SET = re.compile(r"pulumi config set (?:--path '(?P<item>\w+)\[\d+\]'|(?P<key>\w+)) (?P<value>\S+)")
_PULUMI_RM = re.compile(r"(?:remove it )?\(?pulumi config rm (?:--path )?'?(?P<key>\w+)(?:\[\d+\])?'?\)?")


def as_set_flags(problem: str) -> str:
    """PROBLEM with its fix for a front end that takes settings as `--set KEY=VALUE` (`local up`):
    each `pulumi config set` or `rm` the rules suggest (by `set_command`) becomes that flag, or leaving it out."""
    what, sep, fix = problem.rpartition(". Fix: ")
    if not sep:
        return problem

    def flag(match: re.Match[str]) -> str:
        if match["item"]:
            return f"--set '{match['item']}=[\"{match['value']}\"]'"
        return f"--set {match['key']}={match['value']}"

    fix = _PULUMI_SET.sub(flag, fix)
    fix = _PULUMI_RM.sub(lambda match: f"leave out --set {match['key']}=...", fix)
    return f"{what}. Fix: {fix}"


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
    problems.add(key, value, why, set_command(key, example))
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
            problems.add(setting.key, checked, refused_why, set_command(setting.key, fix_value))
            return ""
        return then(checked) if then and checked else checked

    return rule


def whole_number(low: int, high: int, why: str, example: object = None, *, or_zero: bool = False) -> Rule:
    """A whole number from LOW to HIGH (or 0, with OR_ZERO); the fix sets EXAMPLE, or the row's default."""

    def rule(problems: Problems, setting: Setting, value: object) -> int:
        number = as_int(value)
        if number is None or not (low <= number <= high or (or_zero and number == 0)):
            fix = set_command(setting.key, setting.default if example is None else example)
            problems.add(setting.key, value, why, fix)
            return 0
        return number

    return rule


def boolean(problems: Problems, setting: Setting, value: object) -> bool:
    """true or false; the fix sets the row's default."""
    flag = as_bool(value)
    if flag is None:
        problems.add(setting.key, value, "it must be true or false", set_command(setting.key, setting.default))
        return False
    return flag
