"""A preview's steps summed up per VM: what each student gains or loses, and what the VMs share."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioner.driver.events import parse_events
from provisioner.driver.plan import Action, HomeDisk, Plan, VmChange, failed_students, plan_of
from tests.support.pulumi_events import (
    COURSE_VM,
    SHARED,
    STUDENT_VM,
    VM_CHILDREN,
    error_diagnostic,
    preview_events,
    step,
    update_events,
    urn,
)

COURSE = urn("dev", [COURSE_VM], "course-vm")


def plan(vms: dict[str, dict[str, str]], shared: str = "same") -> Plan:
    return of(preview_events(vms, shared=shared))


def of(events: list[dict[str, Any]]) -> Plan:
    return plan_of(parse_events(json.dumps(event) for event in events))


@pytest.mark.parametrize(
    ("ops", "action"),
    [
        ({"self": "create", "ip": "create", "vm": "create", "verify": "create"}, Action.CREATE),
        ({"self": "delete", "ip": "delete", "vm": "delete"}, Action.DELETE),
        ({"ip": "same", "vm": "same", "verify": "same"}, Action.SAME),
        ({"ip": "update", "vm": "same"}, Action.UPDATE),
        ({"vm": "update"}, Action.UPDATE),
        ({"self": "update"}, Action.UPDATE),
        ({"ip": "same", "vm": "replace", "verify": "replace"}, Action.REPLACE),
        ({"vm": "delete"}, Action.REPLACE),
        ({"vm": "create"}, Action.REPLACE),
        ({"verify": "replace"}, Action.UPDATE),
    ],
)
def test_each_vm_gets_one_action_from_its_steps(ops: dict[str, str], action: Action) -> None:
    assert plan({"alice": ops}).vms == (VmChange("alice", action, None),)


def test_each_replacement_is_one_whatever_the_order_of_its_steps() -> None:
    # The instance is replaced delete-before-replace (its verification deleted first), the home disk
    # create-before-delete with its old half deleted last of all: several steps on one URN each.
    events = preview_events({"": {"home": "replace", "vm": "replace", "verify": "replace"}})
    steps = [e["resourcePreEvent"]["metadata"] for e in events if "resourcePreEvent" in e]
    ops = [(m["urn"].rsplit("::", 1)[-1], m["op"]) for m in steps if m["op"] != "same"]
    assert ops == [
        ("course-vm-home", "create-replacement"), ("course-vm-home", "replace"),
        ("course-vm-verify", "delete-replaced"), ("course-vm-vm", "delete-replaced"),
        ("course-vm-vm", "replace"), ("course-vm-vm", "create-replacement"),
        ("course-vm-verify", "replace"), ("course-vm-verify", "create-replacement"),
        ("course-vm-home", "delete-replaced"),
    ]  # fmt: skip
    assert of(events).vms == (VmChange("", Action.REPLACE, HomeDisk.LOST),)


@pytest.mark.parametrize(
    ("home", "fate"),
    [
        ("same", HomeDisk.KEPT),
        ("update", HomeDisk.KEPT),
        ("create", HomeDisk.CREATED),
        ("replace", HomeDisk.LOST),
        ("delete", HomeDisk.LOST),
    ],
)
def test_a_home_disk_is_kept_created_or_lost(home: str, fate: HomeDisk) -> None:
    [vm] = plan({"": {"vm": "replace", "home": home}}).vms
    assert (vm.action, vm.home_disk) == (Action.REPLACE, fate)


def test_a_vm_without_a_home_disk_has_no_fate_for_it() -> None:
    assert plan({"": {"vm": "replace"}}).vms[0].home_disk is None


def test_a_class_plan_is_by_student_in_name_order() -> None:
    result = plan({"carol": {"self": "delete", "vm": "delete", "home": "delete"}, "alice": {"self": "create"},
                   "bob": {"vm": "replace"}, "dave": {"vm": "same"}})  # fmt: skip
    assert result.vms == (
        VmChange("alice", Action.CREATE, None),
        VmChange("bob", Action.REPLACE, None),
        VmChange("carol", Action.DELETE, HomeDisk.LOST),
        VmChange("dave", Action.SAME, None),
    )
    assert result.changes
    assert result.created == 1, "a replaced VM is deleted first: it adds nothing"
    assert result.students() == ["alice", "bob", "carol", "dave"]
    assert result.students(Action.UPDATE, Action.REPLACE) == ["bob"]


def test_shared_resources_that_change_are_named_apart_from_the_vms() -> None:
    result = plan({"": {"vm": "same"}}, shared="update")
    assert result.shared == (("course-vm-network", Action.UPDATE), ("course-vm-ssh", Action.UPDATE))
    assert result.vms == (VmChange("", Action.SAME, None),)
    assert result.changes
    assert plan({"": {"vm": "same"}}).shared == ()


def test_a_plan_without_changes_says_so() -> None:
    result = plan({"": {"ip": "same", "vm": "same"}})
    assert not result.changes
    assert result.created == 0
    assert not Plan(()).changes


def test_an_op_this_sdk_does_not_know_is_a_change_and_a_known_read_is_none() -> None:
    vm_urn = urn("dev", [COURSE_VM, STUDENT_VM], "course-vm-alice")
    child = [COURSE_VM, STUDENT_VM, VM_CHILDREN["ip"]]
    unknown = [
        step("same", [COURSE_VM, STUDENT_VM], "course-vm-alice", COURSE),
        step("read-discard", child, "x", vm_urn),
    ]
    assert of(unknown).vms == (VmChange("alice", Action.UPDATE, None),)
    read = [step("same", [COURSE_VM, STUDENT_VM], "course-vm-alice", COURSE), step("read", child, "x", vm_urn)]
    assert of(read).vms == (VmChange("alice", Action.SAME, None),)
    outside = [step("frobnicate", [COURSE_VM, "gcp:compute/router:Router"], "course-vm-nat", COURSE)]
    assert of(outside).shared == (("course-vm-nat", Action.UPDATE),)


def test_a_vm_is_found_by_its_resources_urns_when_its_component_reports_no_step() -> None:
    events = preview_events({"bob": {"vm": "replace", "home": "same"}})
    without = [e for e in events if e.get("resourcePreEvent", {}).get("metadata", {}).get("type") != STUDENT_VM]
    assert of(without).vms == (VmChange("bob", Action.REPLACE, HomeDisk.KEPT),)


def test_steps_after_the_preview_are_not_the_plan() -> None:
    # An update's events: only the steps about to run count, not their outputs or failures.
    assert of(update_events({"alice": "passed", "bob": "same", "carol": "failed: no"})).vms == (
        VmChange("alice", Action.UPDATE, None),  # its verification runs again: a create under the VM
        VmChange("bob", Action.SAME, None),
        VmChange("carol", Action.UPDATE, None),
    )


# Whose VM an update failed for: from its events, since a failed update keeps the old outputs.

NOT_READY = "the VM is not ready"


def test_the_students_whose_vm_failed_are_named_by_their_failed_steps() -> None:
    verified = {"alice": "passed", "bob": "failed: " + NOT_READY, "carol": "failed: " + NOT_READY, "dave": "same"}
    log = parse_events(json.dumps(e) for e in update_events(verified))
    assert failed_students(log) == {"bob", "carol"}


def test_a_stack_with_one_vm_that_failed_is_named_by_no_name() -> None:
    log = parse_events(json.dumps(e) for e in update_events({"": "failed: " + NOT_READY}))
    assert failed_students(log) == {""}


def test_an_error_naming_a_resource_of_a_vm_names_its_student() -> None:
    vm_urn = urn("dev", [COURSE_VM, STUDENT_VM], "course-vm-bob")
    instance = urn("dev", [COURSE_VM, STUDENT_VM, VM_CHILDREN["vm"]], "course-vm-bob-vm")
    events = [step("same", [COURSE_VM, STUDENT_VM], "course-vm-bob", COURSE),
              step("create", [COURSE_VM, STUDENT_VM, VM_CHILDREN["vm"]], "course-vm-bob-vm", vm_urn),
              {"diagnosticEvent": {"message": "quota", "severity": "error", "urn": instance}}]  # fmt: skip
    assert failed_students(parse_events(json.dumps(e) for e in events)) == {"bob"}


def test_errors_of_the_program_or_shared_resources_name_no_student() -> None:
    shared = preview_events({}, shared="update")
    network = urn("dev", [COURSE_VM, SHARED["network"]], "course-vm-network")
    events = [*shared, error_diagnostic("the program failed"),
              {"diagnosticEvent": {"message": "no", "severity": "error", "urn": network}}]  # fmt: skip
    assert failed_students(parse_events(json.dumps(e) for e in events)) == set()


@pytest.mark.parametrize("member", [*Action, *HomeDisk])
def test_an_action_and_a_home_disks_fate_read_as_their_value(member: Action | HomeDisk) -> None:
    # What `up` prints (f"{action}"): the value, as enum.StrEnum gives it on 3.11, on Python 3.10 too.
    assert str(member) == f"{member}" == member.value
    assert json.dumps(member) == f'"{member.value}"'
