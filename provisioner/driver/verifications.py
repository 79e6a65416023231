"""Each VM's last verification, as `up` saw it in the engine's events, kept on this machine for `status`."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

from pulumi.automation.events import OpType

from provisioner.driver.events import EngineLog, StepKind
from provisioner.paths import state_home
from provisioner.stack import INSTANCE_ROLE, role_of

# The stack's outputs cannot tell. An update in which one verification fails fails as a whole
# (continue-on-error only lets the other VMs go on), and Pulumi keeps the outputs of the last
# update that succeeded: a first `up` leaves no `students` output at all, a later one the previous
# fingerprints. So a VM whose check failed looks like one never checked, or like one that passed.

_GONE = {
    OpType.DELETE, OpType.DELETE_REPLACED, OpType.DISCARD, OpType.DISCARD_REPLACED, OpType.REMOVE_PENDING_REPLACE,
}  # fmt: skip
"""Steps that take a resource away (the SDK knows `read-discard` as none of its operations)."""


class Result(str, Enum):
    """How a VM's last verification ended; str() and format() give its value, as a 3.11 enum.StrEnum's do."""

    PASSED = "passed"
    FAILED = "failed"
    OFF = "off"
    """The stack has verify=false."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Verification:
    """How one VM's last verification (`pulumi up`'s checker run, provisioner/gcp/verification.py) ended."""

    result: Result
    at: str | None = None
    """When, ISO 8601 in UTC (2026-11-27T14:00:00Z); None when not known (passed before course-vm kept the time)."""
    detail: str = ""
    """Why it failed: the checker's error as the engine reported it."""


def verifications_file(stack_name: str) -> Path:
    """Where `up` keeps each VM of stack STACK_NAME's last verification (see record_verifications)."""
    return state_home() / "verifications" / f"{urllib.parse.quote(stack_name, safe='')}.json"


def recorded_verifications(stack_name: str) -> dict[str, Verification]:
    """Each VM's last verification by student ("" for a stack's one VM), as `up` recorded it on this
    machine; empty when it recorded none (or its file is unreadable: a cache, not a source of truth)."""
    try:
        recorded = json.loads(verifications_file(stack_name).read_text())
        return {
            str(student): Verification(Result(fields["result"]), fields.get("at"), str(fields.get("detail", "")))
            for student, fields in recorded.items()
        }
    except (OSError, ValueError, TypeError, AttributeError, KeyError):
        return {}


def record_verifications(stack_name: str, log: EngineLog) -> None:
    """Keep what an update's LOG says about each VM's verification (see verifications_of) in the
    stack's verifications file (mode 0600), beside what earlier updates said of other VMs.

    A file that cannot be written is left as it is: `status` then says it does not know.
    """
    from provisioner.files import write_atomically

    before = recorded_verifications(stack_name)
    now = verifications_of(log, before)
    if not now:
        return
    path = verifications_file(stack_name)
    document = {student: asdict(verification) for student, verification in {**before, **now}.items()}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n", 0o600)
    except OSError:
        return


def forget_verifications(stack_name: str) -> None:
    """The stack's VMs are gone: `status` must not say that some may exist."""
    verifications_file(stack_name).unlink(missing_ok=True)


def verifications_of(log: EngineLog, before: Mapping[str, Verification]) -> dict[str, Verification]:
    """What an update's engine LOG says about each VM's verification, by student.

    A verification that ran and passed (its outputs came) or failed (an error naming it) is what it
    says, at the event's time; one left as it was ("same") passed before, at BEFORE's time if known.
    A VM whose instance is there but that has no verification has verify=false. VMs the update did
    not reach are left out: their last verification is still the one BEFORE says.
    """
    outcome: dict[str, Verification] = {}
    failures = {d.urn: d.message.strip() for d in log.errors if d.urn}
    instances: set[str] = set()
    verified: set[str] = set()
    for step in log.steps:
        found = role_of(step.urn, step.type)
        if found is None or step.op in _GONE:
            continue
        student, role = found
        if role == INSTANCE_ROLE:
            if step.kind is StepKind.OUTPUTS:
                instances.add(student)
            continue
        verified.add(student)
        when: str | None = _when(step.timestamp)
        if step.kind is StepKind.FAILED:
            outcome[student] = Verification(Result.FAILED, when, failures.get(step.urn, ""))
        elif (
            step.kind is StepKind.OUTPUTS and outcome.get(student, Verification(Result.PASSED)).result != Result.FAILED
        ):
            if step.op in (OpType.SAME, OpType.UPDATE):
                earlier = before.get(student)
                when = earlier.at if earlier is not None and earlier.result == Result.PASSED else None
            outcome[student] = Verification(Result.PASSED, when)
    for student in instances - verified:
        outcome[student] = Verification(Result.OFF)
    return outcome


def _when(timestamp: int | float | None) -> str:
    moment = datetime.fromtimestamp(timestamp, timezone.utc) if timestamp else datetime.now(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
