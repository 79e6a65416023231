"""Problems as records: the steps of a fix, each front end's words for them, and their JSON form."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioner.errors import SettingsError
from provisioner.recipe.problems import (
    Fix,
    Problem,
    Problems,
    RemoveKey,
    Say,
    SetKey,
    Step,
    from_json,
    pulumi_words,
    records_of,
    remove_key,
    set_flag_words,
    set_key,
    to_json,
)
from provisioner.recipe.settings import parse_settings
from provisioner.recipe.settings_table import DEFAULTS

GOOD = {"allowedSshCidrs": ["203.0.113.7/32"]}
PROJECT, ZONE = "course-project-1", "europe-west1-b"


@pytest.mark.parametrize(
    ("step", "in_pulumi_words", "in_set_flag_words"),
    [
        (SetKey("diskSizeGb", "30"), "pulumi config set diskSizeGb 30", "--set diskSizeGb=30"),
        (SetKey("students", "alice", at=2),
         "pulumi config set --path 'students[2]' alice", "--set 'students=[\"alice\"]'"),
        (RemoveKey("studentEmail"), "pulumi config rm studentEmail", "leave out --set studentEmail=..."),
        (RemoveKey("colour", aside=True), "remove it (pulumi config rm colour)", "leave out --set colour=..."),
        (Say("split the class"), "split the class", "split the class"),
    ],
)  # fmt: skip
def test_each_front_end_words_each_step(step: Step, in_pulumi_words: str, in_set_flag_words: str) -> None:
    assert pulumi_words(step) == in_pulumi_words
    assert set_flag_words(step) == in_set_flag_words


@pytest.mark.parametrize(
    ("example", "at", "step"),
    [
        ("e2-standard-8", 0, SetKey("k", "e2-standard-8")),
        (30, 0, SetKey("k", "30")),
        (True, 0, SetKey("k", "true")),  # as Pulumi.yaml and `pulumi config` write a boolean
        (["alice", "bob"], 3, SetKey("k", "alice", at=3)),  # a list's first item, as item AT
        ("roster.csv", 3, SetKey("k", "roster.csv")),  # AT is a list's only
    ],
)
def test_set_key_writes_the_example_as_it_is_typed(example: object, at: int, step: SetKey) -> None:
    assert set_key("k", example, at=at) == Fix((step,))


def test_a_fix_reads_as_it_is_said_text_and_steps_joined_in_order() -> None:
    fix = "keep one: " + remove_key("students") + ", or " + remove_key("studentsCsv")
    assert fix == Fix((Say("keep one: "), RemoveKey("students"), Say(", or "), RemoveKey("studentsCsv")))
    assert set_key("a", 1) + set_key("b", 2) == Fix((SetKey("a", "1"), SetKey("b", "2")))


def test_a_problem_shows_its_value_as_its_repr_or_that_it_is_not_set() -> None:
    problems = Problems()
    problems.add("username", "eve\n", "it is no login", set_key("username", "student"))
    problems.add("allowedSshCidrs", [], "nobody could reach SSH", "ask your network's admin")
    problems.not_set("gcp:zone", set_key("gcp:zone", "europe-west1-b") + " (a zone near you)")
    assert problems.records[1] == Problem(
        "allowedSshCidrs", "[]", "nobody could reach SSH", Fix((Say("ask your network's admin"),))
    )
    assert problems.lines == [
        "username: got 'eve\\n', but it is no login. Fix: pulumi config set username student",
        "allowedSshCidrs: got [], but nobody could reach SSH. Fix: ask your network's admin",
        "gcp:zone: not set. Fix: pulumi config set gcp:zone europe-west1-b (a zone near you)",
    ]
    assert [record.in_words(set_flag_words) for record in problems.records][2] == (
        "gcp:zone: not set. Fix: --set gcp:zone=europe-west1-b (a zone near you)"
    )  # fmt: skip


def only_problem(raw: dict[str, object]) -> Problem:
    with pytest.raises(SettingsError) as raised:
        parse_settings(raw if "sshAccess" in raw else {**GOOD, **raw}, PROJECT, ZONE)
    [problem] = records_of(raised.value)
    assert problem.in_pulumi_words() == raised.value.problems[0]
    return problem


@pytest.mark.parametrize(
    ("raw", "for_local_up"),
    [
        ({"verify": "yes"}, "verify: got 'yes', but it must be true or false. Fix: --set verify=true"),
        ({"username": "root"},
         "username: got 'root', but that name belongs to the system or grants extra rights. "
         "Fix: --set username=student"),
        ({"allowedSshCidrs": []},
         "allowedSshCidrs: got [], but the firewall would let nobody reach SSH. Fix: allow your own address: "
         "--set 'allowedSshCidrs=[\"YOUR.PUBLIC.IP/32\"]' (0.0.0.0/0 allows the whole internet)"),
        ({"allowedSshCidrs": ["203.0.113.7/24"]},
         "allowedSshCidrs[0]: got '203.0.113.7/24', but it has host bits set (the range is 203.0.113.0/24). "
         "Fix: --set 'allowedSshCidrs=[\"203.0.113.0/24\"]'"),
        ({"sshKeyPath": "/home/Alice Smith/key.pub"},
         "sshKeyPath: got '/home/Alice Smith/key.pub', but it names a public key; the setting is the private key. "
         "Fix: --set sshKeyPath=\"/home/Alice Smith/key\""),
        ({"timeZone": "Mars"},
         "timeZone: got 'Mars', but it is not an IANA time zone name. "
         "Fix: --set timeZone=Europe/Berlin (`timedatectl list-timezones` lists them)"),
        ({"anacondaVersion": "2023.03"},
         "anacondaVersion: got '2023.03', but the default anacondaSha256 only matches version 2022.05. "
         "Fix: also set the new release's checksum: --set anacondaSha256=SHA256"),
        ({"machinetype": "e2-standard-8"},
         "machinetype: got 'e2-standard-8', but course-vm has no such setting (did you mean machineType?). "
         "Fix: leave out --set machinetype=..., then --set machineType=e2-standard-8"),
        ({"colour": "blue"},
         "colour: got 'blue', but course-vm has no such setting. Fix: leave out --set colour=...; known keys: "
         + ", ".join(DEFAULTS)),
        ({"students": ["alice"], "studentsCsv": "roster.csv"},
         "studentsCsv: got 'roster.csv', but students is set too, and a class has one roster. "
         "Fix: keep one: leave out --set students=..., or leave out --set studentsCsv=..."),
        ({"studentEmail": "maria@example.edu"},
         "studentEmail: got 'maria@example.edu', but sshAccess is firewall, and only iap grants a Google account "
         "access. Fix: --set sshAccess=iap, or leave out --set studentEmail=..."),
        ({"sshAccess": "iap", "allowedSshCidrs": ["203.0.113.7/32"]},
         "allowedSshCidrs: got ['203.0.113.7/32'], but sshAccess is iap, which admits only Google's IAP range "
         "35.235.240.0/20, so the ranges would not be used. Fix: leave out --set allowedSshCidrs=..."),
        ({"sshAccess": "iap", "students": ["alice"]},
         "students: got 'alice', but sshAccess iap grants each student's Google account access to their own VM, "
         "and this student has none (a `students` list carries no emails: use studentsCsv). Fix: a roster CSV "
         "with `name` and `email` columns: leave out --set students=..., then --set studentsCsv=roster.csv"),
    ],
)  # fmt: skip
def test_local_up_words_each_fix_as_set_flags(raw: dict[str, object], for_local_up: str) -> None:
    # Byte for byte what `local up` said when it rewrote the Pulumi words of the same problems.
    assert only_problem(raw).in_words(set_flag_words) == for_local_up


def test_settings_error_says_its_records_in_pulumi_words_and_keeps_them() -> None:
    records = [
        Problem("diskSizeGb", "'10'", "too small", set_key("diskSizeGb", 30)),
        Problem("colour", "'blue'", "no such setting", remove_key("colour", aside=True)),
    ]
    error = SettingsError(records)
    assert str(error) == (
        "course-vm settings: 2 problems, nothing was created:\n"
        "  - diskSizeGb: got '10', but too small. Fix: pulumi config set diskSizeGb 30\n"
        "  - colour: got 'blue', but no such setting. Fix: remove it (pulumi config rm colour)"
    )
    assert records_of(error) == tuple(records)


def test_problems_given_as_text_have_no_records() -> None:
    error = SettingsError(["~/.ssh/k is student bob's key of stack prod. Fix: pulumi config set sshKeyPath ~/k2"])
    assert error.records == ()
    with pytest.raises(ValueError, match="1 of the problems are text, not records"):
        records_of(error)


def test_the_json_form_carries_every_step_and_reads_back_the_same_records() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(
            {"colour": "blue", "machinetype": "x", "students": "bob", "allowedSshCidrs": ["1.2.3.4/8"]}, None, ZONE
        )
    records = records_of(raised.value)
    steps = {type(step) for record in records for step in record.fix.steps}
    assert steps == {SetKey, RemoveKey, Say} and any(record.value is None for record in records)
    assert from_json(json.loads(json.dumps(to_json(records)))) == records
    assert to_json(records[:1]) == [
        {
            "key": "colour",
            "value": "'blue'",
            "why": "course-vm has no such setting",
            "fix": [
                {"step": "remove", "key": "colour", "aside": True},
                {"step": "say", "text": "; known keys: " + ", ".join(DEFAULTS)},
            ],
        }
    ]  # fmt: skip


PROBLEM = {"key": "k", "value": "'v'", "why": "w"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"problems": []}, "settings problems are a JSON list, not dict"),
        (["k: got 'v'"], "problem 0: expected an object with the fields key, value, why, fix"),
        ([{**PROBLEM}], "problem 0: expected an object with the fields key, value, why, fix"),
        ([{**PROBLEM, "fix": [], "extra": 1}], "problem 0: expected an object with the fields key, value, why, fix"),
        ([{**PROBLEM, "value": 3, "fix": []}], "problem 0: value of the wrong type"),
        ([{**PROBLEM, "fix": "set k"}], "problem 0: fix of the wrong type"),
        ([{**PROBLEM, "fix": [{"step": "shout", "text": "x"}]}],
         "problem 0, step 0: a step is an object whose `step` is one of set, remove, say"),
        ([{**PROBLEM, "fix": [{"step": "say", "text": "x"}, {"step": "set", "key": "k", "example": "1", "at": True}]}],
         "problem 0, step 1: at of the wrong type"),
        ([{**PROBLEM, "fix": [{"step": "remove", "key": "k"}]}], "problem 0, step 0: expected an object with the "
         "fields key, aside"),
    ],
)  # fmt: skip
def test_a_json_form_that_is_not_problems_is_refused(data: Any, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        from_json(data)
    assert str(raised.value) == message
