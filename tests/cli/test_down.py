"""`down` through the stand-in Pulumi CLI, in this process: the deletion previewed, confirmed, done, and let go of."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.access.keys import claim_keys, key_claims
from provisioner.access.ssh_config import hosts_file
from provisioner.cli.down import down
from provisioner.cli.up import PartialUpError, up
from provisioner.cli.up_options import UpOptions
from provisioner.driver.plan import Action, HomeDisk, Plan, VmChange
from provisioner.driver.session import StackSession
from provisioner.driver.verifications import recorded_verifications
from provisioner.errors import CourseVmError
from provisioner.stack import StackOutputs
from tests.support.outputs import class_outputs, one_vm
from tests.support.pulumi_events import preview_events, update_events
from tests.support.pulumi_state import STACK_CONFIG, exported_deployment
from tests.support.stand_in_pulumi import stand_in_here

GONE = preview_events({"": {"self": "delete", "ip": "delete", "vm": "delete", "home": "delete"}})


def yes(plan: Plan) -> bool:
    return True


def up_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outputs: dict[str, Any], stack: str = "dev") -> None:
    """A first `up` of STACK that made OUTPUTS (and wrote their entries)."""
    students = outputs.get("students") or {"": outputs}
    events = preview_events({name: {"self": "create", "vm": "create"} for name in students})
    stand_in_here(tmp_path, monkeypatch, {stack: {}}, events=events, next_outputs=outputs,
             update_events=update_events(dict.fromkeys(students, "passed")))  # fmt: skip
    up(stack, UpOptions(), confirm=yes, on_output=print)


def test_down_shows_the_plan_and_a_no_deletes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up_first(tmp_path, monkeypatch, one_vm())
    state = exported_deployment("dev", one_vm(), home_disks={"": 50})  # destroy deletes what the state holds
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, deployments={"dev": state})
    shown: list[Plan] = []

    def no(plan: Plan) -> bool:
        shown.append(plan)
        return False

    with pytest.raises(CourseVmError) as raised:
        down("dev", confirm=no, on_output=print)
    assert str(raised.value) == (
        "not confirmed: nothing was created, changed or deleted in the cloud. Fix: run `course-vm down` again and "
        "answer y (first copy off the VM what you need that would be lost)"
    )
    assert shown[0].vms == (VmChange("", Action.DELETE, HomeDisk.LOST),)
    assert [call[:2] for call in pulumi.calls() if call[0] == "destroy"] == [["destroy", "--preview-only"]]
    assert "Host course-vm\n" in hosts_file().read_text()
    assert recorded_verifications("dev") != {}, "a no keeps the VMs, and so what is known of them"


def test_down_destroys_and_removes_the_entry_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text("Host work\n    User me\n")
    up_first(tmp_path, monkeypatch, one_vm())
    assert "Include" in config.read_text()
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, events=GONE)
    ran = len(pulumi.calls())  # the calls of the first `up`
    said: list[str] = []
    down("dev", confirm=yes, on_output=said.append)
    assert [call[:2] for call in pulumi.calls()[ran:]] == [
        ["stack", "export"], ["stack", "select"], ["config", "--json"], ["destroy", "--preview-only"],
        ["destroy", "--yes"],
    ]  # fmt: skip
    assert said == ["Destroying (dev)"]
    assert config.read_text() == "Host work\n    User me\n"
    assert not hosts_file().exists()
    assert StackSession.open("dev").outputs() == StackOutputs()


def test_down_of_a_class_removes_only_its_stacks_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up_first(tmp_path, monkeypatch, one_vm(stack="other"), stack="other")
    up_first(tmp_path, monkeypatch, class_outputs("alice", "bob"))
    events = preview_events({name: {"self": "delete", "vm": "delete"} for name in ("alice", "bob")})
    stand_in_here(
        tmp_path, monkeypatch, {"dev": class_outputs("alice", "bob"), "other": one_vm(stack="other")}, events=events
    )
    down("dev", confirm=yes, on_output=print)
    ours = hosts_file().read_text()
    assert "course-vm-alice" not in ours and "course-vm-bob" not in ours
    assert "Host course-vm-other\n" in ours


def test_down_of_a_stack_that_is_not_there_creates_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm(), "alice": {}}, events=GONE)
    with pytest.raises(CourseVmError, match=r"^there is no stack typo \(the stacks that exist: alice, dev\)"):
        down("typo", confirm=yes, on_output=print)
    assert pulumi.verbs() == ["stack export", "stack ls"], "no stack init, no destroy"


def test_down_of_a_stack_without_resources_deletes_nothing_and_tidies_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=[])
    asked: list[Plan] = []

    def ask(plan: Plan) -> bool:
        asked.append(plan)
        return True

    down("dev", confirm=ask, on_output=print)
    assert [plan.changes for plan in asked] == [False]
    assert [call[:2] for call in pulumi.calls() if call[0] == "destroy"] == [["destroy", "--preview-only"]]


def test_down_after_a_class_up_that_failed_removes_the_entries_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = exported_deployment("dev", class_outputs("alice"), root={}, unfinished=("bob",))
    failure = {"deployment": state,
               "events": update_events({"alice": "passed", "bob": "failed: the VM is not ready"})}  # fmt: skip
    created = preview_events({name: {"self": "create", "vm": "create"} for name in ("alice", "bob")})
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, events=created, fail={"up": failure})
    with pytest.raises(PartialUpError):
        up("dev", UpOptions(), confirm=yes, on_output=print)
    assert "Host course-vm-alice\n" in hosts_file().read_text()
    # The stack's outputs name no VM (Pulumi kept the first update's: none); the state and the preview name them.
    deleted = preview_events({name: {"self": "delete", "vm": "delete"} for name in ("alice", "bob")})
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, deployments={"dev": state}, events=deleted)
    down("dev", confirm=yes, on_output=print)
    assert not hosts_file().exists()


def test_down_forgets_the_stacks_verifications(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    up_first(tmp_path, monkeypatch, class_outputs("alice"))
    up_first(tmp_path, monkeypatch, one_vm(stack="other"), stack="other")
    assert list(recorded_verifications("dev")) == ["alice"]
    events = preview_events({"alice": {"self": "delete", "vm": "delete"}})
    stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alice"), "other": one_vm(stack="other")}, events=events)
    down("dev", confirm=yes, on_output=print)
    assert recorded_verifications("dev") == {}
    assert list(recorded_verifications("other")) == [""], "another stack's are not this one's"


@pytest.mark.parametrize("key_setting", [None, "~/keys/course-vm"])
def test_down_frees_the_stacks_claims_on_its_students_keys_once_its_vms_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_setting: str | None
) -> None:
    config = {**STACK_CONFIG, **({"course-vm:sshKeyPath": key_setting} if key_setting else {})}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alex")}, config={"dev": config}, events=GONE)
    key = tmp_path / (".ssh" if key_setting is None else "keys") / "course-vm"
    claim_keys("dev", [("alex", Path(f"{key}-alex"))], key)
    claim_keys("other", [("alex", tmp_path / "elsewhere-alex")], tmp_path / "elsewhere")
    with pytest.raises(CourseVmError, match=r"^not confirmed"):
        down("dev", confirm=lambda plan: False, on_output=print)
    assert key_claims(Path(f"{key}-alex")) == [("dev", "alex")], "a no keeps the VMs, and so their claims"
    Path(f"{key}-alex").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{key}-alex").write_text("private")
    said: list[str] = []
    down("dev", confirm=yes, on_output=said.append)
    assert "destroy" in pulumi.verbs()
    assert key_claims(Path(f"{key}-alex")) == []
    assert key_claims(tmp_path / "elsewhere-alex") == [("other", "alex")]
    assert not Path(f"{key}-alex").exists(), "retired: the next class's alex gets a new key"
    assert said[-1] == (
        "retired 1 students' generated keys (renamed to KEY.retired-...), so that a later class gets new ones"
    )


def test_keys_that_cannot_be_retired_are_said_after_the_vms_are_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alex")}, events=GONE)
    key = tmp_path / ".ssh" / "course-vm"
    (tmp_path / ".ssh" / "course-vm-alex.stacks").mkdir(parents=True)  # a claim that cannot be read
    said: list[str] = []
    down("dev", confirm=yes, on_output=said.append)
    assert [call[:2] for call in pulumi.calls() if call[0] == "destroy"][-1] == ["destroy", "--yes"]
    assert said[-1].startswith(f"the VMs are gone, but their students' keys beside {key} were not retired (")


def test_a_key_path_the_program_would_refuse_retires_no_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = {**STACK_CONFIG, "course-vm:sshKeyPath": "relative/course-vm"}
    stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alex")}, config={"dev": config}, events=GONE)
    key = tmp_path / ".ssh" / "course-vm"
    claim_keys("dev", [("alex", Path(f"{key}-alex"))], key)
    said: list[str] = []
    down("dev", confirm=yes, on_output=said.append)
    assert said == ["Destroying (dev)"]
    assert key_claims(Path(f"{key}-alex")) == [("dev", "alex")], "not the key of this stack's setting: left alone"
