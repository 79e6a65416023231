"""`render`: the user-data `pulumi up` would send for a stack, printed without touching the cloud."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from provisioner.access.keys import ensure_key_pair
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.driver.config import StackConfig
from provisioner.errors import CourseVmError
from provisioner.paths import PROJECT_DIR
from provisioner.recipe.user_data import user_data_for


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "render",
        summary="print the cloud-init user-data for a stack's settings (no cloud calls)",
        description="Print the cloud-init user-data `up` would send for the stack's settings (a class: one "
        "student's), read from its Pulumi.NAME.yaml, without touching the cloud. Like `up`, it creates the "
        "key pair if it is missing; bad settings stop it as they stop `up`.",
        examples=["course-vm render", "course-vm render --stack fall --student alice > alice-user-data.yaml"],
    )
    add_stack_option(parser)
    parser.add_argument("--student", default="", metavar="NAME", help="a class stack: whose user-data")
    parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    parser.set_defaults(run=render)


def stack_file(project_dir: Path, stack: str | None) -> Path:
    """The `Pulumi.<stack>.yaml` to read: the named one, or the only one there is.

    Raises CourseVmError when no stack is named and there is not exactly one stack file.
    """
    candidates = sorted(project_dir.glob("Pulumi.*.yaml"))
    if stack:
        path = project_dir / f"Pulumi.{stack}.yaml"
        if path.exists() or path.is_symlink():
            return path
        others = ", ".join(f"--stack {p.name[len('Pulumi.') : -len('.yaml')]}" for p in candidates)
        raise CourseVmError(
            f"stack {stack} has no settings file {path.name} in {project_dir}. Fix: "
            + (f"{others}, or " if others else "")
            + f"`pulumi stack init {stack}`, then set gcp:project, gcp:zone and allowedSshCidrs as the README shows"
        )
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
    settings = StackConfig.from_stack_file(stack_file(args.project_dir, args.stack)).settings()
    seats = {seat.name: seat for seat in settings.seats}
    if args.student not in seats:
        names = ", ".join(seats)
        raise CourseVmError(
            f"--student {args.student}: not on the stack's roster. Fix: one of {names}"
            if args.student
            else f"the stack is a class: pass --student NAME (one of {names})"
        )
    seat = seats[args.student]
    key = ensure_key_pair(seat.ssh_key_path, comment=seat.key_comment)
    sys.stdout.write(
        user_data_for(settings, key.public_key, username=seat.username, student_public_key=seat.ssh_public_key)
    )
    return 0
