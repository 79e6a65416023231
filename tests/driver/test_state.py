"""One walk of `pulumi stack export`: each VM's own outputs, the VMs that did not finish, what each VM has now."""

from __future__ import annotations

from typing import Any

from provisioner.driver.state import SECRET_SIG, SECRET_SIG_KEY, StackState, plain, walk
from provisioner.gcp.quotas import Existing
from provisioner.recipe.names import student_name_problem
from provisioner.stack import StackOutputs, VmOutputs
from tests.support.outputs import class_outputs, one_vm, vm_outputs
from tests.support.pulumi_state import exported_deployment


def walked(outputs: dict[str, Any], **given: Any) -> StackState:
    """The walk of what `stack export` prints for a stack whose VMs' outputs are OUTPUTS (see exported_deployment)."""
    return walk(exported_deployment("dev", outputs, **given)["deployment"])


def test_a_stack_with_one_vm_is_read_the_same_through_its_state() -> None:
    state = walked(one_vm())
    assert state.own == {"": one_vm()}, "the StudentVm's own outputs"
    assert (state.unfinished, state.project) == (frozenset(), "course-project-1")
    assert state.outputs(student_name_problem) == StackOutputs.parse(one_vm(), student_name_problem)


def test_a_vms_own_outputs_are_fresher_than_the_stacks() -> None:
    # A later update failed at the verification: Pulumi kept the stack's outputs, the StudentVm registered its own.
    state = walked(one_vm(ip="34.78.9.9"), root=one_vm())
    assert state.root == one_vm()
    assert state.outputs(student_name_problem).vms[""].ip == "34.78.9.9"


def test_a_class_is_read_vm_by_vm_as_its_state_has_it() -> None:
    stale = class_outputs("alice", "dave")  # dave left the class: his VM was deleted
    now = class_outputs("alice", "bob")
    now["students"]["alice"]["ip"] = "34.78.2.10"
    state = walked(now, root=stale, unfinished=("carol",))
    assert state.unfinished == frozenset({"carol"})
    assert state.own == now["students"]
    outputs = state.outputs(student_name_problem)
    assert outputs.vms == {name: VmOutputs.parse(vm) for name, vm in now["students"].items()}
    assert (outputs.project, outputs.unfinished, outputs.is_class) == ("course-project-1", frozenset({"carol"}), True)


def test_a_first_up_that_failed_leaves_the_vms_that_finished_in_the_state_alone() -> None:
    state = walked(class_outputs("alice"), root={}, unfinished=("bob",))
    assert state.root == {}
    outputs = state.outputs(student_name_problem)
    assert (list(outputs.vms), outputs.unfinished, outputs.project) == (
        ["alice"],
        frozenset({"bob"}),
        "course-project-1",
    )


def test_names_are_every_student_the_state_names_a_vm_of() -> None:
    state = walked(class_outputs("alice", "bob"), root=class_outputs("alice", "dave"), unfinished=("carol",))
    assert state.names() == {"alice", "bob", "carol", "dave"}
    assert walked(one_vm()).names() == {""}
    assert walked({}).names() == set()
    # Unchecked: for looking Host entries up by, never for a folder.
    assert walked({"students": {"..": vm_outputs()}}).names() == {".."}


def test_a_secret_in_the_state_is_read_as_the_cli_writes_it() -> None:
    sig = {SECRET_SIG_KEY: SECRET_SIG}
    vm = {
        **one_vm(),
        "username": {**sig, "plaintext": '"student"'},
        "sshCommand": {**sig, "ciphertext": "v1:abc"},
        "zone": {**sig, "plaintext": "not JSON"},
        "hostKeys": {**sig, "plaintext": '["ssh-ed25519 AAAA"]'},
    }
    state = walked(vm)
    assert state.own is not None
    own = state.own[""]
    assert own["username"] == "student", "--show-secrets: the value's JSON text"
    assert own["hostKeys"] == ["ssh-ed25519 AAAA"]
    assert own["sshCommand"] is None, "without: nothing to read"
    assert own["zone"] is None


def test_plain_reads_secrets_at_any_depth_and_leaves_the_rest() -> None:
    secret = {SECRET_SIG_KEY: SECRET_SIG, "plaintext": '{"a": [1, "b"]}'}
    assert plain({"x": [secret, {"y": secret}], "z": 3}) == {"x": [{"a": [1, "b"]}, {"y": {"a": [1, "b"]}}], "z": 3}
    assert plain({SECRET_SIG_KEY: "another signature", "plaintext": '"x"'}) == {
        SECRET_SIG_KEY: "another signature",
        "plaintext": '"x"',
    }


def test_what_each_vm_has_now_is_its_machine_and_its_disks() -> None:
    students = {name: vm_outputs(name) for name in ("alice", "bob", "carol")}
    state = walked({"students": students}, machines={"alice": ("e2-standard-4", 30), "bob": ("e2-standard-2", 40)})
    assert state.existing["alice"] == Existing("e2-standard-4", 30)
    assert state.existing["bob"] == Existing("e2-standard-2", 40)
    assert state.existing["carol"] == Existing("e2-standard-4", 30), "the default of exported_deployment"
    assert state.existing_of(["bob", "dave", "alice"]) == [Existing("e2-standard-2", 40), Existing("e2-standard-4", 30)]


def test_a_home_disk_counts_and_a_machine_type_is_named_by_its_last_part() -> None:
    deployment = exported_deployment("dev", class_outputs("alice"))["deployment"]
    instance = next(r for r in deployment["resources"] if r["urn"].endswith("::course-vm-alice-vm"))
    instance["outputs"]["machineType"] = "https://www.googleapis.com/compute/v1/projects/p/zones/z/machineTypes/n2-x"
    home = {**instance, "urn": instance["urn"].replace("instance:Instance::course-vm-alice-vm", "disk:Disk::home"),
            "type": "gcp:compute/disk:Disk", "outputs": {"size": 50}}  # fmt: skip
    deployment["resources"].append(home)
    assert walk(deployment).existing == {"alice": Existing("n2-x", 80)}


def test_an_instance_of_another_shape_is_not_compared() -> None:
    deployment = exported_deployment("dev", class_outputs("alice", "bob"))["deployment"]
    bob = next(r for r in deployment["resources"] if r["urn"].endswith("::course-vm-bob-vm"))
    del bob["outputs"]["machineType"]
    state = walk(deployment)
    assert state.existing == {"alice": Existing("e2-standard-4", 30)}


def test_resources_being_deleted_are_left_out() -> None:
    deployment = exported_deployment("dev", class_outputs("alice", "bob"))["deployment"]
    for resource in deployment["resources"]:
        if "course-vm-bob" in resource["urn"]:
            resource["delete"] = True
    state = walk(deployment)
    assert state.own is not None and list(state.own) == ["alice"]
    assert list(state.existing) == ["alice"]


def test_a_state_of_no_vm_or_another_layout_is_no_state_of_vms() -> None:
    assert walked({}).own is None
    assert walk({}) == StackState()
    odd = {"resources": [{"urn": "x", "type": "pulumi:pulumi:Stack", "outputs": "no mapping"}, "no resource"]}
    assert walk(odd) == StackState()
    # Another program's state: its stack's outputs are still the stack's outputs.
    other = {"resources": [{"urn": "urn:pulumi:dev::other::pulumi:pulumi:Stack::other-dev",
                            "type": "pulumi:pulumi:Stack", "outputs": one_vm()}]}  # fmt: skip
    state = walk(other)
    assert state.own is None
    assert state.outputs(student_name_problem) == StackOutputs.parse(one_vm(), student_name_problem)


def test_an_instance_deleted_before_its_replacement_is_no_longer_the_vms() -> None:
    # Replaced delete-before-replace, the old instance stays in the state, marked pendingReplacement, once
    # deleted; an update that then failed to create the new one leaves it so. The VM has no instance now.
    deployment = exported_deployment("dev", class_outputs("alice", "bob"))["deployment"]
    for resource in deployment["resources"]:
        if resource["urn"].endswith("::course-vm-bob-vm"):
            resource["pendingReplacement"] = True
    state = walk(deployment)
    assert state.own is not None and list(state.own) == ["alice", "bob"]
    assert list(state.existing) == ["alice"]
