"""`start` and `stop`: every chosen VM of a stack at once, each waited for, each failure on a line of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from provisioner.access.ssh_config import host_alias
from provisioner.cli.console import progress
from provisioner.driver.session import StackSession
from provisioner.errors import CourseVmError
from provisioner.gcp.compute_api import (
    MANAGE_SCOPE,
    GceInstance,
    application_default_token,
    compute_api,
)
from provisioner.gcp.instance_power import start_instance, stop_instance
from provisioner.parallel import at_once
from provisioner.stack import VmOutputs


@dataclass(frozen=True)
class PowerChange:
    """What `start` or `stop` does to each VM, and what it says once that VM got there."""

    done: str
    """The VMs "could not be DONE" when some fail: started, stopped."""
    change: Callable[..., None]
    """start_instance or stop_instance (provisioner/gcp/instance_power.py)."""
    said: Callable[[str, str, VmOutputs], str]
    """What is printed for a VM that got there, given the stack, the student and the VM."""


def _running(stack_name: str, student: str, vm: VmOutputs) -> str:
    alias = host_alias(stack_name, student)
    # Under sshAccess iap there is no external address: `ip` is one nobody outside reaches.
    if vm.iap:
        return f"{alias}: running, reached through IAP (same host keys): `ssh {alias}`"
    return f"{alias}: running at {vm.ip} (same address and host keys): `ssh {alias}`"


def _stopped(stack_name: str, student: str, vm: VmOutputs) -> str:
    again = f"course-vm start --stack {stack_name}" + (f" --student {student}" if student else "")
    kept = "disks kept" if vm.iap else "disks and address kept"
    return f"{host_alias(stack_name, student)}: stopped ({kept}): `{again}` starts it again"


STARTED = PowerChange("started", start_instance, _running)
STOPPED = PowerChange("stopped", stop_instance, _stopped)


def change_power(stack_name: str, only: Sequence[str] | None, timeout: float, how: PowerChange) -> None:
    """Start or stop (HOW) the VMs of the students ONLY names (every VM when None), every one at once,
    and wait for each until TIMEOUT seconds are over.

    One that fails does not keep the others from getting there. Raises CourseVmError listing each
    student that failed on a line of its own, with the highest of their exit statuses.
    """
    outputs = StackSession.open(stack_name, reads_only=True).outputs()
    outputs.require_vms(stack_name)
    chosen = outputs.chosen(only, stack_name)
    api = compute_api()  # checked before a token is fetched; one token for every VM
    access = application_default_token(MANAGE_SCOPE)
    deadline = time.monotonic() + timeout

    def one(vm: VmOutputs) -> CourseVmError | None:
        instance = GceInstance(outputs.project, vm.zone, vm.instance_name)
        try:
            how.change(instance, deadline, progress, api=api, token=lambda: access, stack=stack_name)
        except CourseVmError as error:
            return error
        return None

    errors = dict(zip(chosen, at_once(one, list(chosen.values())), strict=True))
    for name, vm in chosen.items():
        if errors[name] is None:
            print(how.said(stack_name, name, vm), flush=True)
    failed = {host_alias(stack_name, name): error for name, error in errors.items() if error is not None}
    if failed:
        raise per_student_error(failed, len(chosen), f"could not be {how.done}")


def per_student_error(failed: Mapping[str, CourseVmError], total: int, outcome: str) -> CourseVmError:
    """One error for the FAILED of TOTAL VMs (by alias): "2 of 30 VMs OUTCOME:", then one line per VM
    (alias: reason. Fix: ...); its exit status the highest of theirs. A stack's one VM: its error alone, which
    names the instance (its alias before it read `course-vm: course-vm: ...` for the default stack)."""
    if total == 1:
        [error] = failed.values()
        message = str(error)
    else:
        rows = (f"  {alias}: {' '.join(str(error).split())}" for alias, error in failed.items())
        message = "\n".join([f"{len(failed)} of {total} VMs {outcome}:", *rows])
    combined = CourseVmError(message)
    combined.exit_code = max(error.exit_code for error in failed.values())
    return combined
