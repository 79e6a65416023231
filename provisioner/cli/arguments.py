"""The command line's parts every command shares: its parser and help layout, `--stack`, and the value types
whose refusal is argparse's own (exit 2)."""

from __future__ import annotations

import argparse
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provisioner.errors import CourseVmError
from provisioner.stack import DEFAULT_STACK

if TYPE_CHECKING:
    from typing import TypeAlias

    Commands: TypeAlias = argparse._SubParsersAction["Parser"]
else:
    Commands = argparse._SubParsersAction
"""A parser's commands (`Parser.add_commands`), to which each command group's `register` adds its own."""

STACK_HELP = "the stack to act on: one set of settings (Pulumi.NAME.yaml) and the VMs made from them"


class HelpFormatter(argparse.HelpFormatter):
    """A command's `--help`: RawDescriptionHelpFormatter and ArgumentDefaultsHelpFormatter in one.

    The description's and epilog's line breaks are kept: a line that starts with a space (an example)
    is printed as written, any other is wrapped to the terminal. An option's default is shown when it
    says something (not None, a flag's False, an empty list) and its help does not already say it.
    """

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        lines: list[str] = []
        for line in text.splitlines():
            if not line.strip() or line[0].isspace():
                lines.append(indent + line if line.strip() else "")
            else:
                lines.extend(_wrapped(line, width, indent))
        return "\n".join(lines)

    def _split_lines(self, text: str, width: int) -> list[str]:
        return _wrapped(" ".join(text.split()), width)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        shown = shown_default(action.default)
        if not action.help or action.help == argparse.SUPPRESS or shown is None or "(default" in action.help:
            return action.help
        return f"{action.help} (default: {shown.replace('%', '%%')})"


def _wrapped(text: str, width: int, indent: str = "") -> list[str]:
    """TEXT in lines of at most WIDTH, each after INDENT; never broken inside a word (`docker-compose`, a path)."""
    return textwrap.wrap(
        text, width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )


def shown_default(value: object) -> str | None:
    """VALUE as `--help` shows an option's default; None when showing it would say nothing."""
    if value is None or isinstance(value, bool) or value == argparse.SUPPRESS or value in ("", [], ()):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Parser(argparse.ArgumentParser):
    """course-vm's parser and each of its commands': help laid out by HelpFormatter, and every mistake
    reported by the parser of the command it belongs to, with that command's usage.

    argparse leaves an option a command does not know to the top parser, whose usage (`course-vm [-h]
    COMMAND ...`) does not help; here the command's own parser refuses it (so `parse_known_args` returns
    no unknown arguments: it exits on any). A parser with commands (`add_commands`) given none lists them,
    instead of naming its internal `dest`.
    """

    commands: Commands | None = None

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        # A mistyped option is refused, never taken for the one it begins: an abbreviation would change
        # meaning the day an option sharing its start is added (`--st`: `--stack` or `--student`).
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(**kwargs)

    def add_commands(self, dest: str) -> Commands:
        """This parser's commands, of which one must be given; DEST names the one given in the parsed args."""
        self.commands = self.add_subparsers(
            title="commands", dest=dest, metavar="COMMAND", help=f"`{self.prog} COMMAND --help` says more"
        )
        return self.commands

    def parse_known_args(self, args: Iterable[str] | None = None, namespace: Any = None) -> tuple[Any, list[str]]:
        parsed, unknown = super().parse_known_args(args, namespace)
        if unknown:
            self.error(f"unrecognized arguments: {' '.join(unknown)}")
        if self.commands is not None and getattr(parsed, self.commands.dest, None) is None:
            self.error(f"choose a command: {', '.join(self.commands.choices)}")
        return parsed, unknown


def add_command(commands: Commands, name: str, *, summary: str, description: str, examples: Sequence[str]) -> Parser:
    """Command NAME among COMMANDS: SUMMARY in its parent's list, DESCRIPTION atop its `--help` and EXAMPLES
    (command lines, each maybe followed by `  # what it does`) below it."""
    return commands.add_parser(name, help=summary, description=description, epilog=examples_text(examples))


def examples_text(examples: Sequence[str]) -> str:
    """EXAMPLES as the end of a `--help`: under `example:` (or `examples:`), one a line, their `  # ...`
    comments lined up."""
    parts = [example.partition("  # ") for example in examples]
    width = max((len(line) for line, _, comment in parts if comment), default=0)
    lines = [f"  {line.ljust(width)}  # {comment}" if comment else f"  {line}" for line, _, comment in parts]
    return "\n".join(["example:" if len(examples) == 1 else "examples:", *lines])


def add_stack_option(parser: argparse.ArgumentParser) -> None:
    """`--stack NAME`: the same words and the same default (DEFAULT_STACK) in every command that has it."""
    parser.add_argument("--stack", default=DEFAULT_STACK, metavar="NAME", help=STACK_HELP)


_SIZE = re.compile(r"[1-9][0-9]*[KMGT]?")


def seconds(text: str) -> float:
    """A deadline in seconds: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from LOW to HIGH."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return value

    parse.__name__ = "whole number"  # argparse names the type so in its message
    return parse


port = whole(1, 65535)
port_or_any = whole(0, 65535)
"""A port, or 0: any free one."""


def disk_size(text: str) -> str:
    """A virtual disk size as qemu-img takes it: a whole number, optionally K, M, G or T."""
    if not _SIZE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 30G")
    return text


PATH_SETTINGS = ("studentsCsv", "sshKeyPath")
"""Settings that name a file: given relative, they are made absolute against the directory the command runs in."""


def settings_given(pairs: Sequence[str]) -> dict[str, str]:
    """The settings `--set KEY=VALUE` PAIRS give, by key; a relative path of PATH_SETTINGS made absolute against
    the working directory (stored so, it means the same file from anywhere). Raises CourseVmError for a pair
    without `=`."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CourseVmError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set username=alice")
        if key in PATH_SETTINGS and value and not value.startswith("~"):
            value = Path(value).absolute().as_posix()  # on Windows `C:\Users\...` too, as C:/Users/...
        given[key] = value
    return given
