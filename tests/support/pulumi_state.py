"""A stack's state as `pulumi stack export` prints it, built the way the CLI writes it, for this program's resources."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tests.support.pulumi_events import COURSE_VM, SHARED, STUDENT_VM, VM_CHILDREN, urn

STACK_CONFIG = {
    "gcp:project": "course-project-1",
    "gcp:zone": "europe-west1-b",
    "course-vm:allowedSshCidrs": '["203.0.113.7/32"]',
}
"""A stack's config as `pulumi config --json` gives it (a list is its JSON text): what `up` reads."""


PASSPHRASE_STATE = {"salt": "v1:VGVzdFNhbHQ=:v1:YTdiY2RlZmdoaWprbG1u:c3RhbmQtaW4tY2lwaGVydGV4dA=="}


def exported_deployment(
    stack: str, outputs: Mapping[str, Any], *, root: Mapping[str, Any] | None = None, unfinished: tuple[str, ...] = (),
    machines: Mapping[str, tuple[str, int]] | None = None, home_disks: Mapping[str, int] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What `pulumi stack export --stack STACK` prints for this program whose VMs' outputs are OUTPUTS
    (the stack's outputs: one VM's, or a class's under `students`), built the way the CLI writes it.

    The CLI prints an apitype.UntypedDeployment, `{"version": 3, "deployment": DeploymentV3}`, whose
    `resources` are ResourceV3 (`urn`, `custom`, `id`, `type`, `inputs`, `outputs`, `parent`,
    `provider`, `dependencies`; sdk/go/common/apitype/core.go), each property serialized by
    pkg/resource/stack/deployment.go: a secret is `{SIG_KEY: SIG, "ciphertext": ...}` (with
    --show-secrets `"plaintext"`: its JSON text), and an empty `inputs`, `outputs` or `dependencies`
    is left out (omitempty), as in the checkpoint Pulumi recorded (tests/driver/recorded/).
    The resources are this program's, in the order the engine registered them: the stack, the gcp
    provider, the CourseVm and its network, subnet and firewall, and per VM a StudentVm component whose
    `outputs` are what it registered (register_outputs), with its address, home disk (HOME_DISKS:
    student -> its GB; none by default), instance and, with verify (a `hostKeys` output), its
    verification and the pulumi-python provider before the first.

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
        if custom:  # a component's inputs are none: omitted (omitempty), as are its empty outputs
            found["inputs"] = dict(outs)
        if outs:
            found["outputs"] = dict(outs)
        found["parent"] = parent
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
        *(resource([COURSE_VM, SHARED[role]], f"course-vm-{role}", course, {"project": project}, True)
          for role in ("network", "subnet", "ssh")),
    ]  # fmt: skip
    python_provider = urn(stack, ["pulumi:providers:pulumi-python"], "default")
    for index, (student, vm) in enumerate(vms.items(), start=10):
        name = f"course-vm-{student}" if student else "course-vm"
        types = [COURSE_VM, STUDENT_VM]
        vm_urn = urn(stack, types, name)
        resources.append(resource(types, name, course, vm, False))
        address = {"address": vm.get("ip") or f"34.78.1.{index}", "project": project, "region": "europe-west1"}
        resources.append(resource([*types, VM_CHILDREN["ip"]], f"{name}-ip", vm_urn, address, True))
        if student in (home_disks or {}):
            home = {"size": (home_disks or {})[student], "project": project, "zone": "europe-west1-b"}
            resources.append(resource([*types, VM_CHILDREN["home"]], f"{name}-home", vm_urn, home, True))
        user_data = {SECRET_SIG_KEY: SECRET_SIG, "ciphertext": "v1:c3RhbmQtaW4=:c3RhbmQtaW4tY2lwaGVydGV4dA=="}
        machine_type, boot_gb = (machines or {}).get(student, ("e2-standard-4", 30))
        instance = {"name": vm.get("instanceName") or f"{name}-vm-1a2b3c", "zone": vm.get("zone") or "europe-west1-b",
                    "project": project, "metadata": {"user-data": user_data}, "machineType": machine_type,
                    "bootDisk": {"initializeParams": {"size": boot_gb}}}  # fmt: skip
        resources.append(resource([*types, VM_CHILDREN["vm"]], f"{name}-vm", vm_urn, instance, True))
        if vm.get("hostKeys"):
            if not any(r["urn"] == python_provider for r in resources):
                resources.append({"urn": python_provider, "custom": True, "type": "pulumi:providers:pulumi-python",
                                  "id": "0f8b2d3c-5a6e-4c1d-9e7f-3b2a1c0d9e8f"})  # fmt: skip
            verified = {"host_keys": vm["hostKeys"], "known_hosts_file": vm.get("knownHostsFile")}
            resources.append(resource([*types, VM_CHILDREN["verify"]], f"{name}-verify", vm_urn, verified, True))
    manifest = {"time": "2026-11-27T14:00:00.000000000Z", "magic": "0c6e0a8ac3a3a5c7", "version": "v3.200.0"}
    secrets = {"type": "passphrase", "state": PASSPHRASE_STATE}
    return {"version": 3, "deployment": {"manifest": manifest, "secrets_providers": secrets, "resources": resources}}


SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105 (Pulumi's marker for a secret value)
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
