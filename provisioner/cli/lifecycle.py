"""`up`, `down`, `start`, `stop`, `status`: a stack's VMs on Google Cloud, from creation to teardown."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from provisioner.access.ssh_config import host_alias
from provisioner.checker.class_pool import at_once
from provisioner.cli import arguments, prerequisites, stack
from provisioner.cli.console import confirm, plan_summary, progress
from provisioner.errors import CourseVmError
from provisioner.gcp.compute_api import (
    MANAGE_SCOPE,
    READ_SCOPE,
    GceInstance,
    application_default_token,
    compute_api,
    instance_status,
    start_instance,
    stop_instance,
)
from provisioner.paths import PROJECT_DIR
from provisioner.recipe.settings import DEFAULT_STACK, command

YES_HELP = "go on without asking after the preview (for scripts; without a terminal it is required)"


def register(commands: argparse._SubParsersAction[Any]) -> None:
    up_parser = commands.add_parser("up", help="create or update your course VM (drives the Pulumi CLI)")
    up_parser.add_argument("--project", help="GCP project ID (kept in the stack once set)")
    up_parser.add_argument("--zone", help="GCE zone, e.g. europe-west1-b (kept in the stack once set)")
    up_parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="an IPv4 range allowed to reach SSH, e.g. your address as 203.0.113.7/32 (repeatable); "
        "the ranges given REPLACE the stack's stored allowedSshCidrs",
    )
    up_parser.add_argument(
        "--add-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="an IPv4 range to add to the stack's stored allowedSshCidrs, keeping the others (repeatable)",
    )
    up_parser.add_argument("--stack", default=DEFAULT_STACK)
    up_parser.add_argument("--yes", action="store_true", help=YES_HELP)
    up_parser.set_defaults(run=up)
    down_parser = commands.add_parser("down", help="destroy the course VM and everything it uses")
    down_parser.add_argument("--stack", default=DEFAULT_STACK)
    down_parser.add_argument("--yes", action="store_true", help=YES_HELP)
    down_parser.set_defaults(run=down)
    power_parser(
        commands, "start", "start the stack's VMs again after they stopped (idle, nightly stop, Spot) and wait"
    )
    power_parser(commands, "stop", "stop the stack's VMs (their disks and addresses are kept, and billed) and wait")
    status_parser = commands.add_parser(
        "status", help="each VM of the stack: its state in GCE now, its address, whether its last verification passed"
    )
    status_parser.add_argument("--stack", default=DEFAULT_STACK)
    status_parser.add_argument(
        "--json",
        action="store_true",
        help="a JSON list, one object per VM, with the keys student, host, instance, zone, ip, state, state_error, "
        "verified (passed, failed, off, unknown), verified_at, verify_error",
    )
    status_parser.set_defaults(run=status)


def power_parser(commands: argparse._SubParsersAction[Any], name: str, help_text: str) -> None:
    """`start` or `stop` (NAME): the same options, the one command run by `change_power`."""
    parser = commands.add_parser(name, help=help_text)
    parser.add_argument("--stack", default=DEFAULT_STACK)
    parser.add_argument(
        "--student", action="append", metavar="NAME", help="a class: only this student's VM (repeatable)"
    )
    parser.add_argument("--timeout", type=arguments.seconds, default=300, metavar="SECONDS")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    parser.set_defaults(run=start if name == "start" else stop)


def up(args: argparse.Namespace) -> int:
    """Create or update the course VM (or a class's) with one command, then say how to log in.

    Pulumi's preview comes first, summarised per VM, then the Compute API and its quotas are
    checked, and nothing changes without a yes.
    """
    prerequisites.check(args.stack)
    progress(f"previewing the changes to stack {args.stack}")
    try:
        outputs = stack.up(
            args.stack, args.project, args.zone, args.allow, confirm=asker(args.stack, args.yes),
            added_cidrs=args.add_allow, check=prerequisites.compute_engine_ready,
        )  # fmt: skip
    except stack.PartialUpError as error:
        # The students whose VM finished can be handed out now; the error then says who failed.
        print("\n" + class_table(args.stack, error.outputs.get("students") or {}, error.failed), flush=True)
        raise
    if outputs.get("students"):
        print("\n" + class_table(args.stack, outputs["students"]))
        return 0
    alias = host_alias(args.stack)
    print(f"\nReady: `ssh {alias}` (VS Code Remote-SSH: host {alias}), or: {outputs.get('sshCommand', '')}")
    return 0


def class_table(stack_name: str, students: dict[str, Any], failed: Collection[str] = ()) -> str:
    """One line per student: ssh alias, address, key file and whether `pulumi up` verified the VM;
    the FAILED students' VMs did not finish (no ssh entry was written for them)."""
    rows = [("STUDENT", "SSH", "IP", "KEY", "VERIFIED")]
    for name in [*students, *(name for name in failed if name not in students)]:
        vm = students.get(name) or {}
        alias, key = host_alias(stack_name, name), str(vm.get("identityFile") or "-")
        ip = _address(vm.get("ip") or "-", bool(vm.get("proxyCommand")))
        verified = vm.get("hostKeyFingerprint") or "no (verify=false)"
        rows.append((name, alias, ip, key, "FAILED: see below" if name in failed else verified))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    # Not "give each student their key": a student who brought their own key is reached with the instructor's.
    handout = f"Hand each student their folder: `course-vm handout --stack {stack_name} --out DIR`"
    if failed:
        lines.append(
            f"{len(rows) - 1 - len(failed)} of {len(rows) - 1} VMs ready (not {', '.join(failed)}). {handout} "
            f"(the ready ones); `course-vm up --stack {stack_name}` again retries the others."
        )
    else:
        lines.append(f"{len(students)} VMs. {handout}; `course-vm check` checks them all again.")
    return "\n".join(lines)


def _address(ip: object, iap: bool) -> str:
    """A VM's address as the tables show it: an iap VM's is internal, reached only through the tunnel."""
    return f"{ip} (internal: IAP)" if iap else str(ip)


@dataclass(frozen=True)
class PowerChange:
    """What `start` or `stop` does to each VM, and what it says once that VM got there."""

    done: str
    """The VMs "could not be DONE" when some fail: started, stopped."""
    change: Callable[..., None]
    """start_instance or stop_instance (provisioner/gcp/compute_api.py)."""
    said: Callable[[str, str, dict[str, Any]], str]
    """What is printed for a VM that got there, given the stack, the student and the VM's outputs."""


def _running(stack_name: str, student: str, vm: dict[str, Any]) -> str:
    alias = host_alias(stack_name, student)
    # Under sshAccess iap (a proxyCommand) there is no external address: `ip` is one nobody outside reaches.
    if vm.get("proxyCommand"):
        return f"{alias}: running, reached through IAP (same host keys): `ssh {alias}`"
    return f"{alias}: running at {vm['ip']} (same address and host keys): `ssh {alias}`"


def _stopped(stack_name: str, student: str, vm: dict[str, Any]) -> str:
    again = f"course-vm start --stack {stack_name}" + (f" --student {student}" if student else "")
    kept = "disks kept" if vm.get("proxyCommand") else "disks and address kept"
    return f"{host_alias(stack_name, student)}: stopped ({kept}): `{again}` starts it again"


STARTED = PowerChange("started", start_instance, _running)
STOPPED = PowerChange("stopped", stop_instance, _stopped)


def start(args: argparse.Namespace) -> int:
    """Start the stack's stopped VMs (idle stop, nightly stop, Spot preemption) and wait until they run."""
    return change_power(args, STARTED)


def stop(args: argparse.Namespace) -> int:
    """Stop the stack's VMs (their disks and addresses stay) and wait until GCE reports them stopped."""
    return change_power(args, STOPPED)


def change_power(args: argparse.Namespace, how: PowerChange) -> int:
    """Start or stop (HOW) the VMs ARGS names, every one at once, and wait for each; 0 when all got there.

    One that fails does not keep the others from getting there. Raises CourseVmError listing each
    student that failed on a line of its own, with the highest of their exit statuses.
    """
    outputs = stack.stack_outputs(args.project_dir, args.stack)
    chosen = stack.stack_vms(outputs, args.student, args.stack)
    api = compute_api()  # checked before a token is fetched; one token for every VM
    access = application_default_token(MANAGE_SCOPE)
    deadline = time.monotonic() + args.timeout

    def one(vm: dict[str, Any]) -> CourseVmError | None:
        instance = GceInstance(str(outputs.get("project")), vm["zone"], vm["instanceName"])
        try:
            how.change(instance, deadline, progress, api=api, token=lambda: access, stack=args.stack)
        except CourseVmError as error:
            return error
        return None

    errors = dict(zip(chosen, at_once(one, list(chosen.values())), strict=True))
    for name, vm in chosen.items():
        if errors[name] is None:
            print(how.said(args.stack, name, vm), flush=True)
    failed = {host_alias(args.stack, name): error for name, error in errors.items() if error is not None}
    if failed:
        raise per_student_error(failed, len(chosen), f"could not be {how.done}")
    return 0


def per_student_error(failed: dict[str, CourseVmError], total: int, outcome: str) -> CourseVmError:
    """One error for the FAILED of TOTAL VMs (by alias): "2 of 30 VMs OUTCOME:", then one line per VM
    (alias: reason. Fix: ...); its exit status the highest of theirs. A stack's one VM: one line."""
    if total == 1:
        [(alias, error)] = failed.items()
        message = f"{alias}: {error}"
    else:
        rows = (f"  {alias}: {' '.join(str(error).split())}" for alias, error in failed.items())
        message = "\n".join([f"{len(failed)} of {total} VMs {outcome}:", *rows])
    combined = CourseVmError(message)
    combined.exit_code = max(error.exit_code for error in failed.values())
    return combined


def asker(stack_name: str, assume_yes: bool) -> stack.Confirm:
    """Show a plan and ask whether to go on (--yes: say yes); a plan without changes goes on unasked."""

    def ask(plan: stack.Plan) -> bool:
        print(plan_summary(stack_name, plan), flush=True)
        return not plan.changes or confirm("Proceed?", assume_yes=assume_yes)

    return ask


def down(args: argparse.Namespace) -> int:
    """Delete the stack's VMs and everything they use, after a preview and a yes."""
    stack.down(args.stack, confirm=asker(args.stack, args.yes))
    print(f"Removed the course VMs of stack {args.stack} and their ~/.ssh entries.")
    return 0


def status(args: argparse.Namespace) -> int:
    """One row per VM of the stack: its state as GCE reports it now, its address, its last verification.

    Never creates a stack; reads each VM's state with one Compute API call, all at once, and
    refreshes nothing. A state that cannot be read is `unknown` in its row, not a failure.
    """
    outputs = stack.status(args.stack)
    recorded = stack.recorded_verifications(args.stack)
    if not (outputs.get("students") or outputs.get("ip")):
        if args.json:
            print("[]")
        print(no_vms(args.stack, recorded), file=sys.stderr if args.json else sys.stdout)
        return 0
    rows = vm_statuses(args.stack, outputs, recorded)
    print(json.dumps([row.as_json() for row in rows], indent=2) if args.json else status_table(args.stack, rows))
    return 0


def no_vms(stack_name: str, recorded: dict[str, stack.Verification]) -> str:
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
        return {
            stack.PASSED: f"passed{when}",
            stack.FAILED: f"FAILED{when}",
            stack.OFF: "not verified (verify=false)",
        }.get(self.verified, "unknown")


def vm_statuses(stack_name: str, outputs: dict[str, Any], recorded: dict[str, stack.Verification]) -> list[VmStatus]:
    """The rows of `status`: each VM of OUTPUTS with its state read from GCE now (all at once) and its
    last verification, as `up` RECORDED it, else as the outputs show it (a pinned host key: passed)."""
    vms = stack.stack_vms(outputs)
    states = gce_states(str(outputs.get("project")), vms, stack_name)
    rows = []
    for student, vm in vms.items():
        state, state_error = states[student]
        verification = recorded.get(student)
        if verification is None and vm.get("hostKeyFingerprint"):
            verification = stack.Verification(stack.PASSED)
        rows.append(
            VmStatus(
                student=student,
                host=host_alias(stack_name, student),
                instance=str(vm.get("instanceName") or ""),
                zone=str(vm.get("zone") or ""),
                ip=vm.get("ip"),
                state=state,
                state_error=state_error,
                verified=verification.result if verification else "unknown",
                verified_at=verification.at if verification else None,
                verify_error=(verification.detail or None) if verification else None,
                iap=bool(vm.get("proxyCommand")),
            )
        )
    return rows


def gce_states(
    project: str, vms: dict[str, dict[str, Any]], stack_name: str = DEFAULT_STACK
) -> dict[str, tuple[str, str | None]]:
    """Each VM's (state, None) as GCE reports it now, or ("unknown", why): one instances.get per VM, all at once."""
    try:
        api = compute_api()  # checked before a token is fetched; one token for every VM
        access = application_default_token(READ_SCOPE)
    except CourseVmError as error:
        return {student: ("unknown", _reason(error)) for student in vms}

    def one(vm: dict[str, Any]) -> tuple[str, str | None]:
        if not vm.get("instanceName") or not vm.get("zone"):
            why = "the stack's outputs name no instance or zone for it"
            return "unknown", f"{why}. Fix: `{command('up', stack_name)}` exports them"
        try:
            instance = GceInstance(project, str(vm["zone"]), str(vm["instanceName"]))
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
        table.append((row.student or row.host, state, _address(row.ip, row.iap), row.verified_cell()))
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
    if any(row.verified == stack.FAILED for row in rows):
        lines.append(f"A FAILED verification runs again at the next `course-vm up --stack {stack_name}`.")
    return "\n".join(lines)
