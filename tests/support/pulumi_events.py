"""The engine's events as `pulumi --event-log` writes them, one JSON object a line, for this program's resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Written out here, not taken from provisioner/stack.py: these are what the engine writes, which the code must match.
COURSE_VM = "course-vm:gcp:CourseVm"
STUDENT_VM = "course-vm:gcp:StudentVm"
VM_CHILDREN = {
    "ip": "gcp:compute/address:Address",
    "vm": "gcp:compute/instance:Instance",
    "home": "gcp:compute/disk:Disk",
    "verify": "pulumi-python:dynamic:Resource",
}
SHARED = {"network": "gcp:compute/network:Network", "ssh": "gcp:compute/firewall:Firewall"}


def urn(stack: str, types: list[str], name: str) -> str:
    return f"urn:pulumi:{stack}::course-vm::{'$'.join(types)}::{name}"


def step(op: str, types: list[str], name: str, parent: str, stack: str = "dev") -> dict[str, Any]:
    """One resourcePreEvent: the engine's step OP on a resource, its state naming its parent."""
    state = {"type": types[-1], "urn": urn(stack, types, name), "parent": parent, "custom": True}
    metadata = {
        "op": op,
        "urn": state["urn"],
        "type": types[-1],
        "provider": "",
        "old" if op == "delete" else "new": state,
    }
    return {"sequence": 0, "timestamp": 0, "resourcePreEvent": {"metadata": metadata, "planning": True}}


def preview_events(
    vms: Mapping[str, Mapping[str, str]], *, shared: str = "same", stack: str = "dev"
) -> list[dict[str, Any]]:
    """What the engine reports for VMS: student ("" for a stack's one VM) -> {role or "self": op}.

    A role left out is not there (no home disk without homeDiskSizeGb); a `replace` is reported
    as delete-before-replace reports it: delete-replaced, replace, create-replacement.
    """
    stack_urn = urn(stack, ["pulumi:pulumi:Stack"], f"course-vm-{stack}")
    course = urn(stack, [COURSE_VM], "course-vm")
    events = [
        step("same", ["pulumi:pulumi:Stack"], f"course-vm-{stack}", "", stack),
        step("same", [COURSE_VM], "course-vm", stack_urn, stack),
    ]
    events += [step(shared, [COURSE_VM, t], f"course-vm-{role}", course, stack) for role, t in SHARED.items()]
    for student, ops in vms.items():
        name = f"course-vm-{student}" if student else "course-vm"
        vm_urn = urn(stack, [COURSE_VM, STUDENT_VM], name)
        events.append(step(ops.get("self", "same"), [COURSE_VM, STUDENT_VM], name, course, stack))
        for role, op in ops.items():
            if role == "self":
                continue
            types = [COURSE_VM, STUDENT_VM, VM_CHILDREN[role]]
            for each in ("delete-replaced", "replace", "create-replacement") if op == "replace" else (op,):
                events.append(step(each, types, f"{name}-{role}", vm_urn, stack))
    counts: dict[str, int] = {}
    for event in events:
        op = event["resourcePreEvent"]["metadata"]["op"]
        counts[op] = counts.get(op, 0) + 1
    events.append({"sequence": 0, "timestamp": 0, "summaryEvent": {"resourceChanges": counts}})
    return events


def error_diagnostic(message: str) -> dict[str, Any]:
    return {
        "sequence": 0,
        "timestamp": 0,
        "diagnosticEvent": {"message": message, "severity": "error", "color": "never"},
    }


def update_events(vms: Mapping[str, str], *, stack: str = "dev", timestamp: int = 1795788000) -> list[dict[str, Any]]:
    """What the engine reports while `pulumi up` runs, for VMS: student ("" for a stack's one VM) ->
    what became of its verification: "passed" (checked now), "same" (passed before, not checked
    again), "failed: MESSAGE" (the checker's error), "off" (verify=false: there is none).

    Each step as the engine reports it: a resourcePreEvent, then a resOutputsEvent, or an error
    diagnostic naming the resource and a resOpFailedEvent; every event at TIMESTAMP (Unix seconds).
    """
    course = urn(stack, [COURSE_VM], "course-vm")
    events: list[dict[str, Any]] = []

    def done(op: str, types: list[str], name: str, parent: str, failure: str | None = None) -> None:
        pre = step(op, types, name, parent, stack)
        metadata = pre["resourcePreEvent"]["metadata"]
        events.append({**pre, "timestamp": timestamp})
        if failure is None:
            events.append({"sequence": 0, "timestamp": timestamp, "resOutputsEvent": {"metadata": metadata}})
            return
        diagnostic = {"message": failure, "severity": "error", "color": "never", "urn": metadata["urn"]}
        events.append({"sequence": 0, "timestamp": timestamp, "diagnosticEvent": diagnostic})
        failed = {"metadata": metadata, "status": 0, "steps": 0}
        events.append({"sequence": 0, "timestamp": timestamp, "resOpFailedEvent": failed})

    for student, verification in vms.items():
        name = f"course-vm-{student}" if student else "course-vm"
        vm_urn = urn(stack, [COURSE_VM, STUDENT_VM], name)
        done("same", [COURSE_VM, STUDENT_VM], name, course)
        done("same", [COURSE_VM, STUDENT_VM, VM_CHILDREN["vm"]], f"{name}-vm", vm_urn)
        types = [COURSE_VM, STUDENT_VM, VM_CHILDREN["verify"]]
        if verification == "passed":
            done("create", types, f"{name}-verify", vm_urn)
        elif verification == "same":
            done("same", types, f"{name}-verify", vm_urn)
        elif verification.startswith("failed: "):
            done("create", types, f"{name}-verify", vm_urn, verification.removeprefix("failed: "))
    return events
