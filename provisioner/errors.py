"""The errors course-vm expects, each saying what to do next, and the exit status each one means."""

from __future__ import annotations

import re
from collections.abc import Sequence
from enum import IntEnum
from typing import Protocol


class ExitStatus(IntEnum):
    """Every exit status course-vm has, the one table docs/errors.md lists (tests/test_docs.py keeps them in step)."""

    OK = 0
    """Done; for `check`, every check passed."""
    CHECK_FAILED = 1
    """The VM was reached, but a check failed."""
    BAD_INPUT = 2
    """Bad input, refused before anything changed."""
    UNREACHABLE = 3
    """The VM (or the Compute API) could not be reached before the deadline."""
    HOST_KEY_MISMATCH = 4
    """The VM presented a host key other than the pinned one."""
    ENGINE_FAILED = 5
    """The Pulumi engine (or Google Cloud behind it) refused or failed a change, or the CLI could not read the stack."""
    MISSING_PREREQUISITE = 6
    """A tool or login course-vm needs (Pulumi CLI, gcloud, application-default credentials, QEMU) is missing."""
    DECLINED = 7
    """A yes was needed and not given: the user answered no, or there was no terminal to ask on and no --yes."""
    LOCAL_TOOL_FAILED = 8
    """A program a local VM needs (QEMU, qemu-img, cloud-localds, debootstrap, its metadata server) failed."""
    BUG = 70
    """An unexpected error: a bug in course-vm (EX_SOFTWARE of sysexits.h), never one of the statuses above."""
    INTERRUPTED = 130
    """Ctrl-C: 128 + SIGINT, as shells report it."""


class CourseVmError(Exception):
    """An expected failure: the CLI prints its message without a traceback and exits `exit_code`."""

    exit_code = ExitStatus.BAD_INPUT


class ProblemRecord(Protocol):
    """A settings problem as data, `provisioner.recipe.problems.Problem`: this module imports no package, so it
    names only what SettingsError needs of one."""

    def in_pulumi_words(self) -> str:
        """The problem's line as the Pulumi program and `course-vm up` say it."""
        ...


class SettingsError(CourseVmError):
    """One or more settings are invalid; every problem is reported together.

    Each problem is a record (the settings' rules give every one so) or text (another stack's key
    claims, lines read back from the engine's output); the message says each in Pulumi's words.
    """

    def __init__(self, problems: Sequence[str | ProblemRecord], note: str = "") -> None:
        self.records = tuple(problem for problem in problems if not isinstance(problem, str))
        """The problems given as records, for a front end that words them itself (`recipe.problems.records_of`)."""
        self.problems = tuple(p if isinstance(p, str) else p.in_pulumi_words() for p in problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"course-vm settings: {count} {noun}, nothing was created:"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines + ([note] if note else [])))


class SshKeyError(CourseVmError):
    """An SSH key (ours or a host's) cannot be used as it is."""


class UnreachableError(CourseVmError):
    """The VM could not be reached and logged in to before the deadline."""

    exit_code = ExitStatus.UNREACHABLE


class EngineError(CourseVmError):
    """The Pulumi engine (or Google Cloud behind it) refused or failed a change: its own lines, then a next step."""

    exit_code = ExitStatus.ENGINE_FAILED


class BakeFailedError(CourseVmError):
    """The bake's VM ran, but its setup or its check failed: nothing was kept."""

    exit_code = ExitStatus.CHECK_FAILED


class HostKeyMismatchError(CourseVmError):
    """The VM presented a host key other than the pinned one: never retried."""

    exit_code = ExitStatus.HOST_KEY_MISMATCH


class MissingPrerequisiteError(CourseVmError):
    """A tool or login course-vm needs is missing; the message says how to get it."""

    exit_code = ExitStatus.MISSING_PREREQUISITE


class DeclinedError(CourseVmError):
    """A question was not answered yes (or could not be asked): nothing was changed."""

    exit_code = ExitStatus.DECLINED


class LocalToolError(CourseVmError):
    """A program run on this machine for a local VM failed; the message ends with its own words."""

    exit_code = ExitStatus.LOCAL_TOOL_FAILED


class InterruptionError(CourseVmError):
    """Ctrl-C: the message says what was left running and how to go on."""

    exit_code = ExitStatus.INTERRUPTED


ACCESS_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""What an OAuth bearer token may hold (RFC 6750's b64token): no space, quote or control character."""
_SECRETS = (
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)", re.DOTALL),
     "[private key redacted]"),
    (re.compile(r"(Bearer\s+)[^\s'\"]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"ya29\.[A-Za-z0-9._~+/-]+"), "ya29.[redacted]"),
)  # fmt: skip


def redacted(text: str) -> str:
    """TEXT without the secrets an error might quote: bearer tokens, Google access tokens (`ya29.`), private keys."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text
