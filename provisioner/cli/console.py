"""What every command prints: progress lines on stderr, a report as a table or JSON on stdout."""

from __future__ import annotations

import json
import sys

from provisioner.checker.checks import Report
from provisioner.checker.class_pool import ClassReport
from provisioner.checker.printable import printable
from provisioner.errors import EXIT_CHECK_FAILED, CourseVmError


def progress(message: str) -> None:
    # Progress lines quote what deeper layers saw, some of it from the VM (an SSH banner in an error).
    print(f"course-vm: {printable(message)}", file=sys.stderr, flush=True)


def print_error(error: CourseVmError) -> int:
    """Print an expected failure as one clear message; its exit status. It may quote the VM, so only printable text."""
    print(f"course-vm: {printable(str(error))}", file=sys.stderr, flush=True)
    return error.exit_code


def print_report(report: Report, as_json: bool) -> int:
    """Print one VM's report; the exit status: 0 all checks passed, else 1."""
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return 0 if report.ok else EXIT_CHECK_FAILED


def print_class_report(report: ClassReport, as_json: bool) -> int:
    """Print a class's report; the exit status: the most serious student's."""
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return report.exit_code
