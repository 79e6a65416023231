"""`python -m provisioner`: every command group is reachable, and an expected failure is one line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.cli.main import main, parser
from tests.support.cli import run_cli


def test_help_lists_every_command_in_order() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: course-vm [-h] [--version] COMMAND ...\n")
    listed = re.findall(r"^    (\S+)", result.stdout.partition("\ncommands:\n")[2], re.MULTILINE)
    assert listed == ["up", "down", "start", "stop", "status", "image", "handout", "render", "check", "local", "env"]


def test_version_is_the_packages() -> None:
    from provisioner import __version__

    result = run_cli("--version")
    assert (result.returncode, result.stdout) == (0, f"course-vm {__version__}\n")


def test_an_expected_failure_is_one_line_and_its_exit_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["local", "down", "--name", "nothing-here"]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "course-vm: no local VM named 'nothing-here'\n")


def test_the_command_run_over_ssh_is_not_taken_for_the_command() -> None:
    # `args.command` names the command run (main.py's Ctrl-C message reads it), never a list of words.
    args = parser().parse_args(["local", "ssh", "--", "docker", "ps"])
    assert (args.command, args.local_command, args.remote_command) == ("local", "ssh", ["docker", "ps"])
