"""`up` through the stand-in Pulumi CLI, in this process: options kept, the preview, the cloud check, the entries."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation.events import OpType

from provisioner.access.ssh_config import hosts_file
from provisioner.cli.arguments import settings_given
from provisioner.cli.main import main
from provisioner.cli.up import PartialUpError, interrupted_up, up, verifying
from provisioner.cli.up_options import UpOptions, config_change, up_words
from provisioner.driver.config import StackConfig
from provisioner.driver.events import EngineLog, Step, StepKind
from provisioner.driver.plan import Action, Plan
from provisioner.driver.session import EngineRunError
from provisioner.driver.verifications import Result, Verification, recorded_verifications
from provisioner.errors import CourseVmError, ExitStatus, MissingPrerequisiteError, SettingsError
from provisioner.gcp.quotas import Existing
from provisioner.recipe.problems import SetKey
from provisioner.recipe.settings import Settings
from provisioner.stack import VERIFICATION_TYPE, StackOutputs
from tests.support.openssh import resolved
from tests.support.outputs import IAP, class_outputs, one_vm
from tests.support.pulumi_errors import program_failed
from tests.support.pulumi_events import preview_events, update_events
from tests.support.pulumi_state import STACK_CONFIG, exported_deployment
from tests.support.stand_in_pulumi import StandInPulumi, stand_in_here

CREATE = preview_events({"": {"self": "create", "ip": "create", "vm": "create"}})
NOT_READY = "the VM is not ready:\nCHECK  RESULT  TIME  DETAIL\ndocker  FAILED  1.0s  no docker\n"


def yes(plan: Plan) -> bool:
    return True


def create(*students: str) -> list[dict[str, Any]]:
    return preview_events({name: {"self": "create", "ip": "create", "vm": "create"} for name in students})


def test_up_stores_the_options_says_the_ranges_and_writes_a_pinned_host_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, config={"dev": {}}, events=CREATE, next_outputs=one_vm())
    said: list[str] = []
    options = UpOptions("course-project-1", "europe-west1-b", ("203.0.113.7/32", "198.51.100.0/24"))
    outputs = up("dev", options, confirm=yes, on_output=said.append)
    assert pulumi.config("dev") == {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west1-b",
        "course-vm:allowedSshCidrs": '["203.0.113.7/32", "198.51.100.0/24"]',
    }
    assert pulumi.verbs() == [
        "stack export", "config", "stack select", "config rm", "config set-all", "preview", "up", "stack export"
    ]  # fmt: skip
    assert pulumi.selected() == "dev", "the raw pulumi lines of a fix reach it"
    assert said == ["allowedSshCidrs: (none) -> 203.0.113.7/32, 198.51.100.0/24", "Updating (dev)"]
    assert outputs.vms[""].ip == "34.78.1.2"
    ours = hosts_file().read_text()
    assert "Host course-vm\n    HostName 34.78.1.2\n    User student\n" in ours
    assert "    UserKnownHostsFile /home/me/.ssh/course-vm.dev.known_hosts\n    StrictHostKeyChecking yes\n" in ours


def test_up_keeps_settings_it_is_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm())
    up("dev", UpOptions(), confirm=yes, on_output=print)
    assert pulumi.config("dev") == STACK_CONFIG
    assert pulumi.verbs() == ["stack export", "config", "stack select", "preview", "up", "stack export"]


def test_up_creates_a_stack_that_is_not_there_yet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {}, events=CREATE, next_outputs=one_vm(stack="fall"))
    up("fall", UpOptions("course-project-1", "europe-west1-b", ("203.0.113.7/32",)), confirm=yes, on_output=print)
    assert pulumi.verbs()[:3] == ["stack export", "stack init", "config"]
    assert pulumi.config("fall")["gcp:project"] == "course-project-1"


def test_other_stacks_get_their_own_host_alias(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_here(tmp_path, monkeypatch, {"alice": {}}, events=CREATE, next_outputs=one_vm(stack="alice"))
    up("alice", UpOptions("p-123456"), confirm=yes, on_output=print)
    assert "Host course-vm-alice\n" in hosts_file().read_text()


def test_a_class_gets_one_pinned_host_entry_per_student(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_here(
        tmp_path, monkeypatch, {"dev": {}}, events=create("alice", "bob"), next_outputs=class_outputs("alice", "bob")
    )
    outputs = up("dev", UpOptions(), confirm=yes, on_output=print)
    assert outputs.is_class and list(outputs.vms) == ["alice", "bob"]
    ours = hosts_file().read_text()
    for index, name in enumerate(("alice", "bob"), start=10):
        assert f"Host course-vm-{name}\n    HostName 34.78.1.{index}\n    User {name}\n" in ours
        assert f"    UserKnownHostsFile /home/me/.ssh/course-vm-{name}.dev.known_hosts\n" in ours
    assert "Host course-vm\n" not in ours


def test_a_roster_change_adds_and_removes_only_those_students_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(
        tmp_path, monkeypatch, {"dev": {}}, events=create("alice", "bob"), next_outputs=class_outputs("alice", "bob")
    )
    up("dev", UpOptions(), confirm=yes, on_output=print)
    other = one_vm(stack="other")
    stand_in_here(tmp_path, monkeypatch, {"other": {}}, events=CREATE, next_outputs=other)
    up("other", UpOptions(), confirm=yes, on_output=print)
    roster = preview_events({"alice": {}, "bob": {"self": "delete", "vm": "delete"}, "carol": {"self": "create"}})
    stacks = {"dev": class_outputs("alice", "bob"), "other": other}
    stand_in_here(tmp_path, monkeypatch, stacks, events=roster, next_outputs=class_outputs("alice", "carol"))
    up("dev", UpOptions(), confirm=yes, on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-carol\n" in ours
    assert "Host course-vm-bob\n" not in ours
    assert "Host course-vm-other\n" in ours, "another stack's entry is not this stack's to remove"


# The Host block is built from the VM's fields, each checked: never the sshConfig text read back.

INJECTED = 'Match exec "touch /tmp/course-vm-pwned"\n    ProxyCommand sh -c "id"\n'


@pytest.mark.integration
def test_a_tampered_ssh_config_output_never_reaches_the_users_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tampered = {**one_vm(), "sshConfig": one_vm()["sshConfig"] + INJECTED}
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=tampered)
    up("dev", UpOptions(), confirm=yes, on_output=print)
    ours = hosts_file().read_text()
    assert "Match" not in ours and "touch" not in ours and "ProxyCommand" not in ours
    seen = resolved(tmp_path, "course-vm")
    assert (seen["hostname"], seen["user"], seen["port"]) == ("34.78.1.2", "student", "22")
    assert seen["identityfile"] == "/home/me/.ssh/course-vm"
    assert seen["userknownhostsfile"] == "/home/me/.ssh/course-vm.dev.known_hosts"
    assert seen["stricthostkeychecking"] == "true"
    assert "proxycommand" not in seen


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ip", "34.78.1.2\n" + INJECTED, r"host '34\.78\.1\.2\\nMatch exec .*' is not an IP address"),
        ("ip", "evil.example.org", r"host 'evil\.example\.org' is not an IP address"),
        ("username", "student\nHost *", r"user 'student\\nHost \*' is not a Linux login"),
        ("identityFile", '/home/me/key"\nMatch exec "id', r"identity file .* holds a control character"),
        ("knownHostsFile", "/home/me/%d/known_hosts", r"known_hosts file '/home/me/%d/known_hosts' holds"),
    ],
)
def test_a_bad_field_in_the_outputs_writes_nothing_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: str, message: str
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm())
    up("dev", UpOptions(), confirm=yes, on_output=print)
    assert "Host course-vm\n" in hosts_file().read_text()
    changed = preview_events({"": {"vm": "update"}})
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, events=changed, next_outputs={**one_vm(), key: value})
    with pytest.raises(CourseVmError, match=r"^course-vm: cannot write an ssh Host block: " + message) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert "\n" not in str(raised.value) and "Fix: " in str(raised.value)
    assert not hosts_file().exists(), "the VM's earlier block goes too: it may name an old address"


def test_one_students_bad_field_keeps_the_others_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = class_outputs("alice", "bob")
    outputs["students"]["bob"]["ip"] = "34.78.1.11\nHost *"
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=create("alice", "bob"), next_outputs=outputs)
    with pytest.raises(CourseVmError, match=r"^course-vm-bob: cannot write an ssh Host block: host '34"):
        up("dev", UpOptions(), confirm=yes, on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "course-vm-bob" not in ours and "Host *" not in ours


@pytest.mark.integration
def test_up_writes_an_iap_host_entry_that_ssh_reaches_through_the_tunnel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm(iap=True))
    up("dev", UpOptions(), confirm=yes, on_output=print)
    seen = resolved(tmp_path, "course-vm")
    assert seen["hostname"] == "course-vm-vm-1a2b3c"
    assert seen["proxycommand"] == IAP
    assert seen["userknownhostsfile"] == "/home/me/.ssh/course-vm.dev.known_hosts"


# What `up` needs before it reads or changes anything.


def test_without_the_pulumi_cli_up_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    flags = ["--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "203.0.113.7/32"]
    assert main(["up", *flags]) == ExitStatus.MISSING_PREREQUISITE
    assert "the Pulumi CLI is not on PATH" in capsys.readouterr().err
    assert not (tmp_path / "state").exists(), "nothing is set up before the CLI is known to exist"


def test_ready_is_told_whether_the_stack_uses_iap_before_anything_is_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"gcp:project": "course-project-1", "gcp:zone": "europe-west1-b", "course-vm:sshAccess": "iap"}
    pulumi = stand_in_here(
        tmp_path, monkeypatch, {"dev": {}}, config={"dev": config}, events=CREATE, next_outputs=one_vm()
    )
    told: list[tuple[bool, list[str]]] = []
    up("dev", UpOptions(), confirm=yes, ready=lambda iap: told.append((iap, pulumi.verbs())), on_output=print)
    assert told == [(True, ["stack export", "config"])]


def test_a_machine_that_is_not_ready_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {}, events=CREATE)

    def lacking(iap: bool) -> None:
        raise MissingPrerequisiteError("no gcloud")

    with pytest.raises(MissingPrerequisiteError, match=r"^no gcloud$"):
        options = UpOptions("course-project-1", "europe-west1-b", ["203.0.113.7/32"])
        up("dev", options, confirm=yes, ready=lacking, on_output=print)
    assert pulumi.verbs() == ["stack export"], "no stack created, no option stored"


def test_settings_the_program_would_refuse_are_refused_before_any_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**STACK_CONFIG, "course-vm:diskSizeGb": "tiny"}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, config={"dev": config}, events=CREATE)
    with pytest.raises(SettingsError) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    [problem] = raised.value.problems
    assert problem.startswith("diskSizeGb: got 'tiny', but ") and problem.endswith(
        "Fix: `course-vm up --set diskSizeGb=30`"
    )
    assert str(raised.value) == f"course-vm settings: 1 problem, nothing was created:\n  - {problem}"
    # Read from the stack file, before the Pulumi CLI runs at all.
    assert pulumi.verbs() == []


# Preview, then confirm: nothing changes without a yes, and a preview without changes runs nothing.


def test_up_shows_the_plan_and_a_no_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = preview_events({"bob": {"vm": "replace"}, "carol": {"self": "delete", "vm": "delete"}})
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("bob", "carol")}, events=events)
    shown: list[Plan] = []

    def no(plan: Plan) -> bool:
        shown.append(plan)
        return False

    with pytest.raises(CourseVmError) as raised:
        up("dev", UpOptions(), confirm=no, on_output=print)
    assert str(raised.value) == (
        "not confirmed: nothing was created, changed or deleted in the cloud. Fix: run `course-vm up` again and "
        "answer y (first copy off the VM what you need that would be lost)"
    )
    assert "up" not in pulumi.verbs(), "no up after a no"
    assert [(vm.student, vm.action) for vm in shown[0].vms] == [("bob", Action.REPLACE), ("carol", Action.DELETE)]
    assert not hosts_file().exists()


def test_a_no_says_that_the_options_given_stay_in_the_stacks_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The preview needs --zone in the stack's settings, so a no cannot take it back unsaid.
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, events=preview_events({"": {"vm": "replace"}}))
    with pytest.raises(CourseVmError) as raised:
        up("dev", UpOptions(zone="europe-west4-a", allowed=("203.0.113.7/32",)), confirm=lambda plan: False)
    assert "The stack's settings keep what --zone, --allow gave; a later `up` previews them again." in str(raised.value)
    assert pulumi.config("dev")["gcp:zone"] == "europe-west4-a"
    assert "up" not in pulumi.verbs()


BEFORE_FORWARDS = {key: value for key, value in one_vm().items() if key not in ("forwardPorts", "forwardAgent")}
"""A stack last updated before forwardPorts: its outputs forward Jupyter's port alone."""


@pytest.mark.parametrize(
    ("outputs", "config", "after", "said"),
    [
        (BEFORE_FORWARDS, {}, one_vm(), "LocalForward localhost:5000 localhost:5000"),
        (one_vm(), {"course-vm:forwardAgent": "true"}, one_vm(forward_agent=True), "ForwardAgent yes"),
        (one_vm(), {"course-vm:forwardPorts": '["5001:5000"]'}, one_vm(forwards=["5001:5000"]),
         "LocalForward localhost:5001 localhost:5000"),
    ],
)  # fmt: skip
def test_ports_or_the_agent_changed_alone_update_the_entries_though_no_vm_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: dict[str, Any], config: dict[str, str],
    after: dict[str, Any], said: str,
) -> None:  # fmt: skip
    # The engine shows no step for outputs alone, so the preview says "same" for every resource.
    same = preview_events({"": {"ip": "same", "vm": "same", "verify": "same"}})
    pulumi = stand_in_here(
        tmp_path, monkeypatch, {"dev": outputs}, events=same, next_outputs=after,
        config={"dev": {**STACK_CONFIG, **config}},
    )  # fmt: skip
    shown: list[Plan] = []

    def show(plan: Plan) -> bool:
        shown.append(plan)
        return True

    up("dev", UpOptions(), confirm=show, on_output=print)
    assert shown[0].entries and shown[0].changes
    assert "up" in pulumi.verbs(), "the update writes the outputs the entries are built from"
    assert f"    {said}\n" in hosts_file().read_text()


def test_a_preview_without_changes_runs_no_update_and_writes_the_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = preview_events({"": {"ip": "same", "vm": "same", "verify": "same"}})
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, events=same)
    shown: list[Plan] = []

    def show(plan: Plan) -> bool:
        shown.append(plan)
        return True

    outputs = up("dev", UpOptions(), confirm=show, on_output=print)
    assert pulumi.verbs() == ["stack export", "config", "stack select", "preview"]
    assert not shown[0].changes
    assert outputs.vms[""].ip == "34.78.1.2"
    assert "Host course-vm\n    HostName 34.78.1.2\n" in hosts_file().read_text(), "from the state, as it is"


# allowedSshCidrs: --allow replaces the stored list, --add-allow appends to it; a change is said first.


def up_with_cidrs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: Sequence[str], added: Sequence[str]
) -> tuple[StandInPulumi, list[tuple[str, str]]]:
    """`up` with ALLOWED (--allow) and ADDED (--add-allow) of a stack storing 203.0.113.7/32; what it said, each
    line with the last command the CLI had run by then."""
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm())
    said: list[tuple[str, str]] = []
    options = UpOptions(allowed=tuple(allowed), added=tuple(added))
    up("dev", options, confirm=yes, on_output=lambda line: said.append((line, pulumi.verbs()[-1])))
    return pulumi, said


def test_allow_replaces_the_stored_ranges_and_says_so_before_the_preview(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi, said = up_with_cidrs(tmp_path, monkeypatch, ["198.51.100.0/24"], [])
    assert pulumi.config("dev")["course-vm:allowedSshCidrs"] == '["198.51.100.0/24"]'
    assert said == [("allowedSshCidrs: 203.0.113.7/32 -> 198.51.100.0/24", "config set-all"), ("Updating (dev)", "up")]


def test_add_allow_appends_to_the_stored_ranges_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi, said = up_with_cidrs(tmp_path, monkeypatch, [], ["198.51.100.0/24", "203.0.113.7/32", "198.51.100.0/24"])
    assert pulumi.config("dev")["course-vm:allowedSshCidrs"] == '["203.0.113.7/32", "198.51.100.0/24"]'
    assert said[0] == ("allowedSshCidrs: 203.0.113.7/32 -> 203.0.113.7/32, 198.51.100.0/24", "config set-all")


def test_allow_and_add_allow_together_make_the_given_list_plus_the_added(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi, _ = up_with_cidrs(tmp_path, monkeypatch, ["192.0.2.0/24"], ["198.51.100.0/24"])
    assert pulumi.config("dev")["course-vm:allowedSshCidrs"] == '["192.0.2.0/24", "198.51.100.0/24"]'


@pytest.mark.parametrize(("allowed", "added"), [(["203.0.113.7/32"], []), ([], ["203.0.113.7/32"])])
def test_ranges_already_stored_change_nothing_and_say_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: list[str], added: list[str]
) -> None:
    pulumi, said = up_with_cidrs(tmp_path, monkeypatch, allowed, added)
    assert pulumi.config("dev") == STACK_CONFIG
    assert "config set-all" not in pulumi.verbs() and "config rm" not in pulumi.verbs()
    assert said == [("Updating (dev)", "up")]


# The cloud check: after the preview, with the settings it validated, before any question or change.


def test_the_check_gets_the_stacks_settings_and_the_vms_created_before_the_question(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {**STACK_CONFIG, "course-vm:students": '["alice", "bob"]'}
    events = preview_events({"alice": {"self": "create", "vm": "create"}, "bob": {"self": "create"},
                             "carol": {"vm": "replace"}})  # fmt: skip
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("carol")}, config={"dev": config},
                           events=events)  # fmt: skip
    seen: list[tuple[str, str, str, tuple[str, ...], int]] = []
    order: list[tuple[str, str]] = []

    def check(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        seen.append((stack_name, settings.project, settings.zone, settings.students, created))
        order.append(("check", pulumi.verbs()[-1]))

    def ask(plan: Plan) -> bool:
        order.append(("ask", pulumi.verbs()[-1]))
        return True

    up("dev", UpOptions(zone="europe-west4-a"), confirm=ask, check=check, on_output=print)
    # The zone given here counts, though the stack stored another; a replaced VM adds nothing.
    assert seen == [("dev", "course-project-1", "europe-west4-a", ("alice", "bob"), 2)]
    assert order == [("check", "preview"), ("ask", "preview")]
    assert "up" in pulumi.verbs()


def test_a_check_that_refuses_leaves_everything_as_it_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm())

    def refuse(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        raise CourseVmError("short of quota")

    with pytest.raises(CourseVmError, match=r"^short of quota$"):
        up("dev", UpOptions(), confirm=yes, check=refuse, on_output=print)
    assert pulumi.verbs() == ["stack export", "config", "stack select", "preview"]
    assert not hosts_file().exists()


def test_up_hands_the_cloud_check_the_vms_it_updates_as_they_are_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outputs = class_outputs("alice", "bob", "carol")
    state = exported_deployment("dev", outputs, machines={"alice": ("e2-standard-4", 30), "bob": ("e2-standard-2", 40)})
    events = preview_events({"alice": {"vm": "update"}, "bob": {"vm": "replace"}, "carol": {"vm": "same"}})
    stand_in_here(
        tmp_path, monkeypatch, {"dev": outputs}, deployments={"dev": state}, events=events, next_outputs=outputs
    )
    seen: list[list[Existing]] = []

    def check(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        seen.append(list(existing))

    up("dev", UpOptions(), confirm=yes, check=check, on_output=print)
    assert seen == [[Existing("e2-standard-4", 30), Existing("e2-standard-2", 40)]]


# An update that fails for some students: their VMs' own outputs in the stack's state stand in for
# the stack outputs Pulumi keeps as they were.


def fails_for_bob(students: Sequence[str], state: dict[str, Any], **given: Any) -> dict[str, Any]:
    """The stand-in's arguments for an update of STUDENTS that fails at bob's verification, leaving STATE."""
    verified = {name: "failed: " + NOT_READY if name == "bob" else "passed" for name in students}
    failure = {"events": update_events(verified), "deployment": state}
    return {"events": create(*students), "fail": {"up": failure}, **given}


def test_a_class_up_that_fails_for_one_student_writes_the_others_entries_and_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = exported_deployment("dev", class_outputs("alice", "carol"), root={}, unfinished=("bob",))
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, **fails_for_bob(["alice", "bob", "carol"], state))
    with pytest.raises(PartialUpError) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert raised.value.exit_code == 5
    assert raised.value.failed == ("bob",)
    assert list(raised.value.outputs.vms) == ["alice", "carol"]
    assert str(raised.value) == (
        "1 of 3 VMs of stack dev did not finish: bob. The others' ssh entries are written (the table above).\n"
        "Pulumi could not update stack dev:\n"
        "  error: the VM is not ready:\n  CHECK  RESULT  TIME  DETAIL\n  docker  FAILED  1.0s  no docker\n"
        "  error: update failed\n"
        "Fix: act on the engine's lines above, then run `course-vm up` again: it retries what did not finish (bob) "
        "and leaves the VMs that finished as they are. To look into one first: `course-vm render --stack dev "
        "--student bob` prints the recipe a VM was given"
    )
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-carol\n" in ours
    assert "course-vm-bob" not in ours
    # A failed update keeps the old outputs: only its events say whose verification failed.
    assert recorded_verifications("dev") == {
        "alice": Verification(Result.PASSED, "2026-11-27T14:00:00Z"),
        "bob": Verification(Result.FAILED, "2026-11-27T14:00:00Z", NOT_READY.strip()),
        "carol": Verification(Result.PASSED, "2026-11-27T14:00:00Z"),
    }


def test_a_student_removed_after_a_class_up_that_failed_loses_the_entry_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = exported_deployment("dev", class_outputs("alice", "carol"), root={}, unfinished=("bob",))
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, **fails_for_bob(["alice", "bob", "carol"], state))
    with pytest.raises(PartialUpError):
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert "Host course-vm-carol\n" in hosts_file().read_text()
    # carol leaves the class: the next update deletes her VM and succeeds.
    events = preview_events({"alice": {}, "bob": {"self": "create"}, "carol": {"self": "delete"}})
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, deployments={"dev": state}, events=events,
             next_outputs=class_outputs("alice", "bob"))  # fmt: skip
    up("dev", UpOptions(), confirm=yes, on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-bob\n" in ours
    assert "course-vm-carol" not in ours


def test_a_later_up_that_fails_for_one_student_keeps_that_students_entry_and_updates_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(
        tmp_path, monkeypatch, {"dev": {}}, events=create("alice", "bob"), next_outputs=class_outputs("alice", "bob")
    )
    up("dev", UpOptions(), confirm=yes, on_output=print)
    # The next update replaces both VMs (new addresses); bob's new VM fails its verification.
    renewed = class_outputs("alice", "bob")
    renewed["students"]["alice"]["ip"] = "34.78.2.10"
    # bob's StudentVm registered nothing: the state keeps his previous outputs, as Pulumi's same step does.
    state = exported_deployment("dev", renewed, root=class_outputs("alice", "bob"))
    replace = preview_events({name: {"vm": "replace"} for name in ("alice", "bob")})
    stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alice", "bob")},
             **fails_for_bob(["alice", "bob"], state, events=replace))  # fmt: skip
    with pytest.raises(PartialUpError) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert raised.value.failed == ("bob",)
    assert "`course-vm check --stack dev --student bob` checks one again" in str(raised.value)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n    HostName 34.78.2.10\n" in ours
    assert "Host course-vm-bob\n    HostName 34.78.1.11\n" in ours, "bob's entry is left as it was"


def test_an_update_that_failed_before_any_step_is_the_engines_error_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = exported_deployment("dev", class_outputs("alice"))
    failure = {"events": program_failed(), "deployment": state}  # no step: no `update failed` either
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=create("alice", "bob"), fail={"up": failure})
    with pytest.raises(EngineRunError) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert not isinstance(raised.value, PartialUpError)
    assert str(raised.value).startswith(
        "Pulumi could not update stack dev:\n  error: Program failed with an unhandled exception:\n  ValueError: boom\n"
    )
    assert not hosts_file().exists()


def test_a_stack_with_one_vm_whose_update_failed_is_the_engines_error_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    failure = {"events": update_events({"": "failed: " + NOT_READY}),
               "deployment": exported_deployment("dev", one_vm())}  # fmt: skip
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, fail={"up": failure})
    with pytest.raises(EngineRunError) as raised:
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert not isinstance(raised.value, PartialUpError)
    assert not hosts_file().exists()
    assert recorded_verifications("dev") == {"": Verification(Result.FAILED, "2026-11-27T14:00:00Z", NOT_READY.strip())}


def test_up_returns_the_stacks_vms_as_its_state_has_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=CREATE, next_outputs=one_vm(),
             update_events=update_events({"": "passed"}))  # fmt: skip
    outputs = up("dev", UpOptions(), confirm=yes, on_output=print)
    assert isinstance(outputs, StackOutputs) and not outputs.is_class
    assert outputs.vms[""].ssh_command == one_vm()["sshCommand"]
    assert recorded_verifications("dev") == {"": Verification(Result.PASSED, "2026-11-27T14:00:00Z")}


def test_set_stores_each_setting_a_list_as_a_list_and_an_empty_value_removes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = {"dev": {**STACK_CONFIG, "course-vm:spot": "true"}}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, config=config, events=CREATE, next_outputs=one_vm())
    roster = tmp_path / "class" / "roster.csv"
    roster.parent.mkdir()
    roster.write_text("name\nana\n")
    monkeypatch.chdir(roster.parent)
    sets = ["autoStopIdleMinutes=0", "forwardPorts=[8888, 3000]", "spot=", "studentsCsv=roster.csv"]
    up("dev", UpOptions(sets=settings_given(sets)), confirm=yes, on_output=print)
    stored = pulumi.config("dev")
    assert stored["course-vm:autoStopIdleMinutes"] == "0"
    assert stored["course-vm:forwardPorts"] == '["8888", "3000"]'
    assert "course-vm:spot" not in stored
    # A relative path is the working directory's, kept as its absolute path: any later `up` finds the same file.
    assert stored["course-vm:studentsCsv"] == str(roster)
    assert pulumi.verbs()[:5] == ["stack export", "config", "stack select", "config rm", "config rm"]


def test_a_bad_set_is_refused_with_every_other_problem_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, config={"dev": {}}, events=CREATE)
    argv = ["up", "--project", "My_Proj", "--allow", "", "--set", "spot=maybe", "--set", "nosuch=1", "--set", "x"]
    assert main(argv) == ExitStatus.BAD_INPUT
    assert "--set 'x': expected KEY=VALUE" in capsys.readouterr().err
    assert main(argv[:-2]) == ExitStatus.BAD_INPUT
    err = capsys.readouterr().err
    for said in (
        "gcp:project: got 'My_Proj', but it is not a GCP project ID. Fix: `course-vm up --project YOUR-PROJECT-ID`",
        "gcp:zone: not set. Fix: `course-vm up --zone europe-west1-b`",
        "allowedSshCidrs[0]: got '', but it has no address before the slash",
        "spot: got 'maybe', but it must be true or false. Fix: `course-vm up --set spot=false`",
        "nosuch: got '1', but course-vm has no such setting. Fix: `course-vm up --set nosuch=` (which removes it)",
        "Windows PowerShell `(Invoke-RestMethod https://checkip.amazonaws.com).Trim()`",
    ):
        assert said in err, err
    assert pulumi.verbs() == [], "nothing read with the Pulumi CLI, nothing stored"
    assert pulumi.config("dev") == {}


def test_settings_only_the_pulumi_cli_can_read_are_checked_before_anything_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A secret in the stack file is ciphertext there: the CLI's reading of the settings is checked instead.
    config = {"dev": {**STACK_CONFIG, "course-vm:diskSizeGb": "5"}}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, config=config, secrets={"dev": ["gcp:project"]})
    with pytest.raises(SettingsError, match=r"diskSizeGb: got '5', .* Fix: `course-vm up --set diskSizeGb=30`"):
        up("dev", UpOptions(zone="europe-west1-c"), confirm=yes, on_output=print)
    assert pulumi.verbs() == ["stack export", "config"]
    assert pulumi.config("dev")["gcp:zone"] == "europe-west1-b", "the refused options were not stored"


def test_an_update_interrupted_while_only_verifications_ran_is_said_to_have_made_the_vms() -> None:
    vm, check = "urn:pulumi:dev::course-vm::gcp:compute/instance:Instance::vm", "urn:pulumi:dev::course-vm::v::verify"

    def step(kind: StepKind, urn: str, type_: str) -> Step:
        return Step(kind, OpType.CREATE, urn, type_, "", 0)

    made = [step(StepKind.PRE, vm, "gcp:compute/instance:Instance"), step(StepKind.OUTPUTS, vm, "x")]
    verifying_now = EngineLog((*made, step(StepKind.PRE, check, VERIFICATION_TYPE)))
    assert verifying(verifying_now)
    assert not verifying(EngineLog(tuple(made[:1])))  # the VM itself was being made
    assert not verifying(EngineLog(tuple(made)))  # nothing was running
    said = interrupted_up("fall", "verification", UpOptions())
    assert said == (
        "interrupted: the VMs were made; Pulumi stopped while checking them (their setup goes on). `course-vm up "
        "--stack fall` checks them again and finishes the job; `course-vm down --stack fall` removes them"
    )


def test_config_change_stores_an_empty_list_as_such_and_set_ranges_as_allow() -> None:
    stored = StackConfig({"course-vm:allowedSshCidrs": '["203.0.113.7/32"]', "course-vm:spot": "true"})
    change = config_change(stored, UpOptions(sets={"forwardPorts": "[]", "spot": "", "gcp:zone": "europe-west1-c"}))
    # No item would leave forwardPorts unset, and so Jupyter's and MLflow's ports forwarded after all.
    assert change.values == {"course-vm:forwardPorts": "[]", "gcp:zone": "europe-west1-c"}
    assert change.removed == ["course-vm:spot"]
    assert change.lists == {}
    both = config_change(stored, UpOptions(added=["198.51.100.0/24"], sets={"allowedSshCidrs": '["192.0.2.0/24"]'}))
    assert both.lists == {"allowedSshCidrs": ["192.0.2.0/24", "198.51.100.0/24"]}


def test_a_list_item_is_fixed_where_it_was_given() -> None:
    step = SetKey("students", "alice-2", 1)
    assert up_words("fall", given=["students"])(step) == "make item 1 of your --set students=[...] alice-2"
    assert up_words("fall")(step) == "pulumi config set --path 'students[1]' alice-2"  # a stored list


def test_ctrl_c_while_the_stack_is_made_says_no_empty_options() -> None:
    assert interrupted_up("dev", "store", UpOptions()) == (
        "interrupted: nothing was changed in the cloud. `course-vm up` starts again"
    )
    assert interrupted_up("dev", "store", UpOptions(zone="europe-west1-c")) == (
        "interrupted: nothing was changed in the cloud; the stack's settings may keep some of what --zone gave. "
        "`course-vm up` starts again"
    )


def test_an_iap_set_without_pulumi_names_gclouds_own_login_among_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    told: list[bool] = []

    def ready(iap: bool) -> None:
        told.append(iap)
        raise MissingPrerequisiteError("lacking")

    options = UpOptions("course-project-1", "europe-west1-b", sets={"sshAccess": "iap"})
    with pytest.raises(MissingPrerequisiteError):
        up("dev", options, confirm=yes, ready=ready, on_output=print)
    assert told == [True]
