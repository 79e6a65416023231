"""`env`: the shell lines that let the raw `pulumi` CLI work on the stacks course-vm uses."""

from __future__ import annotations

import argparse
from typing import Any

from provisioner.driver.workspace import raw_cli_lines


def register(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "env",
        help='print the lines that point the raw pulumi CLI at course-vm\'s stacks (eval "$(course-vm env)")',
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("\n".join(raw_cli_lines()))
    return 0
