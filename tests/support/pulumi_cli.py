"""Stand-ins for the Pulumi CLI (not installable here): a `pulumi` on PATH that prints a stack's outputs,
one that serves the Automation API, and the engine events a preview of this program reports."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def stand_in_pulumi(
    tmp_path: Path, outputs: Mapping[str, object], deployment: Mapping[str, object] | None = None
) -> dict[str, str]:
    """An environment whose `pulumi` (a stand-in for the CLI, not installable here) prints OUTPUTS
    (`stack output`) and, given one, the stack's DEPLOYMENT (`stack export`, see exported_deployment;
    without one it fails as a CLI that cannot export does), but only when it is asked on the
    backend `up` uses (the local file backend, by default)."""
    state = tmp_path / "state"
    backend = (state / "course-vm" / "pulumi").as_uri()
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir(exist_ok=True)
    exported = tmp_path / "pulumi-stack-export.json"
    export = ""
    if deployment is not None:
        exported.write_text(json.dumps(deployment))
        export = f"[ \"$1 $2\" = 'stack export' ] && exec cat '{exported}'\n"
    fake.write_text(
        f"#!/bin/sh\n{export}[ \"$1 $2\" = 'stack output' ] || exit 9\n"
        f"[ \"$PULUMI_BACKEND_URL\" = '{backend}' ] || {{ echo 'no stack on this backend' >&2; exit 1; }}\n"
        f"echo '{json.dumps(outputs)}'\n"
    )
    fake.chmod(0o755)
    environment = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "XDG_STATE_HOME": str(state)}
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME"):
        environment.pop(name, None)
    environment["PULUMI_HOME"] = str(tmp_path / "pulumi-home")  # not logged in anywhere
    return environment


# The engine's event stream, as `pulumi preview --event-log` writes it (one JSON object a line),
# for this program's resources: CourseVm > StudentVm > address, instance, home disk, verification.

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


ENGINE = r"""
import json, pathlib, sys

state_file = pathlib.Path(STATE)
state = json.loads(state_file.read_text())
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(CALLS, "a") as calls:
    calls.write(json.dumps(args) + "\n")


def option(name):
    return args[args.index(name) + 1] if name in args else None


def log_events(events):
    # The events, ended as the engine ends them: the SDK stops reading at the cancel event.
    if option("--event-log"):
        with open(option("--event-log"), "a") as log:
            for event in [*events, {"sequence": 0, "timestamp": 0, "cancelEvent": {}}]:
                log.write(json.dumps(event) + "\n")


stack = option("--stack")
verb = " ".join(args[:2]) if args[0] in ("stack", "config") else args[0]
if verb == "version":
    print("v3.200.0")  # before 3.206 the engine events go to a file, which this stand-in writes
    sys.exit(0)
failure = state["fail"].get(verb)
if failure is not None:
    log_events(failure.get("events", []))
    if "deployment" in failure:
        # What the engine checkpointed before the update failed: the steps that completed.
        state["deployments"][stack] = failure["deployment"]
        state_file.write_text(json.dumps(state))
    print(failure.get("stdout", ""))
    sys.stderr.write(failure["stderr"])
    sys.exit(255)
if verb == "stack select":
    if stack not in state["stacks"]:
        sys.stderr.write(f"error: no stack named '{stack}' found\n")
        sys.exit(255)
elif verb == "stack init":
    state["stacks"][args[2]] = {}
elif verb == "stack ls":
    print(json.dumps([{"name": name, "current": False} for name in state["stacks"]]))
elif verb == "stack output":
    print(json.dumps(state["stacks"][stack]))
elif verb == "stack export":
    print(json.dumps(state["deployments"].get(stack) or {"version": 3, "deployment": {}}, indent=4))
elif verb == "stack history":
    print(json.dumps([{"kind": "update", "startTime": "2026-11-27T14:00:00.000Z", "message": "",
                       "environment": {}, "config": {}, "result": "succeeded"}]))
elif verb in ("config set", "config rm"):
    # Pulumi's own key rules: a key without a namespace is the project's; --path sets a list item.
    key = [a for a in args[2:] if not a.startswith("--")][0]
    key = key if ":" in key else "course-vm:" + key
    config = state["config"].setdefault(stack, {})
    name, _, index = key.rstrip("]").partition("[")
    if verb == "config rm":
        config.pop(key, None)
    elif "--path" in args and index:
        items = json.loads(config.get(name) or "[]")
        items += [None] * (int(index) + 1 - len(items))
        items[int(index)] = args[-1]
        config[name] = json.dumps(items)
    else:
        config[key] = args[-1]
elif verb == "config --show-secrets":
    print(json.dumps({k: {"value": v, "secret": False} for k, v in state["config"].get(stack, {}).items()}))
elif verb in ("preview", "destroy") and (verb == "preview" or "--preview-only" in args):
    log_events(state["events"])
elif verb == "up":
    log_events([])
    state["stacks"][stack] = state["next_outputs"]
    state["deployments"][stack] = state["next_deployments"].get(stack)
elif verb == "destroy":
    log_events([])
    state["stacks"][stack] = {}
    state["deployments"].pop(stack, None)
state_file.write_text(json.dumps(state))
"""


STACK_CONFIG = {
    "gcp:project": "course-project-1",
    "gcp:zone": "europe-west1-b",
    "course-vm:allowedSshCidrs": '["203.0.113.7/32"]',
}
"""A stack's config as `pulumi config --json` gives it (a list is its JSON text): what `up` reads."""


@dataclass
class StandInEngine:
    """A stand-in `pulumi` for the Automation API: stacks, their outputs, a recorded preview, failures."""

    environment: dict[str, str]
    calls_file: Path

    def calls(self) -> list[list[str]]:
        """Each command line the stand-in was run with, without --non-interactive."""
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def verbs(self) -> list[str]:
        return [" ".join(c[:2]) if c[0] in ("stack", "config") else c[0] for c in self.calls()]

    def config(self, stack: str) -> dict[str, str]:
        """The stack's config as the stand-in holds it now."""
        state = json.loads((self.calls_file.parent / "pulumi-stand-in.json").read_text())
        return dict(state["config"].get(stack, {}))


def stand_in_engine(
    tmp_path: Path,
    stacks: Mapping[str, Mapping[str, object]],
    *,
    events: list[dict[str, Any]] | None = None,
    next_outputs: Mapping[str, object] | None = None,
    fail: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Mapping[str, str]] | None = None,
) -> StandInEngine:
    """An environment whose `pulumi` serves the Automation API: STACKS (name -> outputs) exist,
    `preview`/`destroy --preview-only` report EVENTS, `up` makes NEXT_OUTPUTS the stack's outputs,
    each command of FAIL (e.g. "up": {"stderr": ...}) fails with that stderr and exit 255 (with a
    "deployment", the state it leaves: see exported_deployment), and `pulumi config` keeps CONFIG
    (stack -> key -> value; default: STACK_CONFIG for each of STACKS). `stack export` prints the
    deployment of a stack's outputs (exported_deployment), as a successful `up` leaves it."""
    state = tmp_path / "pulumi-stand-in.json"
    configs = {name: dict(STACK_CONFIG) for name in stacks} if config is None else config
    deployments = {name: exported_deployment(name, outputs) for name, outputs in stacks.items()}
    next_deployments = {name: exported_deployment(name, next_outputs or {}) for name in stacks}
    state.write_text(
        json.dumps(
            {"stacks": stacks, "events": events or [], "next_outputs": next_outputs or {}, "fail": fail or {},
             "config": configs, "deployments": deployments, "next_deployments": next_deployments}
        )
    )  # fmt: skip
    calls = tmp_path / "pulumi-calls.jsonl"
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(f"#!{sys.executable}\nSTATE = {str(state)!r}\nCALLS = {str(calls)!r}\n{ENGINE}")
    fake.chmod(0o755)
    # What `up` checks for before anything else (provisioner/cli/prerequisites.py): gcloud on PATH
    # (a stand-in that is never run) and application-default credentials where gcloud keeps them.
    gcloud = fake.parent / "gcloud"
    gcloud.write_text("#!/bin/sh\necho 'stand-in gcloud: not for use' >&2\nexit 1\n")
    gcloud.chmod(0o755)
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True, exist_ok=True)
    adc.write_text('{"type": "authorized_user", "client_id": "stand-in", "client_secret": "x", "refresh_token": "x"}\n')
    environment = {
        **os.environ,
        "PATH": f"{fake.parent}:{os.environ['PATH']}",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG"):
        environment.pop(name, None)
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        environment.pop(name, None)
    environment["PULUMI_HOME"] = str(tmp_path / "pulumi-home")  # not logged in anywhere
    environment["HOME"] = str(tmp_path)
    return StandInEngine(environment, calls)


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


# The stack's state, as `pulumi stack export` prints it.

PASSPHRASE_STATE = {"salt": "v1:VGVzdFNhbHQ=:v1:YTdiY2RlZmdoaWprbG1u:c3RhbmQtaW4tY2lwaGVydGV4dA=="}


def exported_deployment(
    stack: str, outputs: Mapping[str, Any], *, root: Mapping[str, Any] | None = None, unfinished: tuple[str, ...] = (),
    machines: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What `pulumi stack export --stack STACK` prints for this program whose VMs' outputs are OUTPUTS
    (the stack's outputs: one VM's, or a class's under `students`), built the way the CLI writes it.

    The CLI prints an apitype.UntypedDeployment, `{"version": 3, "deployment": DeploymentV3}`, whose
    `resources` are ResourceV3 (`urn`, `custom`, `id`, `type`, `inputs`, `outputs`, `parent`,
    `provider`, `dependencies`; sdk/go/common/apitype/core.go), each property serialized by
    pkg/resource/stack/deployment.go: a secret is `{SIG_KEY: SIG, "ciphertext": ...}` (with
    --show-secrets `"plaintext"`: its JSON text), and an empty `outputs` is left out (omitempty).
    The resources are this program's: the stack, the gcp provider, the CourseVm and its network,
    and per VM a StudentVm component whose `outputs` are what it registered (register_outputs),
    with its address, instance and, with verify (a `hostKeys` output), its verification.

    ROOT: the stack resource's outputs, the stack's outputs (default OUTPUTS; a failed update
    leaves the last successful one's). UNFINISHED: students whose update failed at their
    verification: their address and instance are there, their verification is not (a create
    that failed leaves nothing) and their StudentVm has no outputs (it never registered any).
    MACHINES: each student's instance's machine type and boot disk GB (default e2-standard-4, 30).
    """
    stack_urn = urn(stack, ["pulumi:pulumi:Stack"], f"course-vm-{stack}")
    provider_urn = urn(stack, ["pulumi:providers:gcp"], "default_8_10_0")
    provider = f"{provider_urn}::5d3e2a8c-0b8e-4a4c-9a3e-2f1c8a7b6d5e"
    course = urn(stack, [COURSE_VM], "course-vm")
    vms: dict[str, Mapping[str, Any]] = dict(outputs.get("students") or ({"": outputs} if outputs.get("ip") else {}))
    project = str(outputs.get("project") or STACK_CONFIG["gcp:project"])
    vms.update({name: {} for name in unfinished})

    def resource(types: list[str], name: str, parent: str, outs: Mapping[str, Any], custom: bool) -> dict[str, Any]:
        found: dict[str, Any] = {"urn": urn(stack, types, name), "custom": custom, "type": types[-1]}
        if custom:
            found.update(id=f"{name}-1a2b3c", provider=provider)
        found.update(inputs=dict(outs) if custom else {}, parent=parent, dependencies=[])
        if outs:
            found["outputs"] = dict(outs)
        found.update(created="2026-11-27T14:00:00.000000000Z", modified="2026-11-27T14:00:00.000000000Z")
        return found

    stack_resource = {"urn": stack_urn, "custom": False, "type": "pulumi:pulumi:Stack"}
    if root is None:
        root = outputs
    if root:
        stack_resource["outputs"] = dict(root)
    resources = [
        stack_resource,
        {"urn": provider_urn, "custom": True, "id": provider.rsplit("::", 1)[-1], "type": "pulumi:providers:gcp",
         "inputs": {"project": project, "version": "8.10.0"}, "outputs": {"project": project, "version": "8.10.0"}},
        resource([COURSE_VM], "course-vm", stack_urn, {"network": "course-vm-network-1a2b3c"}, False),
        resource([COURSE_VM, SHARED["network"]], "course-vm-network", course, {"project": project}, True),
    ]  # fmt: skip
    for index, (student, vm) in enumerate(vms.items(), start=10):
        name = f"course-vm-{student}" if student else "course-vm"
        types = [COURSE_VM, STUDENT_VM]
        vm_urn = urn(stack, types, name)
        resources.append(resource(types, name, course, vm, False))
        address = {"address": vm.get("ip") or f"34.78.1.{index}", "project": project, "region": "europe-west1"}
        resources.append(resource([*types, VM_CHILDREN["ip"]], f"{name}-ip", vm_urn, address, True))
        user_data = {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": "v1:c3RhbmQtaW4=:c3RhbmQtaW4tY2lwaGVydGV4dA=="}
        machine_type, boot_gb = (machines or {}).get(student, ("e2-standard-4", 30))
        instance = {"name": vm.get("instanceName") or f"{name}-vm-1a2b3c", "zone": vm.get("zone") or "europe-west1-b",
                    "project": project, "metadata": {"user-data": user_data}, "machineType": machine_type,
                    "bootDisk": {"initializeParams": {"size": boot_gb}}}  # fmt: skip
        resources.append(resource([*types, VM_CHILDREN["vm"]], f"{name}-vm", vm_urn, instance, True))
        if vm.get("hostKeys"):
            verified = {"host_keys": vm["hostKeys"], "known_hosts_file": vm.get("knownHostsFile")}
            resources.append(resource([*types, VM_CHILDREN["verify"]], f"{name}-verify", vm_urn, verified, True))
    manifest = {"time": "2026-11-27T14:00:00.000000000Z", "magic": "0c6e0a8ac3a3a5c7", "version": "v3.200.0"}
    secrets = {"type": "passphrase", "state": PASSPHRASE_STATE}
    return {"version": 3, "deployment": {"manifest": manifest, "secrets_providers": secrets, "resources": resources}}


SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 (Pulumi's marker for a secret value)
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
