"""`python -m provisioner`: the command line front end (up, down, start, status, render, check, local)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from provisioner.access.host_keys import HostKey, host_keys_from_known_hosts, parse_host_key
from provisioner.access.keys import ensure_key_pair
from provisioner.access.ssh import Target
from provisioner.access.ssh_config import host_alias
from provisioner.checker.checks import DEFAULT_TIMEOUT, Report, check_vm
from provisioner.checker.class_pool import DEFAULT_WORKERS, ClassReport, TargetSource, check_class
from provisioner.cli import stack
from provisioner.errors import EXIT_CHECK_FAILED, CourseVmError, SettingsError
from provisioner.gcp.compute_api import GceInstance, gce_host_keys, start_instance
from provisioner.local import vm as local_vm
from provisioner.local.image import DEBIAN_MIRROR, build_debian_image, image_at, ubuntu_cloud_image
from provisioner.paths import PROJECT_DIR
from provisioner.recipe.settings import DEFAULT_STACK, parse_settings, settings_from_stack_file
from provisioner.recipe.user_data import user_data_for


def stack_file(project_dir: Path, stack: str | None) -> Path:
    """The `Pulumi.<stack>.yaml` to read: the named one, or the only one there is.

    Raises CourseVmError when no stack is named and there is not exactly one stack file.
    """
    if stack:
        return project_dir / f"Pulumi.{stack}.yaml"
    candidates = sorted(project_dir.glob("Pulumi.*.yaml"))
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CourseVmError(
            f"no stack settings (Pulumi.STACK.yaml) in {project_dir}. Fix: `pulumi stack init dev`, "
            "then set gcp:project, gcp:zone and allowedSshCidrs as the README shows"
        )
    found = ", ".join(p.name for p in candidates)
    raise CourseVmError(f"several stacks ({found}) and no --stack. Fix: pass --stack NAME")


def render(args: argparse.Namespace) -> int:
    """Print the user-data `pulumi up` would send for the stack, without touching the cloud."""
    settings = settings_from_stack_file(stack_file(args.project_dir, args.stack))
    seats = {seat.name: seat for seat in settings.seats}
    if args.student not in seats:
        names = ", ".join(seats)
        raise CourseVmError(
            f"--student {args.student}: not on the stack's roster. Fix: one of {names}"
            if args.student
            else f"the stack is a class: pass --student NAME (one of {names})"
        )
    seat = seats[args.student]
    key = ensure_key_pair(seat.ssh_key_path, comment=f"{seat.username}@course-vm")
    sys.stdout.write(user_data_for(settings, key.public_key, username=seat.username))
    return 0


def _progress(message: str) -> None:
    print(f"course-vm: {message}", file=sys.stderr, flush=True)


def stack_outputs(project_dir: Path, stack_name: str | None) -> dict[str, Any]:
    """The stack's outputs, read with the Pulumi CLI. Raises CourseVmError when that is not possible."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise CourseVmError(
            "the Pulumi CLI is needed to read the stack's outputs and is not installed. "
            "Fix: install it (https://www.pulumi.com/docs/install/), or pass --host, --user, "
            "--identity and a host key source"
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets", *(["--stack", stack_name] if stack_name else [])]
    # The backend `up` uses: without it the CLI would look for the stack somewhere else.
    environment = {**os.environ, **stack.backend_environment()}
    result = subprocess.run(command, cwd=project_dir, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CourseVmError(
            f"`pulumi stack output` failed: {result.stderr.strip()}. "
            "Fix: select the stack (`pulumi stack select NAME`) after `pulumi up`"
        )
    outputs = json.loads(result.stdout or "{}")
    missing = [] if outputs.get("students") else [k for k in ("ip", "username", "identityFile") if not outputs.get(k)]
    if missing:
        raise CourseVmError(f"the stack has no {', '.join(missing)} output. Fix: run `pulumi up` first")
    return dict(outputs)


def _target(args: argparse.Namespace, deadline: float) -> Target:
    if args.host is None:
        outputs = getattr(args, "outputs", None) or stack_outputs(args.project_dir, args.stack)
        args.host, args.user, args.identity = outputs["ip"], outputs["username"], Path(outputs["identityFile"])
        if outputs.get("hostKeys"):
            args.host_key = list(outputs["hostKeys"])
        elif not (args.host_key or args.known_hosts or args.gce_instance):
            args.gce_instance, args.gce_zone = outputs.get("instanceName"), outputs.get("zone")
            args.gce_project = outputs.get("project")
    elif args.user is None or args.identity is None:
        raise CourseVmError("--host needs --user and --identity too")
    sources = [bool(args.host_key), bool(args.known_hosts), bool(args.gce_instance)]
    if sum(sources) != 1:
        raise CourseVmError(
            "give exactly one host key source: --host-key, --known-hosts, or --gce-instance with "
            "--gce-zone and --gce-project (the checker never trusts a key on first use)"
        )
    host_keys: tuple[HostKey, ...]
    if args.host_key:
        host_keys = tuple(parse_host_key(text) for text in args.host_key)
    elif args.known_hosts:
        host_keys = host_keys_from_known_hosts(args.known_hosts, args.host, args.port)
    else:
        if not (args.gce_zone and args.gce_project):
            raise CourseVmError("--gce-instance needs --gce-zone and --gce-project")
        host_keys = gce_host_keys(GceInstance(args.gce_project, args.gce_zone, args.gce_instance), deadline, _progress)
    return Target(args.host, args.port, args.user, Path(args.identity).expanduser(), host_keys)


def check(args: argparse.Namespace) -> int:
    """Check a VM the way a student uses it; exit 0 ok, 1 a check failed (2, 3, 4: see errors.py)."""
    started = time.monotonic()
    if args.host is None and (args.student or _class_outputs(args)):
        return check_students(args)
    try:
        target = _target(args, started + args.timeout)
        report = check_vm(target, max(args.timeout - (time.monotonic() - started), 1.0), _progress)
    except CourseVmError as error:
        if args.json:
            print(json.dumps({"host": args.host, "ok": False, "checks": [], "error": str(error)}))
        raise
    return _print_report(report, args.json)


def _class_outputs(args: argparse.Namespace) -> dict[str, Any]:
    """The stack's outputs, read once; a class's have `students`."""
    if getattr(args, "outputs", None) is None:
        args.outputs = stack_outputs(args.project_dir, args.stack)
    return dict(args.outputs.get("students") or {})


def stack_vms(outputs: dict[str, Any], only: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The stack's VMs in its outputs, by student name ("" for a stack's one VM); ONLY: those named.

    Raises CourseVmError for a name not on the roster.
    """
    vms: dict[str, dict[str, Any]] = dict(outputs.get("students") or {"": outputs})
    unknown = [name for name in only or () if name not in vms]
    if unknown:
        known = ", ".join(name for name in vms if name) or "(none: the stack is not a class)"
        raise CourseVmError(f"no student {', '.join(unknown)} in the stack's roster. Fix: one of {known}")
    return {name: vms[name] for name in only or vms}


def class_targets(
    outputs: dict[str, Any], only: Sequence[str] | None = None, port: int = 22
) -> dict[str, TargetSource]:
    """How to reach each student's VM, from a class stack's outputs (ONLY: those students).

    Host keys come from the outputs (pinned by `pulumi up`), else from GCE's guest attributes.
    Raises CourseVmError for a student not on the roster (see `stack_vms`).
    """
    chosen = stack_vms(outputs, only)

    def source(vm: dict[str, Any]) -> TargetSource:
        def target(deadline: float) -> Target:
            if vm.get("hostKeys"):
                keys = tuple(parse_host_key(text) for text in vm["hostKeys"])
            else:
                instance = GceInstance(str(outputs.get("project")), vm["zone"], vm["instanceName"])
                keys = gce_host_keys(instance, deadline, _progress)
            return Target(vm["ip"], port, vm["username"], Path(vm["identityFile"]), keys)

        return target

    return {name: source(vm) for name, vm in chosen.items()}


def check_students(args: argparse.Namespace) -> int:
    """Check every student's VM of a class stack (or those named by --student): one summary table.

    Exit status: 0 all passed, else the most serious student's status (see `check --help`).
    """
    if not _class_outputs(args):
        raise CourseVmError("--student: the stack has no `students` output. Fix: set `students` and run `up` first")
    targets = class_targets(args.outputs, args.student, args.port)
    report = check_class(targets, args.timeout, args.workers, _progress)
    return _print_class_report(report, args.json)


def _print_class_report(report: ClassReport, as_json: bool) -> int:
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return report.exit_code


def _print_report(report: Report, as_json: bool) -> int:
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return 0 if report.ok else EXIT_CHECK_FAILED


def _settings_from_set(pairs: Sequence[str]) -> dict[str, str]:
    raw: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CourseVmError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set username=alice")
        raw[key] = value
    return raw


def up(args: argparse.Namespace) -> int:
    """Create or update the course VM (or a class's) with one command, then say how to log in."""
    outputs = stack.up(args.stack, args.project, args.zone, args.allow)
    if outputs.get("students"):
        print("\n" + class_table(args.stack, outputs["students"]))
        return 0
    alias = host_alias(args.stack)
    print(f"\nReady: `ssh {alias}` (VS Code Remote-SSH: host {alias}), or: {outputs.get('sshCommand', '')}")
    return 0


def class_table(stack_name: str, students: dict[str, Any]) -> str:
    """One line per student: ssh alias, address, key file and whether `pulumi up` verified the VM."""
    rows = [("STUDENT", "SSH", "IP", "KEY", "VERIFIED")]
    for name, vm in students.items():
        verified = vm.get("hostKeyFingerprint") or "no (verify=false)"
        rows.append((name, host_alias(stack_name, name), str(vm.get("ip")), str(vm.get("identityFile")), verified))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    lines.append(
        f"{len(students)} VMs. Give each student their key, its .known_hosts file and their Host block "
        "(~/.ssh/course-vm.config); `python -m provisioner check` checks them all again."
    )
    return "\n".join(lines)


def start(args: argparse.Namespace) -> int:
    """Start the stack's stopped VMs (idle stop, nightly stop, Spot preemption) and wait until they run.

    Every VM is started at once; one that cannot be started does not keep the others from starting.
    """
    outputs = stack_outputs(args.project_dir, args.stack)
    chosen = stack_vms(outputs, args.student)
    deadline = time.monotonic() + args.timeout

    def one(vm: dict[str, Any]) -> CourseVmError | None:
        instance = GceInstance(str(outputs.get("project")), vm["zone"], vm["instanceName"])
        try:
            start_instance(instance, deadline, _progress)
        except CourseVmError as error:
            return error
        return None

    with ThreadPoolExecutor(max_workers=min(DEFAULT_WORKERS, len(chosen))) as pool:
        errors = dict(zip(chosen, pool.map(one, chosen.values()), strict=True))
    for name, vm in chosen.items():
        alias = host_alias(args.stack, name)
        if errors[name] is None:
            print(f"{alias}: running at {vm['ip']} (same address and host keys): `ssh {alias}`")
    failed = {name: error for name, error in errors.items() if error is not None}
    if failed:
        error = CourseVmError("; ".join(f"{host_alias(args.stack, n)}: {e}" for n, e in failed.items()))
        error.exit_code = max(e.exit_code for e in failed.values())
        raise error
    return 0


def down(args: argparse.Namespace) -> int:
    stack.down(args.stack)
    print(f"Removed the course VMs of stack {args.stack} and their ~/.ssh entries.")
    return 0


def status(args: argparse.Namespace) -> int:
    outputs = stack.status(args.stack)
    if not outputs:
        print(f"stack {args.stack}: no course VM. Create one: python -m provisioner up --project YOUR-PROJECT-ID")
        return 0
    if outputs.get("students"):
        print(f"stack {args.stack}: a class\n" + class_table(args.stack, outputs["students"]))
        return 0
    print(
        f"stack {args.stack}: {outputs.get('instanceName')} in {outputs.get('zone')}, {outputs.get('ip')}; "
        f"`ssh {host_alias(args.stack)}`"
    )
    return 0


def local_up(args: argparse.Namespace) -> int:
    """Boot a local VM with the course recipe, then check it like `check` does."""
    started = time.monotonic()
    try:
        settings = parse_settings(_settings_from_set(args.set), None, None, for_gcp=False)
    except SettingsError as error:
        raise CourseVmError(f"{error}\n(for a local VM, set values with --set KEY=VALUE)") from None
    key = ensure_key_pair(settings.ssh_key_path, comment=f"{settings.username}@course-vm")
    home = local_vm.ensure_home_disk(args.home_disk, settings.home_disk_size_gb or 10) if args.home_disk else None
    image = image_at(args.image) if args.image else ubuntu_cloud_image(_progress)
    vm = local_vm.boot(
        args.name,
        image,
        user_data_for(settings, key.public_key, home_disk_device=local_vm.LOCAL_HOME_DISK_DEVICE if home else ""),
        user=settings.username,
        identity=settings.ssh_key_path,
        memory_mb=args.memory,
        cpus=args.cpus,
        disk_size=args.disk_size,
        accel=args.accel,
        home_disk=home,
        deadline=started + args.timeout,
        progress=_progress,
    )
    report = check_vm(vm.target(), max(args.timeout - (time.monotonic() - started), 60.0), _progress)
    _progress(
        f"`ssh {vm.host_alias}` (or `local ssh --name {args.name}`) logs in; "
        f"`local down --name {args.name}` removes the VM and its ssh config entry"
    )
    return _print_report(report, args.json)


def local_check(args: argparse.Namespace) -> int:
    vm = local_vm.load(args.name)
    if not vm.running():
        raise CourseVmError(
            f"local VM {args.name!r} is not running. Fix: `local down --name {args.name}`, "
            f"then `local up --name {args.name}`"
        )
    return _print_report(check_vm(vm.target(), args.timeout, _progress), args.json)


def local_ssh(args: argparse.Namespace) -> int:
    command = local_vm.load(args.name).ssh_command() + list(args.command)
    if args.print:
        print(shlex.join(command))
        return 0
    os.execvp(command[0], command)  # noqa: S606 (replaces this process with ssh, by design)


def local_down(args: argparse.Namespace) -> int:
    if not local_vm.down(args.name):
        raise CourseVmError(f"no local VM named {args.name!r}")
    print(f"removed local VM {args.name}")
    return 0


def local_list(_args: argparse.Namespace) -> int:
    for name in local_vm.names():
        vm = local_vm.load(name)
        state = "running" if vm.running() else "stopped"
        print(f"{name}\t{state}\t{vm.user}@127.0.0.1:{vm.ssh_port}\t{vm.accel}")
    return 0


def local_image_build(args: argparse.Namespace) -> int:
    image = build_debian_image(_progress, mirror=args.mirror)
    print(image.disk.parent)
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m provisioner", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    up_parser = commands.add_parser("up", help="create or update your course VM (drives the Pulumi CLI)")
    up_parser.add_argument("--project", help="GCP project ID (kept in the stack once set)")
    up_parser.add_argument("--zone", help="GCE zone, e.g. europe-west1-b (kept in the stack once set)")
    up_parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="an IPv4 range allowed to reach SSH, e.g. your address as 203.0.113.7/32 (repeatable)",
    )
    up_parser.add_argument("--stack", default=DEFAULT_STACK)
    up_parser.set_defaults(run=up)
    down_parser = commands.add_parser("down", help="destroy the course VM and everything it uses")
    down_parser.add_argument("--stack", default=DEFAULT_STACK)
    down_parser.set_defaults(run=down)
    start_parser = commands.add_parser(
        "start", help="start the stack's VMs again after they stopped (idle, nightly stop, Spot) and wait"
    )
    start_parser.add_argument("--stack", default=DEFAULT_STACK)
    start_parser.add_argument("--student", action="append", metavar="NAME", help="a class: only this student's VM")
    start_parser.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
    start_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    start_parser.set_defaults(run=start)
    status_parser = commands.add_parser("status", help="what exists")
    status_parser.add_argument("--stack", default=DEFAULT_STACK)
    status_parser.set_defaults(run=status)

    render_parser = commands.add_parser(
        "render", help="print the cloud-init user-data for a stack's settings (no cloud calls)"
    )
    render_parser.add_argument("--stack", help="stack name (reads Pulumi.STACK.yaml); default: the only stack")
    render_parser.add_argument("--student", default="", metavar="NAME", help="a class stack: whose user-data")
    render_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    render_parser.set_defaults(run=render)

    check_parser = commands.add_parser(
        "check",
        help="log in and check the VM works (docker hello-world, docker-compose, conda)",
        description="Exit status: 0 all checks passed; 1 a check failed; 2 bad input; 3 VM not reached "
        "before the deadline; 4 host key mismatch. Without --host: the current stack's VM, or every "
        "student's VM of a class stack at once, with one summary table (the exit status is then the "
        "most serious student's).",
    )
    check_parser.add_argument("--host", help="address of the VM (default: the stack's `ip` output)")
    check_parser.add_argument("--port", type=int, default=22)
    check_parser.add_argument("--user", help="the course user to log in as")
    check_parser.add_argument("--identity", type=Path, help="private key file (mode 0400 or 0600)")
    check_parser.add_argument(
        "--host-key", action="append", metavar="'TYPE BASE64'", help="the VM's public host key (repeatable)"
    )
    check_parser.add_argument("--known-hosts", type=Path, metavar="FILE", help="a known_hosts file listing the VM")
    check_parser.add_argument("--gce-instance", metavar="NAME", help="learn the host key from this GCE instance")
    check_parser.add_argument("--gce-zone", metavar="ZONE")
    check_parser.add_argument("--gce-project", metavar="PROJECT")
    check_parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"one deadline for reaching the VM and cloud-init (default {DEFAULT_TIMEOUT:.0f})",
    )
    check_parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    check_parser.add_argument(
        "--student",
        action="append",
        metavar="NAME",
        help="a class stack: check only this student's VM (repeatable; default: every student)",
    )
    check_parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        metavar="N",
        help=f"a class stack: check at most N VMs at once (default {DEFAULT_WORKERS})",
    )
    check_parser.add_argument("--stack", help="with no --host: the stack whose VM to check")
    check_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    check_parser.set_defaults(run=check)

    local = commands.add_parser("local", help="the course VM in a local QEMU VM").add_subparsers(
        dest="local_command", required=True
    )
    image = local.add_parser("image", help="local VM images").add_subparsers(dest="image_command", required=True)
    build = image.add_parser("build", help="build a Debian 12 image with debootstrap (needs root); prints its path")
    build.add_argument("--mirror", default=DEBIAN_MIRROR, help=f"Debian mirror (default {DEBIAN_MIRROR})")
    build.set_defaults(run=local_image_build)

    local_up_parser = local.add_parser(
        "up", help="boot a VM with the course recipe and check it (exit status as `check`)"
    )
    local_up_parser.add_argument(
        "--name", default="default", help="several VMs may exist side by side (default: default)"
    )
    local_up_parser.add_argument(
        "--image",
        type=Path,
        help="an image from `local image build` or a disk image (default: Ubuntu 24.04's cloud image, downloaded once)",
    )
    local_up_parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a course-vm setting, as in Pulumi.yaml (e.g. username=alice, artifactMirrorUrl=URL)",
    )
    local_up_parser.add_argument(
        "--home-disk",
        type=Path,
        metavar="PATH",
        help="keep /home on this disk image (created if missing, homeDiskSizeGb or 10 GB); "
        "`local down` keeps it, so the next VM gets the student's work back",
    )
    local_up_parser.add_argument("--memory", type=int, default=4096, metavar="MB")
    local_up_parser.add_argument("--cpus", type=int, default=2)
    local_up_parser.add_argument("--disk-size", default="30G", help="virtual disk size (default 30G; sparse)")
    local_up_parser.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto: KVM if it really starts the guest, else software emulation",
    )
    local_up_parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    local_up_parser.add_argument("--json", action="store_true")
    local_up_parser.set_defaults(run=local_up)

    local_check_parser = local.add_parser("check", help="check a running local VM again")
    local_check_parser.add_argument("--name", default="default")
    local_check_parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS")
    local_check_parser.add_argument("--json", action="store_true")
    local_check_parser.set_defaults(run=local_check)

    ssh = local.add_parser("ssh", help="log in to a local VM (host key pinned)")
    ssh.add_argument("--name", default="default")
    ssh.add_argument("--print", action="store_true", help="print the ssh command instead of running it")
    ssh.add_argument("command", nargs="*", help="a command to run instead of a shell")
    ssh.set_defaults(run=local_ssh)

    local_down_parser = local.add_parser("down", help="stop a local VM and remove its files")
    local_down_parser.add_argument("--name", default="default")
    local_down_parser.set_defaults(run=local_down)

    local.add_parser("list", help="the local VMs").set_defaults(run=local_list)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; expected failures print one clear message and exit non-zero."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CourseVmError as error:
        print(f"course-vm: {error}", file=sys.stderr)
        return error.exit_code
