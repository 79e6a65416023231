"""Stack outputs as the Pulumi program exports them (tests/gcp/test_course_vm.py checks that), built here alone."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from provisioner.access.ssh_config import ssh_config_block

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
PROJECT = "course-project-1"
ZONE = "europe-west1-b"
IAP = f"gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project {PROJECT} --zone {ZONE}"
"""The ProxyCommand an iap VM's outputs name (provisioner/access/proxy.py)."""


def vm_outputs(
    student: str = "",
    *,
    ip: str = "34.78.1.2",
    keys: Path | str = "/home/me/.ssh",
    stack: str = "dev",
    host_keys: Sequence[str] | None = (HOST_KEY,),
    iap: bool = False,
    forwards: Sequence[str] = ("8888", "5000"),
    forward_agent: bool = False,
    **changes: Any,
) -> dict[str, Any]:
    """What the program exports for STUDENT's VM ("" for a stack's one VM) of STACK, its key in KEYS:
    with HOST_KEYS pinned (None: verify=false), under IAP reached by instance name, FORWARDS (forwardPorts)
    and FORWARD_AGENT in its Host block; CHANGES on top."""
    alias = ("course-vm" if stack == "dev" else f"course-vm-{stack}") + (f"-{student}" if student else "")
    key = f"{keys}/course-vm" + (f"-{student}" if student else "")
    instance = f"course-vm-{student}-vm-1a2b3c" if student else "course-vm-vm-1a2b3c"
    host = instance if iap else ip
    pins = f"{key}.{stack}.known_hosts" if host_keys is not None else None
    user = student or "student"
    pinned = f" -o UserKnownHostsFile={pins} -o StrictHostKeyChecking=yes" if pins else ""
    proxy = f" -o 'ProxyCommand={IAP}'" if iap else ""
    outputs: dict[str, Any] = {
        "ip": "10.42.0.2" if iap else ip,
        "proxyCommand": IAP if iap else "",
        "sshCommand": f"ssh -i {key}{pinned}{proxy} {user}@{host}",
        "sshConfig": ssh_config_block(
            alias,
            host,
            user,
            key,
            pins,
            proxy_command=IAP if iap else None,
            forwards=forwards,
            forward_agent=forward_agent,
        ),
        "instanceName": instance,
        "zone": ZONE,
        "username": user,
        "identityFile": key,
        "forwardPorts": list(forwards),
        "forwardAgent": forward_agent,
    }
    if host_keys is not None:
        outputs.update(
            hostKeys=list(host_keys),
            hostKeyFingerprint="SHA256:fingerprint",
            knownHosts="\n".join(f"{host} {k}" for k in host_keys),
            knownHostsFile=pins,
        )
    return {**outputs, **changes}


def one_vm(**changes: Any) -> dict[str, Any]:
    """The outputs of a stack's one VM: its own at the top, and the project."""
    return {"project": PROJECT, **vm_outputs(**changes)}


def class_outputs(
    *students: str, vms: Mapping[str, Mapping[str, Any]] | None = None, project: str = PROJECT, **common: Any
) -> dict[str, Any]:
    """The outputs of a class of STUDENTS: each one's VM (COMMON changes to each, at its own address),
    or VMS as given."""
    built = {
        name: vm_outputs(name, **{"ip": f"34.78.1.{index}", **common}) for index, name in enumerate(students, start=10)
    }
    return {"project": project, "students": {**built, **{name: dict(vm) for name, vm in (vms or {}).items()}}}
