"""What the console prints: progress and errors, which may quote the VM, reach the terminal without escape sequences."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import pytest

from provisioner.cli.console import confirm, declined, plan_summary, print_error, progress
from provisioner.driver.events import parse_events
from provisioner.driver.plan import plan_of
from provisioner.errors import (
    CourseVmError,
    DeclinedError,
    ExitStatus,
    MissingPrerequisiteError,
    SettingsError,
    UnreachableError,
)
from tests.support.pulumi_events import STUDENT_VM, preview_events

OSC_52 = "\x1b]52;c;cm0gLXJmIH4K\x07"


def test_an_error_quoting_the_vm_is_printed_without_its_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    error = UnreachableError(f'could not log in: Indecipherable protocol version "SSH-2.0{OSC_52}\x1b[2J"')
    assert print_error(error) == 3
    assert capsys.readouterr().err == 'course-vm: could not log in: Indecipherable protocol version "SSH-2.0"\n'


@pytest.mark.parametrize(
    ("error", "printed"),
    [
        (CourseVmError("no stack dev"), "course-vm: no stack dev"),
        (MissingPrerequisiteError("course-vm up needs one thing"), "course-vm up needs one thing"),
        (
            CourseVmError("course-vm's passphrase file P does not decrypt"),
            "course-vm's passphrase file P does not decrypt",
        ),
        (SettingsError(["diskSizeGb: got '1'"]), "course-vm settings: 1 problem, nothing was created:\n  - diskSizeGb"),
        (CourseVmError("course-vm-alice: not running"), "course-vm: course-vm-alice: not running"),
    ],
)
def test_an_error_names_course_vm_once(error: CourseVmError, printed: str, capsys: pytest.CaptureFixture[str]) -> None:
    print_error(error)
    assert capsys.readouterr().err.startswith(printed)


def test_progress_is_printed_without_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    progress(f"waiting for 10.0.0.2:22: SSH handshake failed ({OSC_52}\x07)")
    assert capsys.readouterr().err == "course-vm: waiting for 10.0.0.2:22: SSH handshake failed (\\x07)\n"


# The preview, per VM, from the engine's own events (as `pulumi preview --event-log` records them).


def summary(vms: dict[str, dict[str, str]], shared: str = "same") -> str:
    return plan_summary("dev", plan_of(parse_events(json.dumps(e) for e in preview_events(vms, shared=shared))))


def test_a_class_preview_says_per_student_what_is_created_replaced_deleted_or_left() -> None:
    vms = {
        "alice": {"self": "create", "ip": "create", "vm": "create", "verify": "create"},
        "bob": {"ip": "same", "vm": "replace", "verify": "replace"},
        "carol": {"self": "delete", "ip": "delete", "vm": "delete", "home": "delete"},
        "dave": {"ip": "same", "vm": "same"},
        "erin": {"ip": "update", "vm": "same"},
    }
    assert summary(vms, shared="update") == (
        "Pulumi's preview of stack dev:\n"
        "  alice's VM (course-vm-alice): create\n"
        "  bob's VM (course-vm-bob): REPLACE: everything on its boot disk is lost, /home included "
        "(homeDiskSizeGb would keep /home)\n"
        "  carol's VM (course-vm-carol): DELETE: everything on it is lost, its home disk too\n"
        "  dave's VM (course-vm-dave): no change\n"
        "  erin's VM (course-vm-erin): update in place (nothing on it is lost)\n"
        "  course-vm-network (shared by the VMs): update\n"
        "  course-vm-ssh (shared by the VMs): update\n"
        "  A replaced VM has new host keys (under iap a new name): afterwards, hand bob a new folder: "
        "course-vm handout --student bob --out DIR"
    )


@pytest.mark.parametrize(
    ("home", "said"),
    [
        ("same", "REPLACE: everything on its boot disk is lost; /home is kept (its own disk, homeDiskSizeGb)"),
        ("create", "REPLACE: everything on its boot disk is lost, /home included (its new home disk starts empty)"),
        ("replace", "REPLACE: everything on its boot disk is lost, /home included (homeDiskSizeGb would keep /home)"),
    ],
)
def test_a_replaced_vm_says_whether_its_home_disk_keeps_home(home: str, said: str) -> None:
    vms = {"": {"ip": "same", "vm": "replace", "home": home, "verify": "replace"}}
    assert summary(vms) == f"Pulumi's preview of stack dev:\n  the VM (course-vm): {said}"


def test_a_preview_without_changes_says_so() -> None:
    assert summary({"": {"ip": "same", "vm": "same", "home": "same"}}) == (
        "Pulumi's preview of stack dev:\n"
        "  the VM (course-vm): no change\n"
        "  no changes: nothing will be created, replaced or deleted"
    )


def test_entries_changed_alone_are_a_change_of_their_own() -> None:
    same = plan_of(parse_events(json.dumps(e) for e in preview_events({"": {"ip": "same", "vm": "same"}})))
    assert plan_summary("dev", replace(same, entries=True)) == (
        "Pulumi's preview of stack dev:\n"
        "  the VM (course-vm): no change\n"
        "  the VMs' ssh entries (forwardPorts, forwardAgent): update (no VM changes)"
    )


class Answer(io.StringIO):
    """What the user types, on a terminal or not."""

    def __init__(self, text: str, tty: bool = True) -> None:
        super().__init__(text)
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("typed", "answer"), [("y\n", True), ("Yes\n", True), ("n\n", False), ("\n", False), ("", False)]
)
def test_only_a_yes_goes_on(typed: str, answer: bool, capsys: pytest.CaptureFixture[str]) -> None:
    assert confirm("Proceed?", assume_yes=False, stdin=Answer(typed)) is answer
    assert capsys.readouterr().out.startswith("Proceed? [y/N] ")


def test_yes_goes_on_without_asking(capsys: pytest.CaptureFixture[str]) -> None:
    assert confirm("Proceed?", assume_yes=True, stdin=Answer("", tty=False)) is True
    assert capsys.readouterr().out == ""


def test_without_a_terminal_nobody_is_asked_and_nothing_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(CourseVmError, match=r"no terminal to ask on\. Fix: run it again with --yes") as raised:
        confirm("Proceed?", assume_yes=False, stdin=Answer("y\n", tty=False))
    assert raised.value.exit_code == ExitStatus.DECLINED
    assert capsys.readouterr().out == ""


def test_a_no_has_its_own_exit_status_and_says_nothing_changed() -> None:
    error = declined("down")
    assert isinstance(error, DeclinedError) and error.exit_code == ExitStatus.DECLINED
    assert str(error).startswith("not confirmed: nothing was created, changed or deleted in the cloud.")


def test_a_vm_is_found_by_its_resources_urns_when_its_component_reports_no_step() -> None:
    events = preview_events({"bob": {"vm": "replace", "home": "same"}})
    only_changes = [e for e in events if e.get("resourcePreEvent", {}).get("metadata", {}).get("type") != STUDENT_VM]
    plan = plan_of(parse_events(json.dumps(e) for e in only_changes))
    assert plan_summary("dev", plan).splitlines()[:2] == [
        "Pulumi's preview of stack dev:",
        "  bob's VM (course-vm-bob): REPLACE: everything on its boot disk is lost; /home is kept "
        "(its own disk, homeDiskSizeGb)",
    ]


def test_a_class_preview_says_whose_hand_out_a_replacement_makes_stale() -> None:
    vms = {"bob": {"vm": "replace"}, "carol": {"vm": "replace"}, "dave": {"vm": "same"}}
    assert summary(vms).endswith(
        "\n  A replaced VM has new host keys (under iap a new name): afterwards, hand bob and carol a new "
        "folder: course-vm handout --student bob --student carol --out DIR"
    )
    assert "hand" not in summary({"": {"vm": "replace"}}), "a stack's one VM has no hand-out"
