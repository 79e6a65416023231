"""A class's VMs checked at once: a bounded pool of workers, one summary table, no result hidden."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from provisioner.access.ssh import Progress, Target
from provisioner.checker.checks import DEFAULT_TIMEOUT, Report, check_vm
from provisioner.errors import CourseVmError, ExitStatus
from provisioner.parallel import DEFAULT_WORKERS, at_once
from provisioner.terminal import printable

TargetSource = Callable[[float], Target]
"""Gives a student's Target by the deadline passed in (learning its host keys may take a call)."""


@dataclass(frozen=True)
class StudentResult:
    """One student's row: the checker's report, or the error that stopped the check."""

    student: str
    seconds: float
    report: Report | None = None
    error: str = ""
    """Why the check stopped; errors may quote the VM (an SSH banner), so only printable text."""
    exit_code: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "error", printable(self.error))

    @property
    def ok(self) -> bool:
        return self.report is not None and self.report.ok

    def detail(self) -> str:
        if self.report is None:
            return self.error
        failed = [f"{c.name}: {(c.detail.splitlines() or [''])[0]}" for c in self.report.checks if not c.ok]
        return "; ".join(failed) if failed else "all checks passed"


@dataclass(frozen=True)
class ClassReport:
    """Every student's result, in roster order; `ok` only when every VM passed."""

    results: tuple[StudentResult, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.results)

    @property
    def exit_code(self) -> int:
        """0 when all passed, else the most serious student's status (4 mismatch > 3 unreachable > 2 > 1)."""
        return max((r.exit_code for r in self.results), default=0)

    def table(self) -> str:
        width = max([len("STUDENT"), *(len(r.student) for r in self.results)])
        host_width = max([len("HOST"), *(len(r.report.host) for r in self.results if r.report)])
        lines = [f"{'STUDENT':<{width}}  {'HOST':<{host_width}}  RESULT  {'TIME':>7}  DETAIL"]
        for r in self.results:
            host = r.report.host if r.report else "-"
            result = "ok" if r.ok else "FAILED"
            lines.append(f"{r.student:<{width}}  {host:<{host_width}}  {result:<6}  {r.seconds:>6.1f}s  {r.detail()}")
        passed = sum(r.ok for r in self.results)
        lines.append(f"{passed} of {len(self.results)} VMs ready" + ("" if self.ok else "; see FAILED rows"))
        return "\n".join(lines)

    def as_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "students": {
                r.student: {**(r.report.as_json() if r.report else {"ok": False, "checks": []}), "error": r.error}
                for r in self.results
            },
        }


def check_class(
    targets: Mapping[str, TargetSource],
    timeout: float = DEFAULT_TIMEOUT,
    workers: int = DEFAULT_WORKERS,
    progress: Progress = lambda _: None,
) -> ClassReport:
    """Check every student's VM on at most WORKERS threads, each within TIMEOUT seconds.

    A student whose VM cannot be reached, fails a check or shows the wrong host key gets a FAILED
    row; the others are checked all the same. Unexpected errors are reported in the row too.
    """
    deadline = time.monotonic() + timeout

    def one(student: str, source: TargetSource) -> StudentResult:
        started = time.monotonic()

        def said(message: str) -> None:
            progress(f"{student}: {message}")

        try:
            target = source(deadline)
            report = check_vm(target, max(deadline - time.monotonic(), 1.0), said)
        except CourseVmError as error:
            return StudentResult(student, time.monotonic() - started, error=str(error), exit_code=error.exit_code)
        except Exception as error:
            message = f"unexpected error: {type(error).__name__}: {error}"
            return StudentResult(student, time.monotonic() - started, error=message, exit_code=ExitStatus.CHECK_FAILED)
        code = 0 if report.ok else ExitStatus.CHECK_FAILED
        return StudentResult(student, time.monotonic() - started, report=report, exit_code=code)

    return ClassReport(tuple(at_once(lambda pair: one(*pair), list(targets.items()), workers)))
