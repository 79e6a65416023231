"""The errors course-vm expects, each saying what to do next."""

from __future__ import annotations

from collections.abc import Sequence


class CourseVmError(Exception):
    """An expected failure: the CLI prints its message on one line, without a traceback."""


class SettingsError(CourseVmError):
    """One or more settings are invalid; every problem is reported together."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        lines = [f"course-vm settings: {count} {noun}, nothing was created:"]
        lines += [f"  - {problem}" for problem in self.problems]
        super().__init__("\n".join(lines))


class SshKeyError(CourseVmError):
    """The SSH key at `sshKeyPath` cannot be used as it is."""
