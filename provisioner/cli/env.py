"""`env`: the shell lines that let the raw `pulumi` CLI work on the stacks course-vm uses."""

from __future__ import annotations

import argparse

from provisioner.cli.arguments import Commands, add_command
from provisioner.driver.workspace import raw_cli_lines


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "env",
        summary='print the lines that point the raw pulumi CLI at course-vm\'s stacks (eval "$(course-vm env)")',
        description="Print the shell lines that give the raw `pulumi` CLI what course-vm gives it: the same "
        "backend, the same passphrase, the same Python for the program and the same project directory. "
        "After them, `pulumi config`, `pulumi stack` and the like act on course-vm's stacks.",
        examples=['eval "$(course-vm env)"', "course-vm env | Out-String | iex  # PowerShell"],
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("\n".join(raw_cli_lines()))
    return 0
