"""`--help` and the parser's errors: every command says what it does with an example, `--stack` means the same
everywhere, and a mistake is reported by the command it belongs to, in the user's words, not argparse's."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Iterator

import pytest

from provisioner.cli.arguments import STACK_HELP, Parser
from provisioner.cli.main import main, parser
from provisioner.stack import DEFAULT_STACK
from tests.support.cli import run_cli


def commands(top: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Parser]]:
    """Every command and subcommand under TOP, as its words (`local image bake`) and its parser."""
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                assert isinstance(sub, Parser), f"{name} is parsed by a plain ArgumentParser"
                yield " ".join((*path, name)), sub
                yield from commands(sub, (*path, name))


COMMANDS = {"": parser(), **dict(commands(parser()))}
"""Every command by its words, course-vm's own parser as ""."""
WITH_STACK = {"up", "down", "start", "stop", "status", "image bake", "image delete", "handout", "render", "check"}


def test_every_command_is_walked() -> None:
    assert {"", "up", "local", "local image", "local image bake", "local metadata-server", "env"} <= set(COMMANDS)


def flat(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_commands_help_says_what_it_does_with_an_example(words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main([*words.split(), "--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(" ".join(["usage: course-vm", *words.split(), "[-h]"]))
    description = text.split("\n\n")[1]
    assert not description.startswith(("options:", "positional")) and len(description.split()) >= 5, text
    assert re.search(r"^examples?:\n  \S", text, re.MULTILINE), text
    # Only a default that says something is shown.
    assert not re.search(r"\(default: (None|False|True|\[\]|)\)", flat(text)), text


def example_command_lines(words: str) -> Iterator[list[str]]:
    """The course-vm command lines of the examples in the epilog of command WORDS (`course-vm` left out)."""
    for line in (COMMANDS[words].epilog or "").splitlines()[1:]:
        lexer = shlex.shlex(line.partition("  # ")[0], posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for token in [*lexer, "&&"]:
            if token not in ("&&", "|", ">"):
                command.append(token)
                continue
            # Between `&&`, `|` and `>`: a command (maybe under sudo), another program's or a file name.
            command = command[1:] if command[:1] == ["sudo"] else command
            if command[:1] in (["course-vm"], ["$(command -v course-vm)"]):
                yield command[1:]
            command = []


@pytest.mark.parametrize("words", sorted(COMMANDS))
def test_every_example_parses(words: str, capsys: pytest.CaptureFixture[str]) -> None:
    examples = list(example_command_lines(words))
    assert examples, f"{words}: no course-vm example"
    for argv in examples:
        try:
            args = parser().parse_args(argv)
        except SystemExit as exit:
            assert (exit.code, argv[-1]) == (0, "--help"), (argv, capsys.readouterr().err)
        else:
            assert args.command == argv[0] and callable(args.run), argv


def test_stack_has_the_same_words_and_default_in_every_command_that_has_it() -> None:
    found = {}
    for words, command in COMMANDS.items():
        for action in command._actions:
            if "--stack" in action.option_strings:
                found[words] = (action.help, action.default, action.metavar)
    assert set(found) == WITH_STACK
    assert set(found.values()) == {(STACK_HELP, DEFAULT_STACK, "NAME")}


@pytest.mark.parametrize("words", sorted(WITH_STACK))
def test_stack_help_shows_its_default(words: str) -> None:
    assert f"--stack NAME {STACK_HELP} (default: {DEFAULT_STACK})" in flat(COMMANDS[words].format_help())


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["up", "--zon", "europe-west1-b"], "course-vm up"),
        (["local", "up", "--zon", "europe-west1-b"], "course-vm local up"),
        (["local", "image", "bake", "--stack", "dev"], "course-vm local image bake"),
        (["check", "--stak", "dev"], "course-vm check"),
    ],
)
def test_a_mistyped_option_is_reported_with_its_commands_usage(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # No abbreviation either: `--zon` is not taken for `--zone`.
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: {usage} [-h]")
    assert err.endswith(f"{usage}: error: unrecognized arguments: {' '.join(argv[-2:])}\n")


def test_a_mistyped_option_from_the_shell_is_reported_with_its_commands_usage() -> None:
    result = run_cli("up", "--zon", "europe-west1-b")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: course-vm up [-h]")
    assert result.stderr.endswith("course-vm up: error: unrecognized arguments: --zon europe-west1-b\n")


@pytest.mark.parametrize(
    ("argv", "choices"),
    [
        ([], "up, down, start, stop, status, image, handout, render, check, local, env"),
        (["local"], "image, up, check, ssh, down, list, metadata-server"),
        (["local", "image"], "build, bake"),
        (["image"], "bake, delete"),
    ],
)
def test_a_missing_command_lists_the_commands_not_an_internal_name(
    argv: list[str], choices: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    prog = " ".join(["course-vm", *argv])
    assert err.startswith(f"usage: {prog} [-h]") and " COMMAND ...\n" in err
    assert err.endswith(f"{prog}: error: choose a command: {choices}\n")
    assert "required" not in err and "_command" not in err


def test_an_unknown_command_names_no_internal_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["local", "upp"])
    err = capsys.readouterr().err
    assert "course-vm local: error: argument COMMAND: invalid choice: 'upp'" in err
    assert "local_command" not in err
