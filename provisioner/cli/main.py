"""`course-vm` (or `python -m provisioner`): up, down, start, stop, status, render, check, local, env."""

from __future__ import annotations

import argparse
import os
import traceback
from collections.abc import Sequence

import provisioner
from provisioner.cli import check, env, handout, image, lifecycle, local_parser, render
from provisioner.cli.arguments import Parser, examples_text
from provisioner.cli.console import print_error
from provisioner.errors import CourseVmError, ExitStatus, InterruptionError, redacted
from provisioner.paths import state_home
from provisioner.stack import DEFAULT_STACK

TRACEBACK_VARIABLE = "COURSE_VM_TRACEBACK"
"""Set (to anything) to see an unexpected error's traceback on the terminal instead of in a file."""


DESCRIPTION = (
    "A course student's Linux VM on Google Cloud (or a class's, one VM each), made, checked and taken down "
    "with one command each; the same VM in a local QEMU VM with `local`."
)
EXAMPLES = (
    "course-vm up --project my-proj --zone europe-west1-b --allow 203.0.113.7/32",
    "course-vm local up",
    "course-vm up --help  # each command's options and examples",
)


def parser() -> Parser:
    top = Parser(prog="course-vm", description=DESCRIPTION, epilog=examples_text(EXAMPLES))
    top.add_argument("--version", action="version", version=f"course-vm {provisioner.__version__}")
    commands = top.add_commands("command")
    # In the order `--help` lists them: each command group adds its own commands.
    for group in (lifecycle, image, handout, render, check, local_parser, env):
        group.register(commands)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; every failure is one clear message and its exit status, never a traceback.

    Expected failures (CourseVmError) say what to do; Ctrl-C exits 130 saying what was left running;
    anything else is a bug: one line, exit 70, the traceback saved for the report (see `report_bug`).
    """
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except CourseVmError as error:
        return print_error(error)
    except KeyboardInterrupt:
        return print_error(InterruptionError(f"interrupted: {left_running(args)}"))
    except Exception as error:
        if os.environ.get(TRACEBACK_VARIABLE):
            raise
        return report_bug(error)


def left_running(args: argparse.Namespace) -> str:
    """What a command interrupted by Ctrl-C leaves behind, and how to go on. Commands that know more
    (`up`, `local up`) raise InterruptionError themselves."""
    stack = getattr(args, "stack", None) or DEFAULT_STACK
    words = (args.command, getattr(args, "local_command", None), getattr(args, "image_command", None))
    command = " ".join(word for word in words if word)
    name = getattr(args, "name", "")
    return {
        "down": f"Pulumi may have deleted some of stack {stack}'s resources before it stopped. "
        f"`course-vm down --stack {stack}` deletes the rest",
        "start": f"VMs already asked to start go on starting; `course-vm start --stack {stack}` waits for them again",
        "stop": f"VMs already asked to stop go on stopping; `course-vm stop --stack {stack}` waits for them again",
        "check": CHECK_INTERRUPTED,
        "local check": CHECK_INTERRUPTED + f"; the local VM {name} keeps running",
        "local down": f"the local VM {name} may be half removed. `course-vm local down --name {name}` finishes the job",
        "local image build": "the image was not finished; `course-vm local image build` starts over",
        "image bake": f"a builder VM may be running in stack {stack}-image. `course-vm image bake --stack {stack}` "
        f"starts over (it replaces the builder); `course-vm image delete --stack {stack}` removes it",
        "image delete": f"Pulumi may have deleted some of stack {stack}-image. "
        f"`course-vm image delete --stack {stack}` deletes the rest",
    }.get(command, "nothing was changed and nothing is left running")


CHECK_INTERRUPTED = (
    "the check changes nothing on the VM, and a command it had started there ends by itself "
    "within that command's time limit"
)


def report_bug(error: Exception) -> int:
    """Say that ERROR is a bug in one line, and where its traceback is saved; ExitStatus.BUG.

    Tokens and private keys are cut out of both (`redacted`): the user is asked to send them on.
    The traceback goes to a file (mode 0600: it may quote paths and settings), so the terminal
    shows what to do, and the report has everything a developer needs. If the file cannot be
    written, the traceback is printed after all: it must not be lost.
    """
    text = redacted("".join(traceback.format_exception(error)))
    saved = state_home() / "last-error.txt"
    try:
        saved.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        saved.unlink(missing_ok=True)
        fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(text)
        where = f"the traceback saved in {saved}"
    except OSError:
        where = f"this traceback:\n{text.rstrip()}"
    summary = redacted(f"{type(error).__name__}: {error}")
    return print_error_line(f"unexpected error: {summary}. This is a bug in course-vm: please report it with {where}")


def print_error_line(message: str) -> int:
    error = CourseVmError(message)
    error.exit_code = ExitStatus.BUG
    return print_error(error)
