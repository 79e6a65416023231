"""Rule makers and coercions: what Pulumi's strings become, and the message each rule adds."""

from __future__ import annotations

import pytest

from provisioner.recipe.problems import Problems
from provisioner.recipe.rules import Rule, Setting, as_bool, as_int, as_list, boolean, text, whole_number


@pytest.mark.parametrize(
    ("value", "expected"),
    [(45, 45), ("45", 45), (" 7 ", 7), (True, None), ("-5", None), ("1e3", None), ("1234567890", None), (4.0, None)],
)
def test_as_int(value: object, expected: int | None) -> None:
    assert as_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"), [(False, False), ("TRUE", True), (" false ", False), ("yes", None), (1, None)]
)
def test_as_bool(value: object, expected: bool | None) -> None:
    assert as_bool(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [('["a", "b"]', ["a", "b"]), (("a",), ["a"]), ([], []), ("a", None), ('{"a": 1}', None), (3, None)],
)
def test_as_list(value: object, expected: list[object] | None) -> None:
    assert as_list(value) == expected


def checked(rule: Rule, value: object, default: object = "dflt") -> tuple[object, list[str]]:
    problems = Problems()
    return Setting("someKey", "string", default, "A key.", rule).check(problems, value), problems.lines


def test_text_normalises_a_match_and_refuses_listed_values_with_the_default_as_fix() -> None:
    rule = text(
        r"[a-z]+",
        "it is not lower-case letters",
        refused={"root"}.__contains__,
        refused_why="it is taken",
        then=str.upper,
    )
    assert checked(rule, "abc") == ("ABC", [])
    assert checked(rule, "ab c") == (
        "",
        ["someKey: got 'ab c', but it is not lower-case letters. Fix: pulumi config set someKey dflt"],
    )
    assert checked(rule, "root") == ("", ["someKey: got 'root', but it is taken. Fix: pulumi config set someKey dflt"])


def test_whole_number_may_allow_zero_and_name_its_own_example() -> None:
    rule = whole_number(10, 20, "it must be 10 to 20, or 0", 15, or_zero=True)
    assert checked(rule, "0", 0) == (0, [])
    assert checked(rule, 20, 0) == (20, [])
    assert checked(rule, "5", 0) == (
        0,
        ["someKey: got '5', but it must be 10 to 20, or 0. Fix: pulumi config set someKey 15"],
    )


def test_boolean_fix_sets_the_default_as_pulumi_writes_it() -> None:
    assert checked(boolean, "true", False) == (True, [])
    assert checked(boolean, "maybe", False) == (
        False,
        ["someKey: got 'maybe', but it must be true or false. Fix: pulumi config set someKey false"],
    )
