"""Every `Fix:` line is right for the command that printed it: the commands and flags it suggests exist there."""

from __future__ import annotations

import argparse
import re
import shlex

from provisioner.cli.main import parser
from provisioner.recipe.settings import DEFAULTS


def command_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The argparse parser of the (sub)command ARGV runs, built as `python -m provisioner` builds it."""
    current = parser()
    for word in argv:
        actions = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions or word not in actions[0].choices:
            break
        current = actions[0].choices[word]
    return current


def assert_fixes_are_valid(argv: list[str], message: str) -> None:
    """Each `Fix:` of MESSAGE (what `python -m provisioner ARGV` printed) suggests only what exists:
    `python -m provisioner ...` commands that parse, flags of ARGV's own command, and settings that are settings."""
    fixes = [part for part in message.split("Fix: ")[1:]]
    assert fixes, f"no Fix: in {message!r}"
    options = set(command_parser(argv)._option_string_actions)
    for fix in fixes:
        for command in re.findall(r"(?:(?<![\w/.~-])course-vm|python -m provisioner) ([^`;|\n]*)", fix):
            try:
                parser().parse_args(shlex.split(command))
            except SystemExit:
                raise AssertionError(f"`course-vm {command}` does not parse (in {fix!r})") from None
        for key in re.findall(r"pulumi config (?:set|rm) (?:--path )?'?([\w:]+)", fix):
            if key.isupper():
                continue  # a placeholder: `pulumi config set KEY VALUE`
            assert key in DEFAULTS or key in ("gcp:project", "gcp:zone"), f"no setting {key!r} (in {fix!r})"
        if argv[:2] == ["local", "up"]:
            assert "pulumi" not in fix, f"local up takes settings as --set KEY=VALUE, not {fix!r}"
        for key in re.findall(r"(?<!leave out )--set '?(\w+)=", fix):
            assert key in DEFAULTS, f"no setting {key!r} (in {fix!r})"
        bare = re.sub(
            r"(?:(?<![\w/.~-])course-vm|python -m provisioner) [^`;|\n]*|pulumi [^`;,|\n]*|ssh-keygen [^`;,|\n]*",
            "",
            fix,
        )
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", bare):
            assert flag in options, f"{' '.join(argv[:2])} has no {flag} (in {fix!r})"
