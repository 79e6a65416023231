"""`status`: each VM of a stack, its state in GCE now, its address, and how its last verification ended."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from provisioner.access.ssh_config import host_alias
from provisioner.cli.up import address_cell
from provisioner.driver.verifications import Result, Verification
from provisioner.errors import CourseVmError
from provisioner.gcp.compute_api import READ_SCOPE, GceInstance, application_default_token, compute_api
from provisioner.gcp.instance_power import instance_status
from provisioner.parallel import at_once
from provisioner.stack import DEFAULT_STACK, StackOutputs, VmOutputs, command


def no_vms(stack_name: str, recorded: Mapping[str, Verification]) -> str:
    """What `status` says of a stack whose outputs name no VM: none was made, or (RECORDED) the first
    `up` failed part way, which leaves no outputs, though VMs may exist."""
    if not recorded:
        return f"stack {stack_name}: no course VM. Create one: course-vm up --project YOUR-PROJECT-ID"
    seen = ", ".join(f"{student or host_alias(stack_name)} {v.result}" for student, v in sorted(recorded.items()))
    return (
        f"stack {stack_name}: no VMs in its outputs, for its first `course-vm up` did not finish; VMs may exist "
        f"(that up verified: {seen}). `course-vm up --stack {stack_name}` finishes it; "
        f"`course-vm down --stack {stack_name}` removes what exists"
    )


@dataclass(frozen=True)
class VmStatus:
    """One VM in `status`: `--json` prints `as_json()`, whose keys are part of the command line's interface."""

    student: str
    """The student's name; "" for a stack's one VM."""
    host: str
    """Its `Host` alias in ~/.ssh/config."""
    instance: str
    zone: str
    ip: str | None
    state: str
    """As GCE reports it now: RUNNING, TERMINATED (stopped), STAGING, STOPPING, SUSPENDED, ...; or unknown."""
    state_error: str | None
    """Why the state is unknown, with a `Fix:`; None when it is not."""
    verified: str
    """passed, failed, off (verify=false), or unknown."""
    verified_at: str | None
    """When its last verification ran (ISO 8601, UTC); None when not known."""
    verify_error: str | None
    """Why it failed; None when it did not."""
    iap: bool = False
    """Reached through Identity-Aware Proxy (sshAccess iap): IP is then its internal address."""

    def as_json(self) -> dict[str, object]:
        return asdict(self)

    def verified_cell(self) -> str:
        when = f" ({self.verified_at.replace('T', ' ').removesuffix('Z')} UTC)" if self.verified_at else ""
        cells = {
            Result.PASSED: f"passed{when}",
            Result.FAILED: f"FAILED{when}",
            Result.OFF: "not verified (verify=false)",
        }
        return cells[Result(self.verified)] if self.verified in cells else "unknown"


def vm_statuses(stack_name: str, outputs: StackOutputs, recorded: Mapping[str, Verification]) -> list[VmStatus]:
    """The rows of `status`: each VM of OUTPUTS with its state read from GCE now (all at once) and its
    last verification, as `up` RECORDED it, else as the outputs show it (a pinned host key: passed)."""
    states = gce_states(outputs.project, outputs.vms, stack_name)
    rows = []
    for student, vm in outputs.vms.items():
        state, state_error = states[student]
        verification = recorded.get(student)
        if verification is None and vm.host_key_fingerprint:
            verification = Verification(Result.PASSED)
        rows.append(
            VmStatus(
                student=student,
                host=host_alias(stack_name, student),
                instance=vm.instance_name,
                zone=vm.zone,
                ip=vm.ip or None,
                state=state,
                state_error=state_error,
                verified=str(verification.result) if verification else "unknown",
                verified_at=verification.at if verification else None,
                verify_error=(verification.detail or None) if verification else None,
                iap=vm.iap,
            )
        )
    return rows


def gce_states(
    project: str, vms: Mapping[str, VmOutputs], stack_name: str = DEFAULT_STACK
) -> dict[str, tuple[str, str | None]]:
    """Each VM's (state, None) as GCE reports it now, or ("unknown", why): one instances.get per VM, all at once."""
    try:
        api = compute_api()  # checked before a token is fetched; one token for every VM
        access = application_default_token(READ_SCOPE)
    except CourseVmError as error:
        return {student: ("unknown", _reason(error)) for student in vms}

    def one(vm: VmOutputs) -> tuple[str, str | None]:
        if not vm.instance_name or not vm.zone:
            why = "the stack's outputs name no instance or zone for it"
            return "unknown", f"{why}. Fix: `{command('up', stack_name)}` exports them"
        try:
            instance = GceInstance(project, vm.zone, vm.instance_name)
            return instance_status(instance, api=api, token=lambda: access, stack=stack_name), None
        except CourseVmError as error:
            return "unknown", _reason(error)

    return dict(zip(vms, at_once(one, list(vms.values())), strict=True))


def _reason(error: CourseVmError) -> str:
    """ERROR's message on one line (a row of `--json`), its `Fix:` included."""
    return " ".join(str(error).split())


def _short(reason: str) -> str:
    """REASON without its parentheses and its `Fix:`: what fits in a table's cell."""
    said = reason.split(" Fix: ", 1)[0]
    while (shorter := re.sub(r" ?\([^()]*\)", "", said)) != said:
        said = shorter
    return said.rstrip(". ")


def status_table(stack_name: str, rows: list[VmStatus]) -> str:
    """`status` for a person: a line per VM (STUDENT, STATE, IP, VERIFIED), why any state is unknown, what next."""
    table = [("STUDENT", "STATE", "IP", "VERIFIED")]
    for row in rows:
        state = f"unknown ({_short(row.state_error)})" if row.state_error else row.state
        table.append((row.student or row.host, state, address_cell(row.ip, row.iap), row.verified_cell()))
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    lines = [
        "  ".join(f"{cell:<{w}}" for cell, w in zip(line, widths, strict=False)) + "  " + line[-1] for line in table
    ]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.state] = counts.get(row.state, 0) + 1
    noun = "VM" if len(rows) == 1 else "VMs"
    lines.append(f"stack {stack_name}: {len(rows)} {noun}, " + ", ".join(f"{n} {state}" for state, n in counts.items()))
    unknown: dict[str, list[str]] = {}
    for row in rows:
        if row.state_error:
            unknown.setdefault(row.state_error, []).append(row.student or row.host)
    for reason, who in unknown.items():
        lines.append(f"{', '.join(who)}: {reason}")
    if any(row.verified == Result.FAILED for row in rows):
        lines.append(f"A FAILED verification runs again at the next `course-vm up --stack {stack_name}`.")
    return "\n".join(lines)
