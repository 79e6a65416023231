"""A preview's steps, summarised per VM: what each student gains or loses, and what the VMs share."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum

from pulumi.automation.events import OpType

from provisioner.driver.events import EngineLog, StepKind
from provisioner.stack import HOME_DISK_TYPE, INSTANCE_TYPE, STUDENT_VM_TYPE, student_of, urn_name, urn_type

# A replacement is several engine steps on one URN; delete-before-replace emits all of them.
REPLACING = {
    OpType.REPLACE, OpType.CREATE_REPLACEMENT, OpType.DELETE_REPLACED, OpType.DISCARD_REPLACED,
    OpType.IMPORT_REPLACEMENT,
}  # fmt: skip


class Action(str, Enum):
    """What a step does to a resource, or a preview to a VM, as the student sees it; str() and format() give
    its value, as a 3.11 enum.StrEnum's do (Python 3.10 has none)."""

    CREATE = "create"
    UPDATE = "update"
    REPLACE = "replace"
    DELETE = "delete"
    SAME = "same"

    def __str__(self) -> str:
        return self.value


class HomeDisk(str, Enum):
    """The fate of a VM's /home disk (homeDiskSizeGb); str() and format() give its value, as Action's do."""

    KEPT = "kept"
    CREATED = "created"
    LOST = "lost"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class VmChange:
    """What a preview does to one student's VM."""

    student: str
    """The student's name; "" for the stack's one VM."""
    action: Action
    """create, update, replace (a new instance, a new boot disk), delete, or same."""
    home_disk: HomeDisk | None
    """The fate of its /home disk; None without one."""


@dataclass(frozen=True)
class Plan:
    """A preview, per VM, and the changes to what the VMs share (network, firewall, schedule)."""

    vms: tuple[VmChange, ...]
    shared: tuple[tuple[str, Action], ...] = ()
    """(resource name, action) of each changed resource outside any VM."""
    entries: bool = False
    """Whether the VMs' ssh entries change while no resource does (forwardPorts, forwardAgent): the engine
    shows no step for outputs alone, so an update runs for them."""
    warnings: tuple[str, ...] = ()
    """What the program warned of (an open firewall, a baked image out of date), each once."""

    @property
    def changes(self) -> bool:
        return bool(self.shared) or self.entries or any(vm.action is not Action.SAME for vm in self.vms)

    @property
    def created(self) -> int:
        """How many new VMs the plan makes; a replaced VM is deleted first, so it adds nothing."""
        return sum(vm.action is Action.CREATE for vm in self.vms)

    def students(self, *actions: Action) -> list[str]:
        """The students whose VM the plan does one of ACTIONS to (every VM's, given none)."""
        return [vm.student for vm in self.vms if not actions or vm.action in actions]


def _action(op: OpType | None) -> Action:
    if op in REPLACING:
        return Action.REPLACE
    if op in (OpType.CREATE, OpType.UPDATE, OpType.DELETE):
        return Action(op.value)
    # An operation a newer engine has and this SDK does not know: a change, not nothing.
    return Action.UPDATE if op is None else Action.SAME


def plan_of(log: EngineLog) -> Plan:
    """The per-VM plan of a preview's events."""
    steps: dict[str, tuple[str, Action, str]] = {}  # URN -> (type, action, parent URN)
    for step in log.steps:
        if step.kind is not StepKind.PRE or steps.get(step.urn, ("", Action.SAME))[1] is Action.REPLACE:
            continue
        steps[step.urn] = (step.type, _action(step.op), step.parent)
    children: dict[str, dict[str, list[Action]]] = {}
    shared: list[tuple[str, Action]] = []
    for urn, (type_, action, _parent) in steps.items():
        vm = vm_of(urn, {u: parent for u, (_t, _a, parent) in steps.items()})
        if vm is None:
            if action is not Action.SAME and not type_.startswith(("pulumi:", "course-vm:")):
                shared.append((urn_name(urn), action))
        else:
            found = children.setdefault(vm, {})
            if vm != urn:
                found.setdefault(type_, []).append(action)
    vms = [_vm_change(urn, steps, found) for urn, found in children.items()]
    warnings = dict.fromkeys(
        d.message.strip() for d in log.diagnostics if d.severity == "warning" and d.message.strip()
    )
    return Plan(tuple(sorted(vms, key=lambda vm: vm.student)), tuple(sorted(shared)), warnings=tuple(warnings))


def vm_of(urn: str, parents: Mapping[str, str]) -> str | None:
    """The URN of the StudentVm that URN is, or is under (PARENTS: each URN's parent); None if none.

    By the URNs' own types, so a VM whose component has no step of its own is still found.
    """
    seen: set[str] = set()
    while urn and urn not in seen:
        if urn_type(urn) == STUDENT_VM_TYPE:
            return urn
        seen.add(urn)
        urn = parents.get(urn, "")
    return None


def _vm_change(
    urn: str, steps: Mapping[str, tuple[str, Action, str]], children: Mapping[str, list[Action]]
) -> VmChange:
    _type, own, parent = steps.get(urn, (STUDENT_VM_TYPE, Action.SAME, ""))
    instance = children.get(INSTANCE_TYPE, [])
    action: Action
    if own in (Action.CREATE, Action.DELETE):
        action = own
    elif {Action.REPLACE, Action.DELETE, Action.CREATE} & set(instance):
        action = Action.REPLACE
    elif own is Action.UPDATE or any(a is not Action.SAME for actions in children.values() for a in actions):
        action = Action.UPDATE
    else:
        action = Action.SAME
    return VmChange(student_of(urn, parent), action, _home_disk(children.get(HOME_DISK_TYPE, [])))


def _home_disk(actions: Iterable[Action]) -> HomeDisk | None:
    disks = set(actions)
    if not disks:
        return None
    if {Action.DELETE, Action.REPLACE} & disks:
        return HomeDisk.LOST
    return HomeDisk.CREATED if Action.CREATE in disks else HomeDisk.KEPT


def failed_students(log: EngineLog) -> set[str]:
    """The students ("" for a stack's one VM) one of whose VM's resources an update's LOG says failed:
    a failed step, or an error naming a resource under their StudentVm."""
    parents = {step.urn: step.parent for step in log.steps if step.parent}
    failed = {d.urn for d in log.errors if d.urn} | {s.urn for s in log.steps if s.kind is StepKind.FAILED}
    students: set[str] = set()
    for urn in failed:
        vm = vm_of(urn, parents)
        if vm is not None:
            students.add(student_of(vm, parents.get(vm, "")))
    return students
