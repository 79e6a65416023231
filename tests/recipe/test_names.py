"""The student name policy: which names may be a login, and the name a fix suggests instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.recipe.names import as_name, is_reserved, student_name_problem
from tests.support.settings_problems import NAME_RULE, problems


@pytest.mark.parametrize("name", ["alice\n", "al\nice", "\nalice"])
def test_a_name_with_a_newline_is_refused(name: str) -> None:
    assert problems({"students": [name]}) == [
        f"students[0]: got {name!r}, but {NAME_RULE}. Fix: pulumi config set --path 'students[0]' "
        + name.replace("\n", "-").strip("-")
    ]


@pytest.mark.parametrize(
    "name", ["systemd-network", "systemd-anything", "tss", "polkitd", "tcpdump", "messagebus", "landscape", "lxd"]
)
def test_system_accounts_are_refused_as_students(name: str) -> None:
    assert problems({"students": ["alice", name]}) == [
        f"students[1]: got {name!r}, but that name belongs to the system or grants extra rights. "
        "Fix: pulumi config set --path 'students[1]' student2"
    ]


@pytest.mark.parametrize("name", ["con", "prn", "aux", "nul", "com1", "com9", "lpt1", "lpt9"])
def test_windows_device_names_are_refused_as_students(name: str, tmp_path: Path) -> None:
    # Valid Linux logins, but no folder on Windows, where instructors write the hand-outs, can have them.
    why = "that name cannot be a folder's name on Windows (it names a device there), and each hand-out is one"
    assert problems({"students": ["alice", name]}) == [
        f"students[1]: got {name!r}, but {why}. Fix: pulumi config set --path 'students[1]' {name}-2"
    ]
    roster = tmp_path / "roster.csv"
    roster.write_text(f"name\nalice\n{name.upper()}\n")
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv {roster} line 3: got {name.upper()!r}, but {NAME_RULE}. "
        f"Fix: correct that line of {roster}, e.g. to student2"
    ]


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("alice", ""),
        ("con-1", ""),
        ("..", NAME_RULE.split(" (")[0]),
        ("", NAME_RULE.split(" (")[0]),
        (None, NAME_RULE.split(" (")[0]),
        ("root", "that name belongs to the system or grants extra rights"),
        ("lpt3", "that name cannot be a folder's name on Windows (it names a device there), and each hand-out is one"),
    ],
)
def test_the_name_rule_is_one_function_for_names_read_back_from_a_stack(name: object, why: str) -> None:
    assert student_name_problem(name) == why


@pytest.mark.parametrize(
    ("name", "reserved"),
    [("root", True), ("docker", True), ("_apt", True), ("systemd-timesync", True), ("alice", False), ("rooty", False)],
)
def test_system_accounts_and_those_named_like_them_are_reserved(name: str, reserved: bool) -> None:
    assert is_reserved(name) is reserved


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("Bob Smith", "bob-smith"),
        ("x_y", "x-y"),
        ("dave-", "dave"),
        ("42 Ann", "ann"),
        ("", ""),
        ("root", ""),
        ("--", ""),
    ],
)
def test_a_text_becomes_the_name_it_suggests_or_none(text: str, name: str) -> None:
    assert as_name(text) == name
