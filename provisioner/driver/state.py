"""A stack's exported state, walked once: each VM's own outputs, the VMs that did not finish, what each VM has now."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.gcp.quotas import Existing
from provisioner.stack import (
    ADDRESS_TYPE,
    HOME_DISK_TYPE,
    INSTANCE_TYPE,
    STACK_TYPE,
    STUDENT_VM_TYPE,
    StackOutputs,
    has_address,
    named_in,
    student_of,
)

# Each VM as the stack's state has it. Pulumi keeps a failed update's stack outputs as they were
# (pulumi/pulumi#15754, #16289): after a first `up` none, after a later one the last successful
# update's. But each StudentVm registers its own outputs (register_outputs), and the engine
# checkpoints them as it gets them, in an update that fails too (pkg/resource/deploy/
# step_executor.go ExecuteRegisterResourceOutputs -> the backend's SnapshotManager
# .RegisterResourceOutputs, which persists the snapshot), so `pulumi stack export` holds every VM
# that finished. A StudentVm that did not finish registered nothing: a new one has no outputs, an
# older one keeps its previous ones (a same step retains the old outputs).

# Pulumi's marker of a secret value (SIG_KEY: SIG), not secrets.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105


def plain(value: Any) -> Any:
    """VALUE of an exported deployment with each secret as its value: `--show-secrets` writes one as
    {SIG_KEY: SIG, "plaintext": its JSON text}, without it {SIG_KEY: SIG, "ciphertext": ...} (None here)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            try:
                return plain(json.loads(value["plaintext"]))
            except (KeyError, TypeError, ValueError):
                return None
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True)
class StackState:
    """What `pulumi stack export` says of a stack's VMs, from one walk of its resources."""

    root: Mapping[str, Any] = field(default_factory=dict)
    """The stack's outputs as the state keeps them: the last successful update's."""
    own: Mapping[str, Mapping[str, Any]] | None = None
    """Each VM's own outputs by student ("" for a stack's one VM), those that have an address; None when
    the state holds no StudentVm at all (no VM yet, or a state of another layout)."""
    unfinished: frozenset[str] = frozenset()
    """The students whose VM is in the state without outputs: its first update did not finish."""
    project: str = ""
    """The project the VMs' resources are in."""
    existing: Mapping[str, Existing] = field(default_factory=dict)
    """What each student's VM has now (machine type, boot and home disk GB), those whose instance is there."""

    def outputs(self, name_problem: Callable[[str], str | None]) -> StackOutputs:
        """The stack's VMs, each as the state has it (see StackOutputs.parse)."""
        return StackOutputs.parse(
            self.root, name_problem, own=self.own, unfinished=self.unfinished, project=self.project
        )

    def names(self) -> set[str]:
        """Every student the state names a VM of ("" for a stack's one VM), unchecked: for what is only looked
        up by it (the `Host` entries to remove), never for a file or folder."""
        return named_in(self.root) | set(self.own or {}) | set(self.unfinished)

    def existing_of(self, students: Collection[str]) -> list[Existing]:
        """What STUDENTS' VMs have now, in STUDENTS' order; those the state does not show are left out."""
        return [self.existing[name] for name in students if name in self.existing]


def walk(deployment: Mapping[str, Any]) -> StackState:
    """The StackState of DEPLOYMENT, the `deployment` of `pulumi stack export --show-secrets`
    (`resources`, each with `urn`, `type`, `parent`, `outputs`). Left out: a resource being deleted (`delete`:
    an old one a replacement outlived) and one deleted already (`pendingReplacement`: an instance replaced
    delete-before-replace whose new one was not made, as when its update failed), which the VM no longer has."""
    resources = [
        r for r in deployment.get("resources") or []
        if isinstance(r, dict) and not r.get("delete") and not r.get("pendingReplacement")
    ]  # fmt: skip
    owner = {
        str(r.get("urn")): student_of(str(r.get("urn", "")), str(r.get("parent") or ""))
        for r in resources
        if r.get("type") == STUDENT_VM_TYPE
    }
    own: dict[str, dict[str, Any]] = {}
    unfinished: set[str] = set()
    root: dict[str, Any] = {}
    project = ""
    machines: dict[str, str] = {}
    disk_gb: dict[str, int] = {}
    for resource in resources:
        outputs = plain(resource.get("outputs") or {})
        if not isinstance(outputs, dict):
            continue
        kind = resource.get("type")
        if kind == STUDENT_VM_TYPE:
            student = owner[str(resource.get("urn"))]
            if has_address(outputs):
                own[student] = outputs
            else:
                unfinished.add(student)
        elif kind == STACK_TYPE:
            root = outputs
        if kind in (INSTANCE_TYPE, ADDRESS_TYPE) and not project and isinstance(outputs.get("project"), str):
            project = outputs["project"]
        whose = owner.get(str(resource.get("parent")))
        if whose is not None:
            _measure(kind, outputs, whose, machines, disk_gb)
    existing = {name: Existing(machine, disk_gb.get(name, 0)) for name, machine in machines.items()}
    vms = own if own or unfinished else None
    return StackState(root, vms, frozenset(unfinished), project, existing)


def _measure(
    kind: object, outputs: Mapping[str, Any], student: str, machines: dict[str, str], gb: dict[str, int]
) -> None:
    """Add what a resource of STUDENT's VM has (its instance's machine type and boot disk, its home disk)."""
    try:
        if kind == INSTANCE_TYPE:
            machines[student] = str(outputs["machineType"]).rsplit("/", 1)[-1]
            gb[student] = gb.get(student, 0) + int(outputs["bootDisk"]["initializeParams"]["size"])
        elif kind == HOME_DISK_TYPE:
            gb[student] = gb.get(student, 0) + int(outputs["size"])
    except (KeyError, TypeError, ValueError):
        return  # a state of another shape: that VM is not compared
