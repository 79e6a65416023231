"""`up`, `down`, `start`, `stop`, `status`: their options, each turned into a typed call of its flow."""

from __future__ import annotations

import argparse
import json
import sys

from provisioner.access.ssh_config import host_alias
from provisioner.cli import arguments, prerequisites
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.cli.console import Confirm, confirm, plan_summary, progress
from provisioner.cli.down import down as run_down
from provisioner.cli.power import STARTED, STOPPED, change_power
from provisioner.cli.status import no_vms, status_table, vm_statuses
from provisioner.cli.up import PartialUpError, class_table
from provisioner.cli.up import up as run_up
from provisioner.cli.up_options import UpOptions
from provisioner.driver.plan import Plan
from provisioner.driver.session import StackSession
from provisioner.driver.verifications import recorded_verifications

YES_HELP = "go on without asking after the preview (for scripts; without a terminal it is required)"


def register(commands: Commands) -> None:
    _register_up(commands)
    _register_down(commands)
    _register_power(commands, "start")
    _register_power(commands, "stop")
    _register_status(commands)


def _register_up(commands: Commands) -> None:
    parser = add_command(
        commands,
        "up",
        summary="create or update your course VM, or a class's (drives the Pulumi CLI)",
        description="Create or update the stack's VM (a class: one per student) with one command, then say how "
        "to log in. The stack is created if needed and keeps --project, --zone, --allow and --set, so a later "
        "`up` needs no options; every option and stored setting is checked first, before anything is stored. "
        "Pulumi's preview comes first, summarised per VM, and nothing changes without a yes; `up` then waits "
        "until each VM's checks pass and writes its Host entry into ~/.ssh.",
        examples=[
            "course-vm up --project my-proj --zone europe-west1-b --allow 203.0.113.7/32",
            "course-vm up  # later: the stack kept its settings",
            "course-vm up --add-allow 198.51.100.4/32  # your address changed",
            "course-vm up --set autoStopIdleMinutes=0 --set spot=true  # any setting (docs/reference.md)",
        ],
    )
    add_stack_option(parser)
    parser.add_argument("--project", help="GCP project ID (kept in the stack once set)")
    parser.add_argument("--zone", help="GCE zone, e.g. europe-west1-b (kept in the stack once set)")
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="an IPv4 range allowed to reach SSH, e.g. your address as 203.0.113.7/32 (repeatable); "
        "the ranges given REPLACE the stack's stored allowedSshCidrs",
    )
    parser.add_argument(
        "--add-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="an IPv4 range to add to the stack's stored allowedSshCidrs, keeping the others (repeatable)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting to keep in the stack (repeatable), e.g. autoStopIdleMinutes=0, spot=true, "
        "homeDiskSizeGb=20, 'forwardPorts=[8888, 5000, 3000]' (a list as JSON); KEY= removes it (its default "
        "again); a relative studentsCsv or sshKeyPath is kept as its absolute path (docs/reference.md lists the keys)",
    )
    parser.add_argument("--yes", action="store_true", help=YES_HELP)
    parser.set_defaults(run=up)


def _register_down(commands: Commands) -> None:
    parser = add_command(
        commands,
        "down",
        summary="destroy the course VM and everything it uses",
        description="Delete the stack's VMs and everything they use (disks, addresses, firewall, network, "
        "schedule) and their ~/.ssh entries, after Pulumi's preview and a yes. The stack's settings are kept.",
        examples=["course-vm down", "course-vm down --stack fall --yes"],
    )
    add_stack_option(parser)
    parser.add_argument("--yes", action="store_true", help=YES_HELP)
    parser.set_defaults(run=down)


POWER = {
    "start": (
        "start the stack's VMs again after they stopped (idle, nightly stop, Spot) and wait",
        "Start the stack's stopped VMs (idle stop, nightly stop, Spot preemption), all at once, and wait until "
        "they run: same address, same host keys.",
    ),
    "stop": (
        "stop the stack's VMs (their disks and addresses are kept, and billed) and wait",
        "Stop the stack's VMs now, all at once, and wait until GCE reports them stopped. Their disks and "
        "addresses are kept (and billed); `course-vm start` brings them back as they were.",
    ),
}
"""`start` and `stop`, which take the same options: their summary and their description."""


def _register_power(commands: Commands, name: str) -> None:
    summary, description = POWER[name]
    parser = add_command(
        commands,
        name,
        summary=summary,
        description=description,
        examples=[f"course-vm {name}", f"course-vm {name} --stack fall --student alice --student bob"],
    )
    add_stack_option(parser)
    parser.add_argument(
        "--student", action="append", metavar="NAME", help="a class: only this student's VM (repeatable)"
    )
    parser.add_argument(
        "--timeout", type=arguments.seconds, default=300, metavar="SECONDS", help="how long to wait for the VMs"
    )
    parser.set_defaults(run=start if name == "start" else stop)


def _register_status(commands: Commands) -> None:
    parser = add_command(
        commands,
        "status",
        summary="each VM of the stack: its state in GCE now, its address, whether its last verification passed",
        description="One row per VM of the stack: its state as GCE reports it now, its address, and whether "
        "its last verification passed. It reads; it changes and refreshes nothing.",
        examples=["course-vm status", "course-vm status --stack fall --json"],
    )
    add_stack_option(parser)
    parser.add_argument(
        "--json",
        action="store_true",
        help="a JSON list, one object per VM, with the keys student, host, instance, zone, ip, state, state_error, "
        "verified (passed, failed, off, unknown), verified_at, verify_error",
    )
    parser.set_defaults(run=status)


def up(args: argparse.Namespace) -> int:
    """Create or update the course VM (or a class's) with one command, then say how to log in.

    Pulumi's preview comes first, summarised per VM, then the Compute API and its quotas are
    checked, and nothing changes without a yes.
    """
    options = UpOptions(
        args.project, args.zone, tuple(args.allow), tuple(args.add_allow), arguments.settings_given(args.set)
    )

    def ready(iap: bool) -> None:
        # What this machine lacks comes alone, before any word of a preview (the stack's settings say iap).
        prerequisites.check(args.stack, iap=iap)

    try:
        outputs = run_up(
            args.stack, options, confirm=asker(args.stack, args.yes), check=prerequisites.compute_engine_ready,
            ready=ready, on_progress=progress,
        )  # fmt: skip
    except PartialUpError as error:
        # The students whose VM finished can be handed out now; the error then says who failed.
        print("\n" + class_table(args.stack, error.outputs.vms, error.failed), flush=True)
        raise
    if outputs.is_class:
        print("\n" + class_table(args.stack, outputs.vms))
        return 0
    alias = host_alias(args.stack)
    ssh_command = outputs.vms[""].ssh_command if "" in outputs.vms else ""
    print(f"\nReady: `ssh {alias}` (VS Code Remote-SSH: host {alias}), or: {ssh_command}")
    return 0


def asker(stack_name: str, assume_yes: bool) -> Confirm:
    """Show a plan and ask whether to go on (--yes: say yes); a plan without changes goes on unasked."""

    def ask(plan: Plan) -> bool:
        print(plan_summary(stack_name, plan), flush=True)
        return not plan.changes or confirm("Proceed?", assume_yes=assume_yes)

    return ask


def down(args: argparse.Namespace) -> int:
    """Delete the stack's VMs and everything they use, after a preview and a yes."""
    run_down(args.stack, confirm=asker(args.stack, args.yes))
    print(f"Removed the course VMs of stack {args.stack} and their ~/.ssh entries.")
    return 0


def start(args: argparse.Namespace) -> int:
    """Start the stack's stopped VMs (idle stop, nightly stop, Spot preemption) and wait until they run."""
    change_power(args.stack, args.student, args.timeout, STARTED)
    return 0


def stop(args: argparse.Namespace) -> int:
    """Stop the stack's VMs (their disks and addresses stay) and wait until GCE reports them stopped."""
    change_power(args.stack, args.student, args.timeout, STOPPED)
    return 0


def status(args: argparse.Namespace) -> int:
    """One row per VM of the stack: its state as GCE reports it now, its address, its last verification.

    Never creates a stack; reads each VM's state with one Compute API call, all at once, and
    refreshes nothing. A state that cannot be read is `unknown` in its row, not a failure.
    """
    session = StackSession.open(args.stack)
    session.select()
    outputs = session.outputs()
    recorded = recorded_verifications(args.stack)
    if not outputs.vms:
        if args.json:
            print("[]")
        print(no_vms(args.stack, recorded), file=sys.stderr if args.json else sys.stdout)
        return 0
    rows = vm_statuses(args.stack, outputs, recorded)
    print(json.dumps([row.as_json() for row in rows], indent=2) if args.json else status_table(args.stack, rows))
    return 0
