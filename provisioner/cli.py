"""`python -m provisioner`: the command line front end (render, check)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provisioner.checker import DEFAULT_TIMEOUT, check_vm
from provisioner.errors import EXIT_CHECK_FAILED, CourseVmError
from provisioner.gce import GceInstance, gce_host_keys
from provisioner.host_keys import HostKey, host_keys_from_known_hosts, parse_host_key
from provisioner.keys import ensure_key_pair
from provisioner.recipe import render_user_data
from provisioner.settings import settings_from_stack_file
from provisioner.ssh import Target

PROJECT_DIR = Path(__file__).resolve().parent.parent


def stack_file(project_dir: Path, stack: str | None) -> Path:
    """The `Pulumi.<stack>.yaml` to read: the named one, or the only one there is.

    Raises CourseVmError when no stack is named and there is not exactly one stack file.
    """
    if stack:
        return project_dir / f"Pulumi.{stack}.yaml"
    candidates = sorted(p for p in project_dir.glob("Pulumi.*.yaml") if p.name != "Pulumi.example.yaml")
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
    key = ensure_key_pair(settings.ssh_key_path, comment=f"{settings.username}@course-vm")
    sys.stdout.write(
        render_user_data(
            username=settings.username,
            ssh_public_key=key.public_key,
            anaconda=settings.anaconda,
            docker_compose=settings.docker_compose,
        )
    )
    return 0


def _progress(message: str) -> None:
    print(f"course-vm: {message}", file=sys.stderr, flush=True)


def stack_outputs(project_dir: Path, stack: str | None) -> dict[str, Any]:
    """The stack's outputs, read with the Pulumi CLI. Raises CourseVmError when that is not possible."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise CourseVmError("the Pulumi CLI is needed to read the stack's outputs and is not installed. "
                            "Fix: install it (https://www.pulumi.com/docs/install/), or pass --host, --user, "
                            "--identity and a host key source")  # fmt: skip
    command = [pulumi, "stack", "output", "--json", "--show-secrets", *(["--stack", stack] if stack else [])]
    result = subprocess.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CourseVmError(f"`pulumi stack output` failed: {result.stderr.strip()}. "
                            "Fix: select the stack (`pulumi stack select NAME`) after `pulumi up`")  # fmt: skip
    outputs = json.loads(result.stdout or "{}")
    missing = [k for k in ("ip", "username", "identityFile") if not outputs.get(k)]
    if missing:
        raise CourseVmError(f"the stack has no {', '.join(missing)} output. Fix: run `pulumi up` first")
    return dict(outputs)


def _target(args: argparse.Namespace, deadline: float) -> Target:
    if args.host is None:
        outputs = stack_outputs(args.project_dir, args.stack)
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
        raise CourseVmError("give exactly one host key source: --host-key, --known-hosts, or --gce-instance with "
                            "--gce-zone and --gce-project (the checker never trusts a key on first use)")  # fmt: skip
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
    try:
        target = _target(args, started + args.timeout)
        report = check_vm(target, max(args.timeout - (time.monotonic() - started), 1.0), _progress)
    except CourseVmError as error:
        if args.json:
            print(json.dumps({"host": args.host, "ok": False, "checks": [], "error": str(error)}))
        raise
    print(json.dumps(report.as_json()) if args.json else report.table())
    return 0 if report.ok else EXIT_CHECK_FAILED


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m provisioner", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)

    render_parser = commands.add_parser(
        "render", help="print the cloud-init user-data for a stack's settings (no cloud calls)"
    )
    render_parser.add_argument("--stack", help="stack name (reads Pulumi.STACK.yaml); default: the only stack")
    render_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    render_parser.set_defaults(run=render)

    check_parser = commands.add_parser(
        "check", help="log in and check the VM works (docker hello-world, docker-compose, conda)",
        description="Exit status: 0 all checks passed; 1 a check failed; 2 bad input; 3 VM not reached "
                    "before the deadline; 4 host key mismatch. Without --host: the current stack's VM.",
    )  # fmt: skip
    check_parser.add_argument("--host", help="address of the VM (default: the stack's `ip` output)")
    check_parser.add_argument("--port", type=int, default=22)
    check_parser.add_argument("--user", help="the course user to log in as")
    check_parser.add_argument("--identity", type=Path, help="private key file (mode 0400 or 0600)")
    check_parser.add_argument("--host-key", action="append", metavar="'TYPE BASE64'",
                              help="the VM's public host key (repeatable)")  # fmt: skip
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
    check_parser.add_argument("--stack", help="with no --host: the stack whose VM to check")
    check_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    check_parser.set_defaults(run=check)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; expected failures print one clear message and exit non-zero."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CourseVmError as error:
        print(f"course-vm: {error}", file=sys.stderr)
        return error.exit_code
