"""`check`: log in and check a VM, or every student's VM of a class, the way a student uses it."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

from provisioner.access.host_keys import host_keys_from_known_hosts, parse_host_key
from provisioner.access.keys import SSH_KEY_PATH, KeyOption, check_private_key_file
from provisioner.access.ssh import Target
from provisioner.checker.checks import DEFAULT_TIMEOUT, NEW_VM_TIMEOUT, Report, check_vm
from provisioner.checker.class_pool import TargetSource, check_class
from provisioner.cli import arguments
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.cli.console import print_class_report, print_report, progress
from provisioner.driver.session import StackSession
from provisioner.driver.workspace import Workspace
from provisioner.errors import CourseVmError, MissingPrerequisiteError, SshKeyError
from provisioner.gcp.compute_api import GceInstance, published_host_keys
from provisioner.parallel import DEFAULT_WORKERS
from provisioner.stack import StackOutputs, VmOutputs


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "check",
        summary="log in and check the VM works (docker hello-world, docker-compose, conda)",
        description="Log in to the stack's VM and check it works the way a student uses it (docker "
        "hello-world, docker-compose, conda); a class stack: every student's VM at once, with one summary "
        "table. With --host: any VM, given its address, user, key and one host key source (--stack is then "
        "not read).\n"
        "\n"
        "Exit status: 0 all checks passed; 1 a check failed; 2 bad input; 3 VM not reached before the "
        "deadline; 4 host key mismatch; 6 a prerequisite missing (the Pulumi CLI, to read the stack). A class: "
        "the most serious student's.",
        examples=[
            "course-vm check  # the stack's VM, or every VM of a class",
            "course-vm check --stack fall --student alice --timeout 1800  # a new VM: wait for its setup",
            "course-vm check --host 203.0.113.20 --user student --identity ~/.ssh/course-vm "
            "--known-hosts ~/.ssh/known_hosts",
        ],
    )
    add_stack_option(parser)
    parser.add_argument("--host", help="the VM's address, to check a VM without reading the stack")
    parser.add_argument("--port", type=arguments.port, default=22, help="the VM's SSH port")
    parser.add_argument("--user", help="with --host: the course user to log in as")
    parser.add_argument(
        "--identity", type=Path, metavar="KEY", help="with --host: the private key file (mode 0400 or 0600)"
    )
    parser.add_argument(
        "--host-key", action="append", metavar="'TYPE BASE64'", help="the VM's public host key (repeatable)"
    )
    parser.add_argument("--known-hosts", type=Path, metavar="FILE", help="a known_hosts file listing the VM")
    parser.add_argument("--gce-instance", metavar="NAME", help="learn the host key from this GCE instance")
    parser.add_argument("--gce-zone", metavar="ZONE", help="the zone of --gce-instance")
    parser.add_argument("--gce-project", metavar="PROJECT", help="the project of --gce-instance")
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"one deadline for logging in and the VM's setup being over (default {DEFAULT_TIMEOUT:.0f}: a VM "
        f"whose setup is done; a new VM's setup takes up to {NEW_VM_TIMEOUT:.0f})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--student",
        action="append",
        metavar="NAME",
        help="a class stack: check only this student's VM (repeatable; default: every student)",
    )
    parser.add_argument(
        "--workers",
        type=arguments.whole(1, 100),
        default=DEFAULT_WORKERS,
        metavar="N",
        help="a class stack: check at most N VMs at once",
    )
    parser.set_defaults(run=check)


def check(args: argparse.Namespace) -> int:
    """Check a VM the way a student uses it; exit 0 ok, 1 a check failed (2, 3, 4: see errors.py)."""
    started = time.monotonic()
    args.host_given = args.host is not None
    args.proxy_command = ""
    if args.host is None and (args.student or _stack_outputs(args).is_class):
        return check_students(args)
    try:
        target = _target(args, started + args.timeout)
        report = check_vm(target, max(args.timeout - (time.monotonic() - started), 1.0), progress)
    except CourseVmError as error:
        if args.json:
            print(json.dumps({"host": args.host, "ok": False, "checks": [], "error": str(error)}))
        raise
    return report_with_hint(report, args.json)


def report_with_hint(report: Report, as_json: bool) -> int:
    """Print REPORT (see `print_report`); if the VM's setup was still running, say how to wait for it."""
    status = print_report(report, as_json)
    if any(c.name == "cloud-init" and not c.ok and c.detail.startswith("still running") for c in report.checks):
        progress(
            f"the VM's setup is still running: run the same check with --timeout {NEW_VM_TIMEOUT:.0f} to wait for it"
        )
    return status


def _target(args: argparse.Namespace, deadline: float) -> Target:
    if args.host is None:
        outputs = _stack_outputs(args)
        outputs.require_vms(args.stack)
        vm = outputs.vms[""]
        args.host, args.proxy_command = vm.ssh_host, vm.proxy_command
        args.user, args.identity = vm.username, Path(vm.identity_file)
        if vm.host_keys:
            args.host_key = list(vm.host_keys)
        elif not (args.host_key or args.known_hosts or args.gce_instance):
            args.gce_instance, args.gce_zone, args.gce_project = vm.instance_name, vm.zone, outputs.project
    elif args.user is None or args.identity is None:
        raise CourseVmError("--host needs --user and --identity too")
    sources = [bool(args.host_key), bool(args.known_hosts), bool(args.gce_instance)]
    if sum(sources) != 1:
        raise CourseVmError(
            "give exactly one host key source: --host-key, --known-hosts, or --gce-instance with "
            "--gce-zone and --gce-project (the checker never trusts a key on first use)"
        )
    identity = _identity(Path(args.identity).expanduser(), given=args.host_given)
    where = (args.host, args.port, args.user, identity)
    if args.host_key:
        return Target(*where, tuple(parse_host_key(t) for t in args.host_key), proxy_command=args.proxy_command)
    if args.known_hosts:
        known = host_keys_from_known_hosts(args.known_hosts, args.host, args.port)
        return Target(*where, known, proxy_command=args.proxy_command)
    if not (args.gce_zone and args.gce_project):
        raise CourseVmError("--gce-instance needs --gce-zone and --gce-project")
    published = published_host_keys(GceInstance(args.gce_project, args.gce_zone, args.gce_instance), progress)
    return Target(*where, published(deadline), published, args.proxy_command)


def _stack_outputs(args: argparse.Namespace) -> StackOutputs:
    """The stack's VMs, read once; without the Pulumi CLI, `check` can still be told where the VM is.

    Raises MissingPrerequisiteError (exit 6, as every command that needs the Pulumi CLI) when it is not installed.
    """
    if getattr(args, "outputs", None) is None:
        if not Workspace.installed():
            raise MissingPrerequisiteError(
                "with no --host, check reads the VM's address from the stack's outputs, which needs the Pulumi "
                "CLI, and it is not installed. Fix: pass --host, --user, --identity and one of --host-key, "
                "--known-hosts or --gce-instance; or install Pulumi (https://www.pulumi.com/docs/install/)"
            )
        args.outputs = StackSession.open(args.stack, reads_only=True).outputs()
    outputs: StackOutputs = args.outputs
    return outputs


IDENTITY = KeyOption(
    "--identity",
    "--identity {}",
    "pass --identity the private key file that logs in to the VM (course-vm's own: the stack's sshKeyPath, "
    "~/.ssh/course-vm by default)",
)
"""`check --identity`, as an error about the key names it."""


def _identity(path: Path, given: bool) -> Path:
    """PATH, the private key to log in with, if it is a private key file only its owner may read: else an
    error whose fix fits where it came from (GIVEN: --identity; else the stack's `identityFile` output,
    the key `up` made, which sshKeyPath names).

    Raises SshKeyError: what the file is (a public key, another file) before its mode. Before a
    host key is looked up, so that a wrong file is not told about anything else first.
    """
    if path.is_file():
        check_private_key_file(path, option=IDENTITY if given else SSH_KEY_PATH)
        return path
    problem = "does not exist" if not path.exists() else "is not a file"
    if given:
        raise SshKeyError(f"--identity {path} {problem}. Fix: {IDENTITY.otherwise}")
    raise SshKeyError(
        f"the stack's private key {path} (its identityFile output) {problem}. Fix: restore it from a backup, "
        "or pass --host, --user and --identity with the key that logs in to the VM"
    )


def class_targets(
    outputs: StackOutputs, only: Sequence[str] | None, stack_name: str, port: int = 22
) -> dict[str, TargetSource]:
    """How to reach each student's VM, from a class stack's OUTPUTS (ONLY: those students).

    Host keys come from the outputs (pinned by `pulumi up`), else from GCE's guest attributes.
    Raises CourseVmError for a student the stack has no VM of.
    """

    def source(vm: VmOutputs) -> TargetSource:
        def target(deadline: float) -> Target:
            where = (vm.ssh_host, port, vm.username, Path(vm.identity_file))
            if vm.host_keys:
                keys = tuple(parse_host_key(text) for text in vm.host_keys)
                return Target(*where, keys, proxy_command=vm.proxy_command)
            published = published_host_keys(GceInstance(outputs.project, vm.zone, vm.instance_name), progress)
            return Target(*where, published(deadline), published, vm.proxy_command)

        return target

    return {name: source(vm) for name, vm in outputs.chosen(only, stack_name).items()}


def check_students(args: argparse.Namespace) -> int:
    """Check every student's VM of a class stack (or those named by --student): one summary table.

    Exit status: 0 all passed, else the most serious student's status (see `check --help`).
    """
    outputs = _stack_outputs(args)
    if not outputs.is_class:
        raise CourseVmError("--student: the stack has no `students` output. Fix: set `students` and run `up` first")
    outputs.require_vms(args.stack)
    targets = class_targets(outputs, args.student, args.stack, args.port)
    report = check_class(targets, args.timeout, args.workers, progress)
    return print_class_report(report, args.json)
