"""`python -m provisioner`: the command line front end."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from provisioner.errors import CourseVmError
from provisioner.keys import ensure_key_pair
from provisioner.recipe import render_user_data
from provisioner.settings import settings_from_stack_file

PROJECT_DIR = Path(__file__).resolve().parent.parent
EXIT_BAD_INPUT = 2


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


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m provisioner", description=__doc__)
    commands = top.add_subparsers(dest="command", required=True)
    render_parser = commands.add_parser(
        "render", help="print the cloud-init user-data for a stack's settings (no cloud calls)"
    )
    render_parser.add_argument("--stack", help="stack name (reads Pulumi.STACK.yaml); default: the only stack")
    render_parser.add_argument("--project-dir", type=Path, default=PROJECT_DIR, help=argparse.SUPPRESS)
    render_parser.set_defaults(run=render)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; expected failures print one clear message and exit non-zero."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CourseVmError as error:
        print(f"course-vm: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
