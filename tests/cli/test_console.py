"""What the console prints: progress and errors, which may quote the VM, reach the terminal without escape sequences."""

from __future__ import annotations

import pytest

from provisioner.cli.console import print_error, progress
from provisioner.errors import UnreachableError

OSC_52 = "\x1b]52;c;cm0gLXJmIH4K\x07"


def test_an_error_quoting_the_vm_is_printed_without_its_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    error = UnreachableError(f'could not log in: Indecipherable protocol version "SSH-2.0{OSC_52}\x1b[2J"')
    assert print_error(error) == 3
    assert capsys.readouterr().err == 'course-vm: could not log in: Indecipherable protocol version "SSH-2.0"\n'


def test_progress_is_printed_without_escape_sequences(capsys: pytest.CaptureFixture[str]) -> None:
    progress(f"waiting for 10.0.0.2:22: SSH handshake failed ({OSC_52}\x07)")
    assert capsys.readouterr().err == "course-vm: waiting for 10.0.0.2:22: SSH handshake failed (\\x07)\n"
