"""The course-vm command line as a user runs it: a process of its own, or `main` in this one."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
from collections.abc import Mapping

import pytest

from tests.conftest import ROOT

COMMAND = [sys.executable, "-m", "provisioner"]


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, typed: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`course-vm ARGS` to its end in ENV (default: this process's); stdin is no terminal: TYPED, or nothing."""
    return subprocess.run(
        [*COMMAND, *args],
        cwd=ROOT,
        env=None if env is None else dict(env),
        input=typed,
        stdin=subprocess.DEVNULL if typed is None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def started_cli(
    *args: str, env: Mapping[str, str], own_group: bool = False, for_ctrl_c: bool = True
) -> subprocess.Popen[str]:
    """`course-vm ARGS` started, its output piped, as a shell with job control starts it (so Ctrl-C reaches it).

    OWN_GROUP: in a session, and so a process group, of its own (Python 3.10 has no `process_group`), which
    `os.killpg` then signals as a terminal's Ctrl-C does: course-vm and the programs it runs (the Pulumi CLI)
    alike. Not FOR_CTRL_C: SIGINT is left as this process has it, for a test process with threads of its own,
    beside which a preexec_fn is unsafe.
    """
    # A shell without job control starts background commands with SIGINT ignored; Ctrl-C is the test.
    default_sigint = (lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)) if for_ctrl_c else None
    return subprocess.Popen(
        [*COMMAND, *args],
        cwd=ROOT,
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        start_new_session=own_group,
    )


def on_a_terminal(*args: str, env: Mapping[str, str], typed: bytes) -> tuple[int, str]:
    """`course-vm ARGS` with a terminal on stdin, on which TYPED is typed (b"" for end of input); its exit
    status and everything it printed."""
    controller, terminal = pty.openpty()
    with subprocess.Popen(
        [*COMMAND, *args], cwd=ROOT, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(env),
    ) as process:  # fmt: skip
        os.close(terminal)
        os.write(controller, typed or b"\x04")  # Ctrl-D: the terminal's end of input
        output, _ = process.communicate(timeout=120)
    os.close(controller)
    return process.returncode, output


IN_PROCESS_VARIABLES = ("PATH", "HOME", "XDG_STATE_HOME", "PULUMI_HOME")
"""What an environment of stand_in_pulumi sets that `main`, run in this process, needs too."""


def in_this_process(monkeypatch: pytest.MonkeyPatch, env: Mapping[str, str]) -> None:
    """Give this test process ENV's stand-in Pulumi CLI, home and state, for `main` run in it."""
    for name in IN_PROCESS_VARIABLES:
        monkeypatch.setenv(name, env[name])
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE"):
        monkeypatch.delenv(name, raising=False)
