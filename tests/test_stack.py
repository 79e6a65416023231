"""What the program leaves in a stack for others to read: names, URNs, and the outputs parsed once into records."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.errors import CourseVmError, ExitStatus
from provisioner.recipe.names import student_name_problem
from provisioner.stack import (
    StackOutputs,
    VmOutputs,
    command,
    role_of,
    student_of,
    urn_name,
    urn_type,
    vm_exports,
)
from tests.support.outputs import HOST_KEY, IAP, class_outputs, one_vm, vm_outputs
from tests.support.pulumi_events import COURSE_VM, STUDENT_VM, VM_CHILDREN, urn

COURSE_URN = urn("dev", [COURSE_VM], "course-vm")


def parsed(root: dict[str, Any], **given: Any) -> StackOutputs:
    return StackOutputs.parse(root, student_name_problem, **given)


def test_a_command_names_the_stack_only_when_it_is_not_the_default() -> None:
    assert command("up", "dev") == "course-vm up"
    assert command("handout", "fall") == "course-vm handout --stack fall"


def test_a_urn_names_its_type_and_name_and_a_vm_its_student() -> None:
    alice = urn("dev", [COURSE_VM, STUDENT_VM], "course-vm-alice")
    assert (urn_type(alice), urn_name(alice)) == (STUDENT_VM, "course-vm-alice")
    assert urn_type("not a urn") == ""
    assert student_of(alice, COURSE_URN) == "alice"
    assert student_of(urn("dev", [COURSE_VM, STUDENT_VM], "course-vm"), COURSE_URN) == "", "a stack's one VM"
    assert student_of(alice, "") == "alice", "no parent known: the CourseVm's name"


@pytest.mark.parametrize(
    ("name", "type_", "role"),
    [
        ("course-vm-alice-vm", VM_CHILDREN["vm"], ("alice", "vm")),
        ("course-vm-alice-verify", VM_CHILDREN["verify"], ("alice", "verify")),
        ("course-vm-vm", VM_CHILDREN["vm"], ("", "vm")),
        ("course-vm-verify", VM_CHILDREN["verify"], ("", "verify")),
        ("course-vm-alice-ip", VM_CHILDREN["ip"], None),
        ("course-vm-alice-home", VM_CHILDREN["home"], None),
        ("course-vm-alice-vm", VM_CHILDREN["verify"], None),
    ],
)
def test_a_vms_instance_and_verification_are_known_by_name_and_type(
    name: str, type_: str, role: tuple[str, str] | None
) -> None:
    assert role_of(urn("dev", [COURSE_VM, STUDENT_VM, type_], name), type_) == role


# VmOutputs: one VM, by the output keys the program exports (tests/gcp/test_course_vm.py checks the builder).


def test_a_vms_outputs_are_read_into_their_fields() -> None:
    vm = VmOutputs.parse(vm_outputs("alice"))
    assert (vm.ip, vm.username, vm.identity_file) == ("34.78.1.2", "alice", "/home/me/.ssh/course-vm-alice")
    assert (vm.instance_name, vm.zone) == ("course-vm-alice-vm-1a2b3c", "europe-west1-b")
    assert vm.host_keys == (HOST_KEY,)
    assert vm.known_hosts_file == "/home/me/.ssh/course-vm-alice.dev.known_hosts"
    assert vm.host_key_fingerprint == "SHA256:fingerprint"
    assert vm.ssh_config.startswith("Host course-vm-alice\n")
    assert vm.ssh_command.startswith("ssh -i /home/me/.ssh/course-vm-alice ")
    assert (vm.iap, vm.ssh_host, vm.proxy_command) == (False, "34.78.1.2", "")


def test_an_iap_vm_is_reached_by_its_instance_name() -> None:
    vm = VmOutputs.parse(vm_outputs(iap=True))
    assert (vm.iap, vm.ip, vm.ssh_host, vm.proxy_command) == (True, "10.42.0.2", "course-vm-vm-1a2b3c", IAP)


def test_keys_a_vm_lacks_are_empty_and_values_of_another_type_strings() -> None:
    assert VmOutputs.parse({}) == VmOutputs()
    assert VmOutputs() == VmOutputs(ip="", host_keys=())
    vm = VmOutputs.parse({"ip": 3, "zone": None, "hostKeys": "ssh-ed25519 AAAA", "username": ["a"]})
    assert (vm.ip, vm.zone, vm.host_keys, vm.username) == ("3", "", (), "['a']")
    assert VmOutputs.parse({"hostKeys": ("a", 1)}).host_keys == ("a", "1")


def test_vm_exports_are_the_output_keys_of_the_fields_given() -> None:
    assert vm_exports(ip="34.78.1.2", identity_file="/k", host_keys=["a"]) == {
        "ip": "34.78.1.2",
        "identityFile": "/k",
        "hostKeys": ["a"],
    }
    with pytest.raises(TypeError, match=r"^no VM output hostname, ipAddress$"):
        vm_exports(ip="x", ipAddress="y", hostname="z")


def test_what_vm_exports_writes_is_what_vm_outputs_reads() -> None:
    vm = VmOutputs.parse(vm_outputs("alice"))
    assert VmOutputs.parse(vm_exports(**{name: getattr(vm, name) for name in vm.__dataclass_fields__})) == vm


# StackOutputs: one shape for a stack's one VM and for a class.


def test_a_stack_with_one_vm_is_that_vm_under_no_name() -> None:
    outputs = parsed(one_vm())
    assert (outputs.project, outputs.is_class, list(outputs.vms)) == ("course-project-1", False, [""])
    assert outputs.vms[""] == VmOutputs.parse(vm_outputs())
    assert outputs.unfinished == frozenset()


def test_a_class_is_its_vms_by_student_in_the_outputs_order() -> None:
    outputs = parsed(class_outputs("bob", "alice"))
    assert (outputs.is_class, list(outputs.vms)) == (True, ["bob", "alice"])
    assert outputs.vms["alice"].ip == "34.78.1.11"


def test_a_stack_without_outputs_has_no_vm() -> None:
    assert parsed({}) == StackOutputs()
    assert parsed({"project": "p"}) == StackOutputs(project="p")
    assert parsed({"username": "student"}).vms == {}, "a stack's one VM has an address"
    assert parsed({"students": {}}).is_class is False


def test_the_state_gives_the_project_the_outputs_name_none_of() -> None:
    assert parsed({"students": {}}, project="from-state").project == "from-state"
    assert parsed(class_outputs("alice"), project="from-state").project == "course-project-1"


def test_each_vm_is_read_as_its_own_outputs_in_the_state_have_it() -> None:
    # The stack's outputs are the last successful update's: dave has left since, alice got a new address,
    # bob's VM is new; carol's first update did not finish.
    stale = class_outputs("alice", "dave")
    now = class_outputs("alice", "bob")["students"]
    now["alice"]["ip"] = "34.78.2.10"
    outputs = parsed(stale, own=now, unfinished=frozenset({"carol"}))
    assert list(outputs.vms) == ["alice", "bob"]
    assert outputs.vms["alice"].ip == "34.78.2.10"
    assert outputs.unfinished == {"carol"}
    assert outputs.is_class


def test_a_first_up_that_failed_is_a_class_of_the_vms_that_finished() -> None:
    outputs = parsed({}, own={"alice": vm_outputs("alice")}, unfinished=frozenset({"bob"}))
    assert (outputs.is_class, list(outputs.vms), outputs.unfinished) == (True, ["alice"], frozenset({"bob"}))
    assert parsed({}, own={}, unfinished=frozenset({"bob"})).is_class, "bob's VM is there: the stack is a class"


def test_a_stack_with_one_vm_is_read_as_its_state_has_it() -> None:
    fresher = vm_outputs(ip="34.78.9.9")
    outputs = parsed(one_vm(), own={"": fresher})
    assert (outputs.is_class, outputs.vms[""].ip, outputs.project) == (False, "34.78.9.9", "course-project-1")
    assert parsed({}, own={"": fresher}).vms[""] == VmOutputs.parse(fresher), "a first up that failed later on"


NOT_A_NAME = "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("..", NOT_A_NAME),
        ("", NOT_A_NAME),
        ("a/b", NOT_A_NAME),
        ("root", "that name belongs to the system or grants extra rights"),
        ("con", "that name cannot be a folder's name on Windows (it names a device there), and each hand-out is one"),
    ],
)
def test_a_student_name_no_roster_can_hold_in_the_outputs_is_refused(name: str, why: str) -> None:
    # Every command reads the VMs through StackOutputs, so a name written into the stack's outputs or
    # state by someone else (`..` would make the hand-out folder `--out/..`) reaches none of them.
    outputs = {"students": {"alice": vm_outputs("alice"), name: vm_outputs()}}
    with pytest.raises(CourseVmError) as raised:
        parsed(outputs)
    assert str(raised.value) == (
        f"the stack's outputs name a student {name!r}, which is no student's name ({why}): someone changed the "
        "stack's outputs or state, so course-vm acts on none of its VMs. Fix: check who else can write to the "
        "stack's Pulumi backend, then run `course-vm up` for the stack to write its outputs again from the roster"
    )
    assert raised.value.exit_code == ExitStatus.BAD_INPUT


def test_a_refused_name_in_the_state_alone_is_refused_too() -> None:
    with pytest.raises(CourseVmError, match=r"^the stack's outputs name a student '\.\.', which is no student"):
        parsed({}, own={"alice": vm_outputs("alice"), "..": vm_outputs()})


def test_a_long_refused_name_is_shown_cut_short() -> None:
    name = "x" * 100
    with pytest.raises(CourseVmError) as raised:
        parsed({"students": {name: vm_outputs()}})
    assert str(raised.value).startswith(f"the stack's outputs name a student '{'x' * 36}..., which is no student's")


@pytest.mark.parametrize("students", [["alice"], "alice"])
def test_students_that_are_no_mapping_are_refused(students: object) -> None:
    with pytest.raises(CourseVmError) as raised:
        parsed({"students": students})
    assert str(raised.value).startswith(
        "the stack's `students` output is no mapping of names to VMs: someone changed the stack's outputs or state"
    )


# What the commands ask of the VMs: some to act on, and those of the students named.


def test_a_stack_without_a_vm_to_act_on_says_to_run_up_first() -> None:
    with pytest.raises(CourseVmError) as raised:
        parsed({}).require_vms("dev")
    assert str(raised.value) == (
        "the stack has no ip, username, identityFile output. Fix: `course-vm up --stack dev` first"
    )
    with pytest.raises(
        CourseVmError, match=r"^the stack has no identityFile output\. Fix: `course-vm up --stack fall`"
    ):
        parsed({**one_vm(), "identityFile": ""}).require_vms("fall")


def test_a_stack_with_its_vm_or_a_class_has_vms_to_act_on() -> None:
    parsed(one_vm()).require_vms("dev")
    parsed(class_outputs("alice")).require_vms("dev")


def test_a_class_whose_first_up_finished_for_no_student_has_no_vm_to_act_on() -> None:
    # check would pass "0 of 0 VMs ready", handout write nothing, start and stop ask for a token for none.
    outputs = parsed({}, own={}, unfinished=frozenset({"bob"}))
    assert outputs.is_class and not outputs.vms
    with pytest.raises(CourseVmError) as raised:
        outputs.require_vms("fall")
    assert str(raised.value) == (
        "the stack has no ip, username, identityFile output. Fix: `course-vm up --stack fall` first"
    )


def test_chosen_are_every_vm_or_those_of_the_students_named() -> None:
    outputs = parsed(class_outputs("alice", "bob", "carol"))
    assert list(outputs.chosen(None, "dev")) == ["alice", "bob", "carol"]
    assert list(outputs.chosen(["carol", "alice"], "dev")) == ["carol", "alice"]
    assert outputs.chosen(["bob"], "dev") == {"bob": outputs.vms["bob"]}


def test_a_student_without_a_vm_is_told_why_that_can_be() -> None:
    outputs = parsed(class_outputs("alice", "bob"))
    with pytest.raises(CourseVmError) as raised:
        outputs.chosen(["carol", "dave"], "fall")
    assert str(raised.value) == (
        "no student carol, dave among the stack's VMs. Fix: one of alice, bob (a student just added to the "
        "roster, or whose VM's first `course-vm up` did not finish, has none yet: run `course-vm up --stack fall`)"
    )


def test_a_student_named_in_a_stack_with_one_vm_is_told_it_is_no_class() -> None:
    with pytest.raises(CourseVmError) as raised:
        parsed(one_vm()).chosen(["alice"], "dev")
    assert str(raised.value).startswith(
        "no student alice among the stack's VMs. Fix: one of (none: the stack is not a class) (a student"
    )
    assert str(raised.value).endswith("has none yet: run `course-vm up`)")


def test_a_vms_ports_and_agent_are_read_and_a_stack_from_before_forwards_jupyter_alone() -> None:
    vm = VmOutputs.parse(vm_outputs(forwards=["8888", "5001:5000"], forward_agent=True))
    assert (vm.forward_ports, vm.forward_agent) == (("8888", "5001:5000"), True)
    before = {key: value for key, value in vm_outputs().items() if key not in ("forwardPorts", "forwardAgent")}
    assert (VmOutputs.parse(before).forward_ports, VmOutputs.parse(before).forward_agent) == (("8888",), False)
    # From the state, where anyone who can write it can write anything: only a real true forwards the agent.
    assert VmOutputs.parse({**before, "forwardAgent": "yes"}).forward_agent is False
