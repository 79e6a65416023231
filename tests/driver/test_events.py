"""The engine's event log (`pulumi ... --event-log`), read into typed steps and diagnostics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pulumi.automation.events import OpType

from provisioner.driver.events import (
    Diagnostic,
    EngineLog,
    Step,
    StepKind,
    parse_events,
    read_event_log,
    without_colour,
)
from tests.support.pulumi_events import (
    COURSE_VM,
    NOW,
    STUDENT_VM,
    VM_CHILDREN,
    error_diagnostic,
    preview_events,
    step,
    update_events,
    urn,
)

COURSE = urn("dev", [COURSE_VM], "course-vm")
ALICE = urn("dev", [COURSE_VM, STUDENT_VM], "course-vm-alice")
ALICE_VERIFY = urn("dev", [COURSE_VM, STUDENT_VM, VM_CHILDREN["verify"]], "course-vm-alice-verify")


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(event) for event in events]


def test_each_step_is_read_with_its_op_urn_type_and_parent() -> None:
    log = parse_events(lines(preview_events({"alice": {"self": "create", "vm": "create"}})))
    vm = urn("dev", [COURSE_VM, STUDENT_VM, VM_CHILDREN["vm"]], "course-vm-alice-vm")
    alice = [s for s in log.steps if s.urn in (ALICE, vm)]
    assert alice == [
        Step(StepKind.PRE, OpType.CREATE, ALICE, STUDENT_VM, COURSE, NOW),
        Step(StepKind.PRE, OpType.CREATE, vm, VM_CHILDREN["vm"], ALICE, NOW),
        Step(StepKind.OUTPUTS, OpType.CREATE, vm, VM_CHILDREN["vm"], ALICE, NOW),
        Step(StepKind.OUTPUTS, OpType.CREATE, ALICE, STUDENT_VM, COURSE, NOW),
    ]
    assert log.diagnostics == ()
    assert log.stepped


def test_a_deletion_names_its_parent_from_the_old_state() -> None:
    [deleted] = parse_events(lines([step("delete", [COURSE_VM, STUDENT_VM], "course-vm-alice", COURSE)])).steps
    assert (deleted.op, deleted.parent) == (OpType.DELETE, COURSE)


def test_an_update_reports_each_step_done_or_failed_at_its_time() -> None:
    log = parse_events(lines(update_events({"alice": "failed: the VM is not ready"}, timestamp=1795788000)))
    verify = [s for s in log.steps if s.urn == ALICE_VERIFY]
    assert [(s.kind, s.op, s.timestamp) for s in verify] == [
        (StepKind.PRE, OpType.CREATE, 1795788000),
        (StepKind.FAILED, OpType.CREATE, 1795788000),
    ]
    # The verification's error names it; the engine's own closing error names no resource.
    assert log.errors == [
        Diagnostic("error", "the VM is not ready\n", ALICE_VERIFY, "error: "),
        Diagnostic("error", "update failed\n", "", "error: "),
    ]
    # A VM whose verification failed registers no outputs.
    assert [s.kind for s in log.steps if s.urn == ALICE] == [StepKind.PRE]


def test_an_op_this_sdk_does_not_know_is_none() -> None:
    event = step("read-discard", [COURSE_VM, STUDENT_VM], "course-vm-alice", COURSE)
    [read] = parse_events(lines([event])).steps
    assert read.op is None


def test_diagnostics_keep_their_severity_urn_and_prefix_without_the_engines_colour_tags() -> None:
    warning = {"diagnosticEvent": {"message": "<{%reset%}>careful<{%reset%}>\n", "color": "raw", "severity": "warning"}}
    log = parse_events(lines([warning, error_diagnostic("it failed", ALICE)]))
    assert log.diagnostics == (
        Diagnostic("warning", "careful\n", ""),
        Diagnostic("error", "it failed\n", ALICE, "error: "),
    )
    assert log.errors == [Diagnostic("error", "it failed\n", ALICE, "error: ")]
    assert log.errors[0].lines == ["error: it failed"]
    assert not log.stepped


def test_without_colour_removes_only_the_engines_tags() -> None:
    assert without_colour("<{%bold%}>a<{%reset%}> <b> {%c%}") == "a <b> {%c%}"


def test_lines_that_are_no_event_are_skipped() -> None:
    # A line cut short when the CLI was killed, and JSON that is no event.
    good = step("same", [COURSE_VM], "course-vm", "")
    log = parse_events(['{"sequence": 0, "resourcePre', "[]", '"text"', json.dumps(good), "", '{"cancelEvent": {}}'])
    assert [s.urn for s in log.steps] == [COURSE]
    assert parse_events(lines([{"resourcePreEvent": {"metadata": "no mapping"}}])) == EngineLog()


def test_a_timestamp_that_is_no_whole_number_is_zero() -> None:
    event = {**step("same", [COURSE_VM], "course-vm", ""), "timestamp": "yesterday"}
    assert parse_events(lines([event])).steps[0].timestamp == 0


def test_the_log_is_read_from_the_file_the_cli_wrote(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(("\n".join(lines(update_events({"": "passed"}))) + "\n").encode() + b'{"bad": "\xff"}\n')
    log = read_event_log(path)
    assert log == parse_events(lines(update_events({"": "passed"})))
    assert read_event_log(tmp_path / "none.jsonl") == EngineLog(), "a CLI that failed before it wrote any"
