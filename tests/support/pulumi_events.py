"""The engine's events as `pulumi --event-log` writes them, one JSON object a line, for this program's resources.

Held to what Pulumi itself recorded (tests/driver/recorded/, compared in tests/driver/test_recorded.py):
each event is an apitype.EngineEvent (sdk/go/common/apitype/events.go) whose `sequence` counts from 0
and whose `timestamp` is a Unix second (pkg/backend/display/display.go stampEvents); a step's metadata
names both its `old` and its `new` state (null where there is none), `detailedDiff`, its `provider`, and
`logical` only for the ops that are (deploy.Step.Logical); a preview's step events say `planning`, an
update's do not; each step that completes is followed by a resOutputsEvent, each that fails by an error
diagnostic naming it and a resOpFailedEvent; a log opens with a preludeEvent and ends with a
summaryEvent and a cancelEvent (engine_log).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Written out here, not taken from provisioner/stack.py: these are what the engine writes, which the code must match.
STACK = "pulumi:pulumi:Stack"
COURSE_VM = "course-vm:gcp:CourseVm"
STUDENT_VM = "course-vm:gcp:StudentVm"
VM_CHILDREN = {
    "ip": "gcp:compute/address:Address",
    "home": "gcp:compute/disk:Disk",
    "vm": "gcp:compute/instance:Instance",
    "iap-access": "gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember",
    "instance-view": "gcp:compute/instanceIAMMember:InstanceIAMMember",
    "nightly-stop": "gcp:compute/resourcePolicyAttachment:ResourcePolicyAttachment",
    "verify": "pulumi-python:dynamic:Resource",
}
"""A StudentVm's children by role, in the order the program registers them (provisioner/gcp/student_vm.py): the
address (not under sshAccess iap), the home disk (homeDiskSizeGb), the instance, the IAP grants on it (sshAccess
iap with the student's email), its nightly-stop attachment (nightlyStopTime) and its verification (verify)."""
SHARED = {
    "network": "gcp:compute/network:Network",
    "subnet": "gcp:compute/subnetwork:Subnetwork",
    "ssh": "gcp:compute/firewall:Firewall",
    "router": "gcp:compute/router:Router",
    "nat": "gcp:compute/routerNat:RouterNat",
    "iap-api": "gcp:projects/service:Service",
    "nightly-stop": "gcp:compute/resourcePolicy:ResourcePolicy",
    "schedule-grant": "gcp:projects/iAMMember:IAMMember",
}
"""The CourseVm's own children by role, in the order the program registers them (provisioner/gcp/network.py)."""
SHARED_ALWAYS = ("network", "subnet", "ssh")
SHARED_UNDER_IAP = ("router", "nat", "iap-api")
SHARED_WITH_NIGHTLY_STOP = ("nightly-stop", "schedule-grant")
COMPONENTS = (STACK, COURSE_VM, STUDENT_VM)

NOW = 1795788000
"""The Unix second the built events are stamped with (the engine stamps each with time.Now().Unix())."""

LOGICAL = frozenset({"same", "create", "update", "delete", "replace", "read", "import"})
"""The ops whose steps are logical: a replacement's create-replacement and delete-replaced are not, and only
logical steps are counted in the summary (pkg/engine/update.go)."""

DELETE_BEFORE_REPLACE = frozenset({"vm", "verify"})
"""The roles replaced delete-before-replace: the instance by its option (student_vm.instance_options), the
verification because its provider's diff asks for it. The address, home disk, network and firewall are
auto-named, so the GCP provider asks for none: the engine creates their replacement first and deletes the
old one after every other step (pkg/resource/deploy/step_generator.go). (The IAP grants and the nightly-stop
attachment replaced on their own, not with the instance, are modelled so too: not checked against the GCP
provider, whose answer for the attachment, whose `name` is set, may be delete-before-replace.)"""

DEPENDENTS = {"vm": ("iap-access", "instance-view", "nightly-stop", "verify")}
"""What the engine replaces with a role it replaces delete-before-replace (calculateDependentReplacements): each
resource one of whose inputs comes from the instance and whose provider replaces it when that input changes
(the IAP grants' `instance`/`instance_name` and the attachment's `instance` are ForceNew; the verification's
instance_name and instance_id make its provider replace it), in the order registered. The engine deletes them
first, last registered first, then the instance; each is then replaced after the instance (replace,
create-replacement, and no second delete)."""


def urn(stack: str, types: list[str], name: str) -> str:
    return f"urn:pulumi:{stack}::course-vm::{'$'.join(types)}::{name}"


def provider_of(type_: str, stack: str) -> str:
    """The provider reference of a resource of TYPE_ (its default provider's URN and ID); "" for a component."""
    if type_ in COMPONENTS:
        return ""
    if type_ == VM_CHILDREN["verify"]:
        return urn(stack, ["pulumi:providers:pulumi-python"], "default") + "::0f8b2d3c-5a6e-4c1d-9e7f-3b2a1c0d9e8f"
    return urn(stack, ["pulumi:providers:gcp"], "default_8_10_0") + "::5d3e2a8c-0b8e-4a4c-9a3e-2f1c8a7b6d5e"


def _state(types: list[str], name: str, parent: str, stack: str) -> dict[str, Any]:
    """A StepEventStateMetadata: `custom` only for a custom resource (omitempty)."""
    custom = {"custom": True} if types[-1] not in COMPONENTS else {}
    return {"type": types[-1], "urn": urn(stack, types, name), **custom, "id": "", "parent": parent,
            "inputs": {}, "outputs": {}, "provider": provider_of(types[-1], stack)}  # fmt: skip


def step(
    op: str, types: list[str], name: str, parent: str, stack: str = "dev", *, planning: bool = True,
    kind: str = "resourcePreEvent", timestamp: int = NOW,
) -> dict[str, Any]:  # fmt: skip
    """One event of the engine's step OP on a resource (KIND: resourcePreEvent, resOutputsEvent), its state
    naming its parent; PLANNING: a preview's."""
    state = _state(types, name, parent, stack)
    metadata = {
        "op": op, "urn": state["urn"], "type": types[-1],
        "old": None if op == "create" else state, "new": None if op in ("delete", "delete-replaced") else state,
        "detailedDiff": None, **({"logical": True} if op in LOGICAL else {}), "provider": state["provider"],
    }  # fmt: skip
    return {
        "sequence": 0,
        "timestamp": timestamp,
        kind: {"metadata": metadata, **({"planning": True} if planning else {})},
    }


def done(op: str, types: list[str], name: str, parent: str, stack: str, *, planning: bool) -> list[dict[str, Any]]:
    """A step that completes: its resourcePreEvent and its resOutputsEvent."""
    return [step(op, types, name, parent, stack, planning=planning, kind=kind)
            for kind in ("resourcePreEvent", "resOutputsEvent")]  # fmt: skip


def diagnostic(message: str, severity: str = "error", urn_: str = "") -> dict[str, Any]:
    """A diagnosticEvent as the engine writes it with colour left to the reader: its prefix and message in
    the engine's colour tags, `"color": "raw"`, and `urn` only when it names a resource (omitempty)."""
    colour = {"error": 1, "warning": 3}.get(severity, 7)
    text = message if message.startswith("<{%reset%}>") else "<{%reset%}>" + message.rstrip("\n") + "<{%reset%}>\n"
    event = {**({"urn": urn_} if urn_ else {}), "prefix": f"<{{%fg {colour}%}}>{severity}: <{{%reset%}}>",
             "message": text, "color": "raw", "severity": severity}  # fmt: skip
    return {"sequence": 0, "timestamp": NOW, "diagnosticEvent": event}


def error_diagnostic(message: str, urn_: str = "") -> dict[str, Any]:
    return diagnostic(message, "error", urn_)


def _shared_and_providers(stack: str, ops: Mapping[str, str], *, planning: bool) -> list[dict[str, Any]]:
    """The stack's step, its default providers' (the log keeps these internal steps) and the CourseVm's."""
    stack_urn = urn(stack, [STACK], f"course-vm-{stack}")
    events = [step("same", [STACK], f"course-vm-{stack}", "", stack, planning=planning)]
    for provider in ("pulumi:providers:gcp", "pulumi:providers:pulumi-python"):
        name = "default_8_10_0" if provider.endswith("gcp") else "default"
        events += done("same", [provider], name, "", stack, planning=planning)
    events.append(step("same", [COURSE_VM], "course-vm", stack_urn, stack, planning=planning))
    course = urn(stack, [COURSE_VM], "course-vm")
    for role, type_ in SHARED.items():
        if role in ops:
            events += done(ops[role], [COURSE_VM, type_], f"course-vm-{role}", course, stack, planning=planning)
    return events


def shared_ops(shared: str | Mapping[str, str], *, iap: bool = False, nightly: bool = False) -> dict[str, str]:
    """Each of the CourseVm's children the program registers (the network, subnet and firewall; the router,
    Cloud NAT and IAP API under sshAccess iap; the nightly-stop policy and its grant with nightlyStopTime) ->
    its op: SHARED's for the roles it names, or one op for the network and the firewall; `same` otherwise."""
    roles = (*SHARED_ALWAYS, *(SHARED_UNDER_IAP if iap else ()), *(SHARED_WITH_NIGHTLY_STOP if nightly else ()))
    given = {"network": shared, "ssh": shared} if isinstance(shared, str) else dict(shared)
    return {role: given.get(role, "same") for role in SHARED if role in roles}


def forced(ops: Mapping[str, str]) -> dict[str, str]:
    """OPS as the engine carries them out: a role replaced delete-before-replace replaces each of its DEPENDENTS
    there (calculateDependentReplacements), whatever its own diff says."""
    steps = dict(ops)
    for role, dependents in DEPENDENTS.items():
        if steps.get(role) == "replace":
            steps.update({d: "replace" for d in dependents if steps.get(d) in ("same", "update", "replace")})
    return steps


def _vm_steps(student: str, ops: Mapping[str, str], stack: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A previewed VM's steps now, and those the engine takes after every other step (its deletions)."""
    name = f"course-vm-{student}" if student else "course-vm"
    course = urn(stack, [COURSE_VM], "course-vm")
    vm_urn = urn(stack, [COURSE_VM, STUDENT_VM], name)
    ops = forced(ops)
    own = ops.get("self", "same")
    now: list[dict[str, Any]] = [] if own == "delete" else [step(own, [COURSE_VM, STUDENT_VM], name, course, stack)]
    last: list[dict[str, Any]] = []
    deleted_first: set[str] = set()
    for role, type_ in VM_CHILDREN.items():
        op, types, child = ops.get(role), [COURSE_VM, STUDENT_VM, type_], f"{name}-{role}"
        if op is None:
            continue
        if op == "delete":
            last[:0] = done("delete", types, child, vm_urn, stack, planning=True)
        elif op == "replace" and role in deleted_first:
            now += done("replace", types, child, vm_urn, stack, planning=True)
            now += done("create-replacement", types, child, vm_urn, stack, planning=True)
        elif op == "replace" and role in DELETE_BEFORE_REPLACE:
            for first in (*reversed([d for d in DEPENDENTS.get(role, ()) if ops.get(d) == "replace"]), role):
                now += done("delete-replaced", [COURSE_VM, STUDENT_VM, VM_CHILDREN[first]], f"{name}-{first}",
                            vm_urn, stack, planning=True)  # fmt: skip
                deleted_first.add(first)
            now += done("replace", types, child, vm_urn, stack, planning=True)
            now += done("create-replacement", types, child, vm_urn, stack, planning=True)
        elif op == "replace":
            now += done("create-replacement", types, child, vm_urn, stack, planning=True)
            now += done("replace", types, child, vm_urn, stack, planning=True)
            last += done("delete-replaced", types, child, vm_urn, stack, planning=True)
        else:
            now += done(op, types, child, vm_urn, stack, planning=True)
    if own == "delete":
        last += done("delete", [COURSE_VM, STUDENT_VM], name, course, stack, planning=True)
    else:
        now.append(step(own, [COURSE_VM, STUDENT_VM], name, course, stack, kind="resOutputsEvent"))
    return now, last


def preview_events(
    vms: Mapping[str, Mapping[str, str]], *, shared: str | Mapping[str, str] = "same", stack: str = "dev",
    iap: bool = False, nightly: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """What the engine reports in a preview for VMS: student ("" for a stack's one VM) -> {role or "self": op}.

    A role left out is not there (no home disk without homeDiskSizeGb, no address under iap). A `replace` is
    reported as the engine replaces that role (DELETE_BEFORE_REPLACE), and a replaced instance replaces its
    DEPENDENTS that are there, whatever op they are given; a deletion, and the old half of a create-before-delete
    replacement, after every other step, a VM's children before the VM. SHARED, IAP, NIGHTLY: see shared_ops.
    """
    events = _shared_and_providers(stack, shared_ops(shared, iap=iap, nightly=nightly), planning=True)
    later: list[dict[str, Any]] = []
    for student, ops in vms.items():
        now, last = _vm_steps(student, ops, stack)
        events += now
        later += last
    stack_urn = urn(stack, [STACK], f"course-vm-{stack}")
    events.append(step("same", [COURSE_VM], "course-vm", stack_urn, stack, kind="resOutputsEvent"))
    events.append(step("same", [STACK], f"course-vm-{stack}", "", stack, kind="resOutputsEvent"))
    return events + later


def vm_roles(*, iap: bool = False, nightly: bool = False, home: bool = False) -> tuple[str, ...]:
    """A StudentVm's children the program registers under these settings (VM_CHILDREN's order), its verification
    aside: the address (not under sshAccess iap), the home disk (homeDiskSizeGb), the instance, the IAP grants
    (iap), the nightly-stop attachment (nightlyStopTime)."""
    roles = ("ip",) * (not iap) + ("home",) * home + ("vm",) + ("iap-access", "instance-view") * iap
    return roles + ("nightly-stop",) * nightly


def update_events(
    vms: Mapping[str, str], *, stack: str = "dev", timestamp: int = NOW, iap: bool = False, nightly: bool = False,
    home: bool = False,
) -> list[dict[str, Any]]:  # fmt: skip
    """What the engine reports while `pulumi up` runs, for VMS: student ("" for a stack's one VM) -> what
    became of its verification: "passed" (checked now), "same" (passed before, not checked again),
    "failed: MESSAGE" (the checker's error), "off" (verify=false: there is none).

    As the engine steps through every resource the program registers on every update, in registration order:
    the stack, the default providers, the CourseVm and what the VMs share (shared_ops: IAP, NIGHTLY), and each
    StudentVm with its children (vm_roles: IAP, NIGHTLY, HOME), all `same` but the verification. Each step as an
    update reports it: a resourcePreEvent, then a resOutputsEvent, or an error diagnostic naming the resource and
    a resOpFailedEvent (status 1, StatusUnknown: the Python dynamic provider fails with gRPC's UNKNOWN; `steps`:
    the logical steps done before). A VM whose verification failed registers no outputs; with a failure the stack
    registers none either and the engine's own `update failed` error ends the steps. Every event at TIMESTAMP.
    """
    course = urn(stack, [COURSE_VM], "course-vm")
    events = _shared_and_providers(stack, shared_ops("same", iap=iap, nightly=nightly), planning=False)
    failed = False
    for student, verification in vms.items():
        name = f"course-vm-{student}" if student else "course-vm"
        vm_urn, types = urn(stack, [COURSE_VM, STUDENT_VM], name), [COURSE_VM, STUDENT_VM]
        events.append(step("same", types, name, course, stack, planning=False))
        for role in vm_roles(iap=iap, nightly=nightly, home=home):
            events += done("same", [*types, VM_CHILDREN[role]], f"{name}-{role}", vm_urn, stack, planning=False)
        verify = [*types, VM_CHILDREN["verify"]]
        if verification in ("passed", "same"):
            op = "create" if verification == "passed" else "same"
            events += done(op, verify, f"{name}-verify", vm_urn, stack, planning=False)
        elif verification.startswith("failed: "):
            failed = True
            pre = step("create", verify, f"{name}-verify", vm_urn, stack, planning=False)
            metadata = pre["resourcePreEvent"]["metadata"]
            steps = sum(counted(e).get("op") is not None for e in events)
            events += [pre, error_diagnostic(verification.removeprefix("failed: "), metadata["urn"]),
                       {"sequence": 0, "timestamp": NOW, "resOpFailedEvent": {"metadata": metadata, "status": 1,
                                                                              "steps": steps}}]  # fmt: skip
            continue
        events.append(step("same", types, name, course, stack, planning=False, kind="resOutputsEvent"))
    if failed:
        events.append(error_diagnostic("update failed"))
    else:
        stack_urn = urn(stack, [STACK], f"course-vm-{stack}")
        events.append(step("same", [COURSE_VM], "course-vm", stack_urn, stack, planning=False, kind="resOutputsEvent"))
        events.append(step("same", [STACK], f"course-vm-{stack}", "", stack, planning=False, kind="resOutputsEvent"))
    return [{**event, "timestamp": timestamp} for event in events]


def destroy_events(deployment: Mapping[str, Any] | None, *, planning: bool) -> list[dict[str, Any]]:
    """What the engine reports as `pulumi destroy` deletes the resources of DEPLOYMENT (what `stack export`
    prints; None: a stack without any): runs no program (its source is a deploy.NullSource, pkg/engine/destroy.go),
    so every resource the state holds is deleted, the default providers and the stack too, each a delete step
    (resourcePreEvent, resOutputsEvent) naming its old state and its parent, dependents before what they depend on
    (GenerateDeletes, ScheduleDeletes: the state's order reversed), PLANNING in a preview (--preview-only)."""
    resources = ((deployment or {}).get("deployment") or {}).get("resources") or []
    events: list[dict[str, Any]] = []
    for resource in reversed(resources):
        address = str(resource["urn"])
        stack = address.split("::", 1)[0].removeprefix("urn:pulumi:")
        types, name = address.split("::")[2].split("$"), address.split("::")[3]
        events += done("delete", types, name, str(resource.get("parent") or ""), stack, planning=planning)
    return events


def created_anew(events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """EVENTS as the engine reports them for a stack whose state holds no resource (new, or destroyed): what was
    `same` is created, the stack resource and the default providers first of all (no old state)."""
    fresh: list[dict[str, Any]] = []
    for event in events:
        kind = next((k for k in ("resourcePreEvent", "resOutputsEvent") if k in event), None)
        if kind is None or event[kind]["metadata"]["op"] != "same":
            fresh.append(dict(event))
            continue
        metadata = {**event[kind]["metadata"], "op": "create", "old": None}
        fresh.append({**event, kind: {**event[kind], "metadata": metadata}})
    return fresh


def engine_failed(events: Sequence[Mapping[str, Any]], *, preview: bool) -> list[dict[str, Any]]:
    """EVENTS of a run the engine failed, ending as it ends one: after a step that failed (a resOpFailedEvent), its
    own `update failed` (`preview failed` in a preview) error naming no resource (deploymentExecutor.reportExecResult,
    the step executor having errored), unless they end so already; a run whose program or provider configuration
    failed before any step failed is a bail, which the engine ends without it (recorded program-error.json)."""
    closing = error_diagnostic(("preview" if preview else "update") + " failed")
    said = [e["diagnosticEvent"] for e in events if "diagnosticEvent" in e]
    stepped = any("resOpFailedEvent" in e for e in events)
    closed = not stepped or (said and said[-1] == closing["diagnosticEvent"])
    return [dict(e) for e in events] + ([] if closed else [closing])


def display_name(type_: str) -> str:
    """TYPE_ as the CLI shows it (tokens.Type.DisplayName): `gcp:compute/instance:Instance` is `gcp:compute:Instance`,
    the module's last part dropped where it is the type's name in camelCase; any other token as it is."""
    parts = type_.split(":")
    if len(parts) != 3 or not parts[2] or "/" not in parts[1]:
        return type_
    module, _, file = parts[1].rpartition("/")
    return f"{parts[0]}:{module}:{parts[2]}" if file == parts[2][:1].lower() + parts[2][1:] else type_


def diagnostics_shown(events: Sequence[Mapping[str, Any]], stack: str) -> str:
    """The `Diagnostics:` section the CLI's progress display (no --diff, no --json) prints on stdout for the
    diagnosticEvents among EVENTS (ProgressDisplay.printDiagnostics): per resource, `  TYPE (NAME):` (a simplified
    type; the stack's for a diagnostic naming none), then each message's lines after its prefix, indented by 4.
    Colour tags are left out (the CLI run by course-vm has no terminal, and colours are off)."""
    by_resource: dict[str, list[str]] = {}
    for event in events:
        diagnostic_ = event.get("diagnosticEvent")
        if diagnostic_ is None:
            continue
        address = diagnostic_.get("urn") or urn(stack, [STACK], f"course-vm-{stack}")
        prefix = str(diagnostic_.get("prefix", "")).replace("<{%reset%}>", "").split("%}>")[-1]
        text = str(diagnostic_["message"]).replace("<{%reset%}>", "").rstrip("\n")
        by_resource.setdefault(address, []).extend(f"    {line}".rstrip() for line in (prefix + text).splitlines())
    if not by_resource:
        return ""
    shown = ["Diagnostics:"]
    for address, lines in by_resource.items():
        type_, name = address.split("::")[2].split("$")[-1], address.split("::")[3]
        shown += [f"  {display_name(type_)} ({name}):", *lines, ""]
    return "\n".join(shown) + "\n"


def metadata_of(event: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """The step metadata of EVENT if it is a KIND event; {} otherwise."""
    payload = event.get(kind)
    return dict(payload["metadata"]) if isinstance(payload, dict) else {}


def counted(event: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of EVENT if it ends a step the engine counts (a logical one, on no default provider)."""
    metadata = metadata_of(event, "resOutputsEvent")
    return metadata if metadata.get("logical") and not str(metadata["type"]).startswith("pulumi:providers:") else {}


def engine_log(events: Sequence[Mapping[str, Any]], *, preview: bool, failed: bool = False) -> list[dict[str, Any]]:
    """EVENTS as the CLI writes them to its event log: opened by a preludeEvent, closed by a summaryEvent
    (the logical steps that completed, by op, default providers' left out; maybeCorrupt after a step that
    failed with an unknown status) and a cancelEvent, each numbered from 0 in `sequence`."""
    when = int(events[0].get("timestamp") or NOW) if events else NOW
    changes: dict[str, int] = {}
    for op in (counted(event).get("op") for event in events):
        if op is not None:
            changes[op] = changes.get(op, 0) + 1
    corrupt = any(metadata_of(e, "resOpFailedEvent") and e["resOpFailedEvent"].get("status") == 1 for e in events)
    summary = {"maybeCorrupt": corrupt, "durationSeconds": 1, "resourceChanges": changes, "PolicyPacks": {},
               "isPreview": preview, "result": "failed" if failed else "succeeded"}  # fmt: skip
    written = [
        {"timestamp": when, "preludeEvent": {"config": {}}},
        *events,
        {"timestamp": when, "summaryEvent": summary},
        {"timestamp": when, "cancelEvent": {}},
    ]
    return [{"sequence": number, **{k: v for k, v in event.items() if k != "sequence"}}
            for number, event in enumerate(written)]  # fmt: skip
