"""`course-vm` (or `python -m provisioner`): the command line (up, down, start, status, render, check, local, env)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import provisioner
from provisioner.cli import check, env, lifecycle, local, render
from provisioner.cli.console import print_error
from provisioner.errors import CourseVmError


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="course-vm", description=__doc__)
    top.add_argument("--version", action="version", version=f"course-vm {provisioner.__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    # In the order `--help` lists them: each command group adds its own commands.
    for group in (lifecycle, render, check, local, env):
        group.register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; expected failures print one clear message and exit non-zero."""
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CourseVmError as error:
        return print_error(error)
