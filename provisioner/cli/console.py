"""What every command prints: progress lines on stderr, a report as a table or JSON on stdout."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from provisioner.access.ssh_config import host_alias
from provisioner.checker.checks import Report
from provisioner.checker.class_pool import ClassReport
from provisioner.driver.plan import Action, HomeDisk, Plan, VmChange
from provisioner.errors import CourseVmError, DeclinedError, ExitStatus
from provisioner.stack import command
from provisioner.terminal import printable

Confirm = Callable[[Plan], bool]
"""Shown the plan, says whether to go on (a plan without changes needs no question)."""


def progress(message: str) -> None:
    # Progress lines quote what deeper layers saw, some of it from the VM (an SSH banner in an error).
    print(f"course-vm: {printable(message)}", file=sys.stderr, flush=True)


_NAMES_COURSE_VM = re.compile(r"course-vm(?: |'s )")
"""A message that begins by naming course-vm: printed without the `course-vm: ` before it."""


def print_error(error: CourseVmError) -> int:
    """Print an expected failure as one clear message; its exit status. It may quote the VM, so only printable text.

    Every message begins with `course-vm`: one that names it already (`course-vm up needs …`, `course-vm
    settings: …`, `course-vm's passphrase file …`, worded so for Pulumi's output too) is printed as it is.
    """
    text = printable(str(error))
    print(text if _NAMES_COURSE_VM.match(text) else f"course-vm: {text}", file=sys.stderr, flush=True)
    return error.exit_code


def print_report(report: Report, as_json: bool) -> int:
    """Print one VM's report; the exit status: 0 all checks passed, else 1."""
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return 0 if report.ok else ExitStatus.CHECK_FAILED


def print_class_report(report: ClassReport, as_json: bool) -> int:
    """Print a class's report; the exit status: the most serious student's."""
    print(json.dumps(report.as_json()) if as_json else report.table(), flush=True)
    return report.exit_code


def plan_summary(stack_name: str, plan: Plan) -> str:
    """A preview, one line per VM: what its student gains or loses, and what the VMs share."""
    lines = [f"Pulumi's preview of stack {stack_name}:"]
    for vm in plan.vms:
        alias = host_alias(stack_name, vm.student)
        who = f"{vm.student}'s VM ({alias})" if vm.student else f"the VM ({alias})"
        lines.append(f"  {who}: {_consequence(vm)}")
    for name, action in plan.shared:
        lines.append(f"  {name} (shared by the VMs): {action}")
    if plan.entries:
        lines.append("  the VMs' ssh entries (forwardPorts, forwardAgent): update (no VM changes)")
    if not plan.changes:
        lines.append("  no changes: nothing will be created, replaced or deleted")
    lines += [f"  warning: {warning}" for warning in plan.warnings]
    replaced = [student for student in plan.students(Action.REPLACE) if student]
    if replaced:
        # Their hand-outs pin the old host keys (and under iap name the old instance).
        whom = replaced[0] if len(replaced) == 1 else ", ".join(replaced[:-1]) + " and " + replaced[-1]
        flags = " ".join(f"--student {name}" for name in replaced)
        lines.append(
            f"  A replaced VM has new host keys (under iap a new name): afterwards, hand {whom} a new folder: "
            f"{command('handout', stack_name)} {flags} --out DIR"
        )
    return "\n".join(lines)


def _consequence(vm: VmChange) -> str:
    if vm.action is Action.CREATE:
        return "create"
    if vm.action is Action.UPDATE:
        return "update in place (nothing on it is lost)"
    if vm.action is Action.SAME:
        return "no change"
    if vm.action is Action.REPLACE:
        if vm.home_disk is HomeDisk.KEPT:
            return "REPLACE: everything on its boot disk is lost; /home is kept (its own disk, homeDiskSizeGb)"
        if vm.home_disk is HomeDisk.CREATED:
            return "REPLACE: everything on its boot disk is lost, /home included (its new home disk starts empty)"
        return "REPLACE: everything on its boot disk is lost, /home included (homeDiskSizeGb would keep /home)"
    return "DELETE: everything on it is lost" + (", its home disk too" if vm.home_disk else "")


def confirm(question: str, *, assume_yes: bool, stdin: TextIO | None = None) -> bool:
    """Whether the user answers QUESTION with yes (`y`); no, an empty answer and end of input say no.

    ASSUME_YES (--yes) answers for them. Raises DeclinedError when nobody can answer: no terminal on stdin.
    """
    if assume_yes:
        return True
    stdin = sys.stdin if stdin is None else stdin
    if not stdin.isatty():
        raise DeclinedError(
            "nothing was changed: this needs a yes, and there is no terminal to ask on. "
            "Fix: run it again with --yes once the preview above is what you want"
        )
    print(f"{question} [y/N] ", end="", flush=True)
    answer = stdin.readline()
    if not answer:
        print()
    return answer.strip().lower() in ("y", "yes")


def declined(command: str, stored: Sequence[str] = ()) -> DeclinedError:
    """The answer was no. STORED: the options `up` had already kept in the stack's settings (the
    preview needs them there); a later `up` applies them, so say so."""
    kept = (
        f" The stack's settings keep what {', '.join(stored)} gave; a later `up` previews them again." if stored else ""
    )
    return DeclinedError(
        f"not confirmed: nothing was created, changed or deleted in the cloud.{kept} Fix: run `course-vm {command}` "
        "again and answer y (first copy off the VM what you need that would be lost)"
    )
