"""The readers on event logs and state that Pulumi itself recorded, and the stand-in held to their shapes.

The files are pulumi/pulumi's test data (tests/driver/recorded/README.md says where each is from): what
course-vm concludes from them is what it would conclude from the real engine, and each event the
stand-in writes must have the shape the real engine gives that kind of event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation.events import OpType

from provisioner.driver.engine_errors import engine_error
from provisioner.driver.events import Diagnostic, StepKind, parse_events, read_event_log
from provisioner.driver.plan import Action, HomeDisk, VmChange, failed_students, plan_of
from provisioner.driver.state import plain, walk
from provisioner.driver.verifications import verifications_of
from provisioner.driver.workspace import CliResult
from tests.support.outputs import one_vm
from tests.support.pulumi_errors import failed_create, program_failed
from tests.support.pulumi_events import display_name, engine_failed, engine_log, preview_events, update_events
from tests.support.pulumi_state import exported_deployment
from tests.support.stand_in_pulumi import Engine, StandInError, stand_in_pulumi

RECORDED = Path(__file__).parent / "recorded"
STREAMS = sorted(p for p in RECORDED.glob("*.json") if not p.name.startswith("checkpoint"))
STEP_KINDS = ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent")


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def ops_of(path: Path, name: str) -> list[str]:
    """The ops of the resourcePreEvents of the resource NAME in the log at PATH, in order."""
    return [s.op.value for s in read_event_log(path).steps if s.kind is StepKind.PRE and s.urn.endswith(name) and s.op]


def test_a_create_before_delete_replacement_is_one_replacement_whose_old_half_comes_last() -> None:
    path = RECORDED / "webserver-userdata.json"
    log = read_event_log(path)
    assert ops_of(path, "::web-server-www") == ["create-replacement", "replace", "delete-replaced"]
    # The old instance is deleted after every other step, the stack's outputs too.
    kinds = [(s.kind, s.op) for s in log.steps]
    assert kinds.index((StepKind.PRE, OpType.DELETE_REPLACED)) > kinds.index((StepKind.OUTPUTS, OpType.SAME), 2)
    assert {s.timestamp for s in log.steps} == {1649558910, 1649558916, 1649558922}
    assert plan_of(log).shared == (("web-server-www", Action.REPLACE),)


def test_a_delete_before_replace_deletes_its_dependents_first_and_each_is_one_replacement() -> None:
    path = RECORDED / "explicit-delete-before-replace-preview.json"
    assert ops_of(path, "::resA") == ["delete-replaced", "replace", "create-replacement"]
    assert ops_of(path, "::resB") == ["delete-replaced", "replace", "create-replacement"]
    pre = [s.urn.rsplit("::", 1)[-1] for s in read_event_log(path).steps if s.kind is StepKind.PRE]
    assert pre[1:4] == ["resB", "resA", "resA"], "the dependent is deleted before what it depends on"
    assert plan_of(read_event_log(path)).shared == (("resA", Action.REPLACE), ("resB", Action.REPLACE))


def test_a_deletion_is_read_with_its_parent_from_its_old_state() -> None:
    log = read_event_log(RECORDED / "destroy-with-components.json")
    deleted = [(s.urn.rsplit("::", 1)[-1], s.parent.rsplit("::", 1)[-1]) for s in log.steps if s.op is OpType.DELETE]
    assert deleted[::2] == [("mychild", "mycomponent"), ("mycomponent", "myproject-dev")]
    assert plan_of(log).shared == (("mychild", Action.DELETE), ("mycomponent", Action.DELETE))


def test_a_failed_create_is_its_failed_step_its_error_and_the_engines_closing_error() -> None:
    log = read_event_log(RECORDED / "failed-create.json")
    res = "urn:pulumi:test::test::pkgA:m:typA::resA"
    assert [(s.kind, s.op) for s in log.steps] == [(StepKind.PRE, OpType.CREATE), (StepKind.FAILED, OpType.CREATE)]
    assert log.errors == [
        Diagnostic("error", "create failed 2\n", res, "error: "),
        Diagnostic("error", "update failed\n", "", "error: "),
    ]
    assert plan_of(log).warnings == ("retrying create due to on-error hook request (1/100)",)
    assert failed_students(log) == set(), "no StudentVm's resource"
    result = CliResult(("pulumi", "up"), 1, "", "")  # a bail: the CLI prints nothing more, exits 1
    error = engine_error("update stack dev", "dev", result, log, project=None, again="up")
    assert str(error).splitlines()[1:3] == ["  error: create failed 2", "  error: update failed"]
    assert str(error).count("update failed") == 1


def test_a_program_that_failed_before_any_step_changed_nothing() -> None:
    log = read_event_log(RECORDED / "program-error.json")
    assert not log.stepped
    assert [d.lines for d in log.errors] == [["error: an unhandled error occurred: oh no"]]


@pytest.mark.parametrize(
    ("recorded_name", "events"),
    [("program-error.json", program_failed("an unhandled error occurred: oh no")),
     ("failed-create.json", failed_create("create failed 2"))],
)  # fmt: skip
def test_a_stand_in_failure_ends_as_the_engine_ends_it(recorded_name: str, events: list[dict[str, Any]]) -> None:
    # The engine's `update failed` closes a run only after a step failed; a program that failed first is a bail.
    real = [kind_of(e) for e in events_of(RECORDED / recorded_name)
            if not (kind_of(e) == "diagnosticEvent" and e["diagnosticEvent"]["severity"] == "warning")]  # fmt: skip
    written = engine_log(engine_failed(events, preview=False), preview=False, failed=True)
    assert [kind_of(e) for e in written] == real
    closing = [e for e in written if kind_of(e) == "diagnosticEvent" and "update failed" in str(e)]
    assert len(closing) == (recorded_name == "failed-create.json")


def test_a_recorded_deployment_is_walked_without_a_vm_and_its_ciphertext_is_no_value() -> None:
    document = json.loads((RECORDED / "checkpoint-secrets-excerpt.json").read_text())
    deployment = document["checkpoint"]["latest"]
    state = walk(deployment)
    assert (state.own, state.root, state.existing) == (None, {}, {})
    [role] = [r for r in deployment["resources"] if r["type"] == "aws:iam/role:Role"]
    assert set(role["inputs"]["assumeRolePolicy"]) == {"4dabf18193072939515e22adb298388d", "ciphertext"}
    assert plain(role["inputs"])["assumeRolePolicy"] is None
    assert plain(role["outputs"])["name"] == role["outputs"]["name"]


# The stand-in's events against the recorded ones' shapes.


def recorded() -> Iterator[dict[str, Any]]:
    for path in STREAMS:
        yield from events_of(path)


def kind_of(event: dict[str, Any]) -> str:
    [kind] = [key for key in event if key not in ("sequence", "timestamp")]
    return kind


def keys_by_kind(events: Sequence[dict[str, Any]]) -> dict[str, set[str]]:
    """Each event kind's payload keys, a step event's metadata's (as `KIND.metadata`) and its states' too."""
    found: dict[str, set[str]] = {}
    for event in events:
        kind = kind_of(event)
        payload = event[kind]
        found.setdefault(kind, set()).update(payload)
        if kind in STEP_KINDS:
            metadata = payload["metadata"]
            found.setdefault(f"{kind}.metadata", set()).update(metadata)
            for state in (metadata["old"], metadata["new"]):
                found.setdefault("state", set()).update(state or {})
    return found


def signature_by_op(events: Sequence[dict[str, Any]]) -> dict[str, set[tuple[bool, bool, bool]]]:
    """Per op, whether its steps are logical and whether they name an old and a new state."""
    found: dict[str, set[tuple[bool, bool, bool]]] = {}
    for event in events:
        if kind_of(event) in STEP_KINDS:
            metadata = event[kind_of(event)]["metadata"]
            signature = (bool(metadata.get("logical")), metadata["old"] is not None, metadata["new"] is not None)
            found.setdefault(metadata["op"], set()).add(signature)
    return found


STAND_IN_LOGS = {
    "preview": engine_log(
        preview_events({
            "alice": {"self": "create", "ip": "create", "home": "create", "vm": "create", "verify": "create"},
            "bob": {"ip": "replace", "home": "replace", "vm": "replace", "verify": "replace"},
            "carol": {"self": "delete", "ip": "delete", "vm": "delete"},
        }, shared="update"),
        preview=True,
    ),
    "iap preview": engine_log(
        preview_events({
            "dana": {"home": "same", "vm": "replace", "iap-access": "same", "instance-view": "same",
                     "nightly-stop": "same", "verify": "same"},
            "eve": {"self": "delete", "home": "delete", "vm": "delete", "iap-access": "delete",
                    "instance-view": "delete", "nightly-stop": "delete"},
        }, shared={"nat": "update"}, iap=True, nightly=True),
        preview=True,
    ),
    "failed update": engine_log(update_events({"alice": "passed", "bob": "failed: not ready"}), preview=False,
                                failed=True),
    "update": engine_log(update_events({"alice": "same", "bob": "off"}), preview=False),
    "iap update": engine_log(update_events({"dana": "passed", "eve": "failed: not ready"}, iap=True, nightly=True,
                                           home=True), preview=False, failed=True),
}  # fmt: skip


@pytest.mark.parametrize("name", STAND_IN_LOGS)
def test_each_stand_in_event_has_the_keys_the_engine_writes_for_its_kind(name: str) -> None:
    known, written = keys_by_kind(list(recorded())), STAND_IN_LOGS[name]
    for kind, keys in keys_by_kind(written).items():
        assert keys <= known[kind], f"{kind}: {sorted(keys - known[kind])} the engine never writes"
    for event in written:
        assert set(event) == {"sequence", "timestamp", kind_of(event)}
    required = {"op", "urn", "type", "old", "new", "detailedDiff", "provider"}
    assert all(required <= set(e[kind_of(e)]["metadata"]) for e in written if kind_of(e) in STEP_KINDS)
    real = signature_by_op(list(recorded()))
    for op, signature in signature_by_op(written).items():
        assert signature <= real.get(op, signature), f"{op}: (logical, old, new) {signature}, the engine's {real[op]}"


@pytest.mark.parametrize("name", STAND_IN_LOGS)
def test_a_stand_in_log_opens_and_closes_as_the_engines_and_counts_its_events(name: str) -> None:
    written = STAND_IN_LOGS[name]
    assert [kind_of(written[0]), kind_of(written[-2]), kind_of(written[-1])] == [
        "preludeEvent", "summaryEvent", "cancelEvent",
    ]  # fmt: skip
    assert [e["sequence"] for e in written] == list(range(len(written)))
    assert all(isinstance(e["timestamp"], int) and e["timestamp"] > 1_600_000_000 for e in written)
    summary = written[-2]["summaryEvent"]
    assert set(summary) == next(set(e["summaryEvent"]) for e in events_of(RECORDED / "failed-create.json")[-2:-1])
    assert summary["isPreview"] is name.endswith("preview")
    assert summary["result"] == ("failed" if name in ("failed update", "iap update") else "succeeded")
    assert not {"create-replacement", "delete-replaced"} & set(summary["resourceChanges"]), "not logical steps"


@pytest.mark.parametrize("name", STAND_IN_LOGS)
def test_each_stand_in_step_that_completes_is_followed_by_its_outputs_as_the_engines(name: str) -> None:
    pending: dict[tuple[str, str], int] = {}
    for event in STAND_IN_LOGS[name]:
        kind = kind_of(event)
        if kind in STEP_KINDS:
            metadata = event[kind]["metadata"]
            key = (metadata["urn"], metadata["op"])
            pending[key] = pending.get(key, 0) + (1 if kind == "resourcePreEvent" else -1)
            assert pending[key] >= 0, f"{key}: outputs or a failure without its step"
        if kind == "resourcePreEvent":
            assert event[kind].get("planning", False) is name.endswith("preview")
    # After a failed verification its StudentVm, the CourseVm and the stack register no outputs.
    unended = [urn.rsplit("::", 1)[-1] for (urn, _op), n in pending.items() if n]
    failed_vm = {"failed update": "course-vm-bob", "iap update": "course-vm-eve"}.get(name)
    assert unended == ([] if failed_vm is None else ["course-vm-dev", "course-vm", failed_vm])


def test_the_stand_ins_replacements_are_in_the_engines_order_for_each_resource() -> None:
    # The instance (deleteBeforeReplace) and its verification (its provider asks for it) as in the recorded
    # delete-before-replace; the auto-named address and home disk as in the recorded create-before-delete.
    steps = parse_events(json.dumps(e) for e in STAND_IN_LOGS["preview"]).steps
    pre = [(s.urn.rsplit("::", 1)[-1], s.op.value) for s in steps if s.kind is StepKind.PRE and s.op]
    bob = [(name, op) for name, op in pre if name.startswith("course-vm-bob-") and op != "same"]
    assert bob == [
        ("course-vm-bob-ip", "create-replacement"), ("course-vm-bob-ip", "replace"),
        ("course-vm-bob-home", "create-replacement"), ("course-vm-bob-home", "replace"),
        ("course-vm-bob-verify", "delete-replaced"), ("course-vm-bob-vm", "delete-replaced"),
        ("course-vm-bob-vm", "replace"), ("course-vm-bob-vm", "create-replacement"),
        ("course-vm-bob-verify", "replace"), ("course-vm-bob-verify", "create-replacement"),
        ("course-vm-bob-ip", "delete-replaced"), ("course-vm-bob-home", "delete-replaced"),
    ]  # fmt: skip
    stack = "pulumi:pulumi:Stack"
    stack_outputs = max(i for i, s in enumerate(steps) if s.kind is StepKind.OUTPUTS and s.type == stack)
    late = [i for i, s in enumerate(steps) if s.op in (OpType.DELETE, OpType.DELETE_REPLACED) and "-verify" not in s.urn
            and not s.urn.endswith("-bob-vm")]  # fmt: skip
    assert late and min(late) > stack_outputs, "deletions come after every other step"


def test_a_replaced_instance_replaces_what_takes_an_input_from_it_as_the_engine_replaces_a_dependent() -> None:
    # As resB in the recorded delete-before-replace: the grants on the instance, its schedule attachment and its
    # verification are deleted first (last registered first), and each is replaced after the instance.
    steps = parse_events(json.dumps(e) for e in STAND_IN_LOGS["iap preview"]).steps
    pre = [(s.urn.rsplit("::", 1)[-1], s.op.value) for s in steps if s.kind is StepKind.PRE and s.op]
    dana = [(name.removeprefix("course-vm-dana-"), op) for name, op in pre if name.startswith("course-vm-dana-")]
    dependents = ["iap-access", "instance-view", "nightly-stop", "verify"]
    assert dana == [
        ("home", "same"),
        *((d, "delete-replaced") for d in reversed(dependents)),
        ("vm", "delete-replaced"), ("vm", "replace"), ("vm", "create-replacement"),
        *((d, op) for d in dependents for op in ("replace", "create-replacement")),
    ]  # fmt: skip
    recorded_order = [op for _name, op in [(n, o) for n, o in dana if n == "verify"]]
    assert recorded_order == ops_of(RECORDED / "explicit-delete-before-replace-preview.json", "::resB")
    shared = [(n, o) for n, o in pre if not n.startswith(("course-vm-dana", "course-vm-eve", "course-vm-dev"))]
    assert [n for n, _o in shared if n.startswith("course-vm-")] == [
        f"course-vm-{r}" for r in ("network", "subnet", "ssh", "router", "nat", "iap-api", "nightly-stop",
                                   "schedule-grant")
    ]  # fmt: skip
    plan = plan_of(parse_events(json.dumps(e) for e in STAND_IN_LOGS["iap preview"]))
    assert [(vm.student, vm.action, vm.home_disk) for vm in plan.vms] == [
        ("dana", Action.REPLACE, HomeDisk.KEPT), ("eve", Action.DELETE, HomeDisk.LOST),
    ]  # fmt: skip
    assert plan.shared == (("course-vm-nat", Action.UPDATE),)


def test_a_stand_in_update_steps_through_every_resource_the_program_registers() -> None:
    # As the engine: each registered resource has its step on every update, `same` where nothing changed.
    log = parse_events(json.dumps(e) for e in STAND_IN_LOGS["iap update"])
    names = [s.urn.rsplit("::", 1)[-1] for s in log.steps if s.kind is StepKind.PRE]
    shared = ["network", "subnet", "ssh", "router", "nat", "iap-api", "nightly-stop", "schedule-grant"]
    dana = ["home", "vm", "iap-access", "instance-view", "nightly-stop", "verify"]
    assert names == ["course-vm-dev", "default_8_10_0", "default", "course-vm", *(f"course-vm-{r}" for r in shared),
                     "course-vm-dana", *(f"course-vm-dana-{r}" for r in dana),
                     "course-vm-eve", *(f"course-vm-eve-{r}" for r in dana)]  # fmt: skip
    # The readers conclude what they did from the instance and verification steps alone.
    alone = parse_events(json.dumps(e) for e in update_events({"dana": "passed", "eve": "failed: not ready"}))
    actions = [[(v.student, v.action) for v in plan_of(steps).vms] for steps in (log, alone)]
    assert actions[0] == actions[1] and plan_of(log).shared == plan_of(alone).shared == ()
    assert {v.home_disk for v in plan_of(log).vms} == {HomeDisk.KEPT}, "its home disk `same`: kept"
    assert failed_students(log) == failed_students(alone) == {"eve"}
    assert verifications_of(log, {}).keys() == verifications_of(alone, {}).keys() == {"dana", "eve"}


def stand_in_log(tmp_path: Path, args: list[str], stacks: dict[str, Any], **given: Any) -> list[dict[str, Any]]:
    """The event log the stand-in CLI writes for `pulumi ARGS --event-log FILE` on STACKS (GIVEN: stand_in_pulumi's)."""
    pulumi = stand_in_pulumi(tmp_path, stacks, **given)
    state = json.loads(pulumi.state_file.read_text())
    environment = {**pulumi.environment, "PULUMI_DEBUG_COMMANDS": "true", "PULUMI_BACKEND_URL": state["backend"]}
    log = tmp_path / "events.jsonl"
    Engine(state, environment).run([*args, "--stack", "dev", "--event-log", str(log)])
    return events_of(log)


@pytest.mark.parametrize("args", [["destroy", "--yes", "--skip-preview"], ["destroy", "--preview-only"]])
def test_a_stand_in_destroy_deletes_all_the_state_holds_as_the_recorded_destroy(
    tmp_path: Path, args: list[str]
) -> None:
    vm = one_vm()
    state = exported_deployment("dev", vm, home_disks={"": 50})
    written = stand_in_log(tmp_path, args, {"dev": vm}, deployments={"dev": state})
    preview = "--preview-only" in args
    steps = [e for e in written if kind_of(e) in STEP_KINDS]
    # Each a delete step as the recorded destroy's: its resourcePreEvent then its resOutputsEvent, the same keys,
    # logical, the old state only, planning only in the preview.
    real = [e for e in events_of(RECORDED / "destroy-with-components.json") if kind_of(e) in STEP_KINDS]
    real_deletes = [e for e in real if e[kind_of(e)]["metadata"]["op"] == "delete"]
    assert {e[kind_of(e)]["metadata"]["op"] for e in steps} == {"delete"}
    pair = ["resourcePreEvent", "resOutputsEvent"]
    assert [kind_of(e) for e in real_deletes] == pair * 2 and [kind_of(e) for e in steps] == pair * (len(steps) // 2)
    assert signature_by_op(steps) == signature_by_op(real_deletes) == {"delete": {(True, True, False)}}
    assert keys_by_kind(steps)["resourcePreEvent.metadata"] >= keys_by_kind(real_deletes)["resourcePreEvent.metadata"]
    assert all(
        e["resourcePreEvent"].get("planning", False) is preview for e in steps if kind_of(e) == "resourcePreEvent"
    )
    # Every resource the state holds, dependents first: children before their parent, the stack last.
    deleted = [e["resourcePreEvent"]["metadata"]["urn"] for e in steps if kind_of(e) == "resourcePreEvent"]
    assert deleted == [r["urn"] for r in reversed(state["deployment"]["resources"])]
    assert deleted[-1].endswith("pulumi:pulumi:Stack::course-vm-dev")
    assert any("pulumi:providers:gcp" in u for u in deleted) and any(
        "pulumi:providers:pulumi-python" in u for u in deleted
    )
    parents = {r["urn"]: r.get("parent") for r in state["deployment"]["resources"]}
    assert all(deleted.index(urn) < deleted.index(parent) for urn, parent in parents.items() if parent)
    summary = written[-2]["summaryEvent"]
    assert summary["isPreview"] is preview and summary["resourceChanges"] == {"delete": len(deleted) - 2}
    plan = plan_of(parse_events(json.dumps(e) for e in written))
    assert [(v.student, v.action, v.home_disk) for v in plan.vms] == [("", Action.DELETE, HomeDisk.LOST)]
    assert plan.shared == tuple((f"course-vm-{r}", Action.DELETE) for r in ("network", "ssh", "subnet"))


@pytest.mark.parametrize("verb", ["preview", "up"])
def test_a_stand_in_stack_without_state_creates_the_stack_resource_which_the_plan_leaves_out(
    tmp_path: Path, verb: str
) -> None:
    events = preview_events({"": {"self": "create", "ip": "create", "vm": "create"}})
    given = {"events": events} if verb == "preview" else {"update_events": events, "next_outputs": one_vm()}
    written = stand_in_log(tmp_path, [verb, *(["--yes", "--skip-preview"] if verb == "up" else [])], {"dev": {}},
                           **given)  # fmt: skip
    steps = [e[kind_of(e)]["metadata"] for e in written if kind_of(e) in STEP_KINDS]
    assert {m["op"] for m in steps} == {"create"}, "nothing is there yet: every resource is created"
    [stack_pre, stack_outputs] = [m for m in steps if m["type"] == "pulumi:pulumi:Stack"]
    assert stack_pre["old"] is None and stack_pre["new"]["urn"] == stack_outputs["urn"]
    assert signature_by_op(
        [e for e in written if kind_of(e) in STEP_KINDS]
    )["create"] <= signature_by_op(list(recorded()))["create"]  # fmt: skip
    plan = plan_of(parse_events(json.dumps(e) for e in written))
    assert plan.vms == (VmChange("", Action.CREATE, None),)
    assert plan.shared == tuple((f"course-vm-{r}", Action.CREATE) for r in ("network", "ssh", "subnet"))
    assert all(not name.startswith(("course-vm-dev", "default")) for name, _a in plan.shared)


def test_a_stand_in_stack_with_state_keeps_its_stack_resource_the_same(tmp_path: Path) -> None:
    events = preview_events({"": {"ip": "same", "vm": "update"}})
    written = stand_in_log(tmp_path, ["preview"], {"dev": one_vm()}, events=events)
    ops = {
        e[kind_of(e)]["metadata"]["type"]: e[kind_of(e)]["metadata"]["op"] for e in written if kind_of(e) in STEP_KINDS
    }
    assert ops["pulumi:pulumi:Stack"] == "same" and ops["gcp:compute/instance:Instance"] == "update"


def test_a_stand_in_engine_failure_shows_its_diagnostics_on_stdout_and_nothing_on_stderr(tmp_path: Path) -> None:
    # The CLI's progress display (no --diff, no --json) prints the Diagnostics section on stdout
    # (pkg/backend/display/progress.go printDiagnostics, jsonmessage.go newNonInteractiveRenderer(stdout)); the
    # engine's failure is a bail, which the CLI does not print again on stderr (pkg/cmd/pulumi/cmd/cmd.go).
    failure = {"events": update_events({"": "failed: the VM is not ready:\nno docker"})}
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()}, fail={"up": failure})
    state = json.loads(pulumi.state_file.read_text())
    environment = {**pulumi.environment, "PULUMI_DEBUG_COMMANDS": "true", "PULUMI_BACKEND_URL": state["backend"]}
    log_path = tmp_path / "events.jsonl"
    with pytest.raises(StandInError) as failed:
        Engine(state, environment).run(
            ["up", "--yes", "--skip-preview", "--stack", "dev", "--event-log", str(log_path)]
        )
    assert failed.value.stderr == ""
    assert failed.value.stdout == (
        "Diagnostics:\n"
        "  pulumi-python:dynamic:Resource (course-vm-verify):\n    error: the VM is not ready:\n    no docker\n\n"
        "  pulumi:pulumi:Stack (course-vm-dev):\n    error: update failed\n\n"
    )
    # course-vm reads the engine's lines from the event log, where they are whatever the CLI prints where.
    log = read_event_log(log_path)
    result = CliResult(("pulumi", "up"), 1, failed.value.stdout, failed.value.stderr)
    error = engine_error("update stack dev", "dev", result, log, project=None, again="up")
    assert str(error).splitlines()[1:4] == ["  error: the VM is not ready:", "  no docker", "  error: update failed"]


def test_the_cli_shows_a_type_as_its_display_name() -> None:
    assert display_name("gcp:compute/instance:Instance") == "gcp:compute:Instance"
    assert display_name("gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember") == "gcp:iap:TunnelInstanceIAMMember"
    assert display_name("pulumi:pulumi:Stack") == "pulumi:pulumi:Stack"
    assert display_name("gcp:projects/iAMMember:IAMMember") == "gcp:projects:IAMMember"
    assert display_name("pkgA:m/other:TypA") == "pkgA:m/other:TypA", "the module's last part is not the name"
