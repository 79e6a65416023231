"""A command's session with a stack, through the stand-in Pulumi CLI: what it reads once, changes, and runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.cli.main import main
from provisioner.driver.engine_errors import RAW_CLI_NOTE
from provisioner.driver.plan import Action, HomeDisk, VmChange, failed_students
from provisioner.driver.session import EngineRunError, StackSession
from provisioner.driver.state import StackState
from provisioner.errors import CourseVmError, EngineError, ExitStatus, MissingPrerequisiteError, SettingsError
from provisioner.stack import StackOutputs, VmOutputs
from tests.support.cli import run_cli
from tests.support.fake_compute_api import FakeComputeApi
from tests.support.outputs import class_outputs, one_vm, vm_outputs
from tests.support.pulumi_errors import CREDENTIALS, failed_step, provider_unconfigured, run_error
from tests.support.pulumi_events import preview_events, update_events
from tests.support.pulumi_state import STACK_CONFIG, exported_deployment
from tests.support.sshd import Sshd
from tests.support.stand_in_pulumi import option, stand_in_here, stand_in_pulumi

EXPORT = ["stack", "export", "--show-secrets", "--stack", "dev"]
NOT_READY = "the VM is not ready:\ndocker  FAILED  no docker"
TYPED = "typed at stack init"
"""The passphrase of a stack made with `pulumi stack init`, not course-vm's."""


# Opening a stack: its state read, and the one error for a stack that is not there.


def test_opening_a_stack_reads_its_state_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()})
    session = StackSession.open("dev")
    assert session.exists
    assert session.outputs() == StackOutputs.parse(one_vm(), lambda name: None)
    assert session.state().project == "course-project-1"
    assert session.outputs().vms[""].ip == "34.78.1.2"
    assert pulumi.calls() == [EXPORT]


def test_with_missing_ok_a_stack_that_is_not_there_is_no_error_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `up` opens: the stack is created only after the checks that need no stack.
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm(), "alice": {}})
    session = StackSession.open("typo", missing_ok=True)
    assert (session.exists, session.state(), session.outputs()) == (False, StackState(), StackOutputs())
    assert pulumi.verbs() == ["stack export"]


def test_without_missing_ok_a_stack_that_is_not_there_is_the_one_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm(), "alice": {}})
    with pytest.raises(CourseVmError) as raised:
        StackSession.open("typo")
    assert str(raised.value) == (
        "there is no stack typo (the stacks that exist: alice, dev); nothing was created or deleted. "
        "Fix: name one of them with --stack"
    )
    assert raised.value.exit_code == ExitStatus.BAD_INPUT
    assert pulumi.verbs() == ["stack export", "stack ls"], "no stack init"


def test_a_stack_that_is_not_there_where_none_is_says_how_to_create_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(tmp_path, monkeypatch, {})
    with pytest.raises(CourseVmError) as raised:
        StackSession.open("dev")
    assert str(raised.value) == (
        "there is no stack dev (no stack exists yet); nothing was created or deleted. "
        "Fix: create it with `course-vm up --stack dev --project YOUR-PROJECT-ID`"
    )


def test_a_stack_opened_missing_ok_is_created_once_and_its_config_read_then(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {}, config={"new": {"gcp:zone": "europe-west4-a"}})
    session = StackSession.open("new", missing_ok=True)
    assert not session.exists
    assert session.config().values == {}, "nothing to read yet"
    session.create()
    session.create()
    assert session.exists
    assert session.config().values == {"gcp:zone": "europe-west4-a"}, "a stack file that was there keeps its config"
    assert pulumi.calls() == [
        ["stack", "export", "--show-secrets", "--stack", "new"],
        ["stack", "init", "new"],
        ["config", "--json", "--show-secrets", "--stack", "new"],
    ]


def test_creating_a_stack_that_exists_runs_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()})
    StackSession.open("dev", missing_ok=True).create()
    assert pulumi.verbs() == ["stack export"]


def test_other_failures_of_the_cli_are_engine_errors_not_missing_stacks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(tmp_path, monkeypatch, fail={"stack export": {"stderr": "error: could not reach the backend\n"}})
    for missing_ok in (False, True):
        with pytest.raises(EngineError) as raised:
            StackSession.open("dev", missing_ok=missing_ok)
        assert str(raised.value) == (
            "Pulumi could not read stack dev:\n  error: could not reach the backend\n"
            "Fix: act on the engine's lines above, then run the same command again"
        )


def test_without_the_pulumi_cli_a_session_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(MissingPrerequisiteError, match=r"^the Pulumi CLI is needed to read the stack's outputs"):
        StackSession.open("dev", reads_only=True)


# The passphrase: missing or wrong, one clear error before anything changes (the stand-in answers as the CLI).


def their_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **given: Any) -> str:
    """A backend the user chose (PULUMI_BACKEND_URL, not course-vm's own), holding stack `mine`; its URL."""
    (tmp_path / "srv").mkdir()
    pulumi = stand_in_here(tmp_path / "srv", monkeypatch, {"mine": one_vm()}, **given)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))  # course-vm's own backend is elsewhere
    url = pulumi.environment["XDG_STATE_HOME"] + "/course-vm/pulumi"
    monkeypatch.setenv("PULUMI_BACKEND_URL", Path(url).as_uri())
    return Path(url).as_uri()


def test_a_stack_with_a_typed_passphrase_and_none_set_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = their_backend(tmp_path, monkeypatch)
    with pytest.raises(MissingPrerequisiteError) as raised:
        StackSession.open("mine")
    assert str(raised.value).startswith(f"stack mine on {url} keeps its secrets with a passphrase, and none is set")
    with pytest.raises(MissingPrerequisiteError, match=r"^stack mine on .* keeps its secrets with a passphrase"):
        StackSession.open("mine", reads_only=True)  # what check, start, stop and handout open
    # status opens the stack as every command does: the same error, one line, no traceback.
    assert main(["status", "--stack", "mine"]) == ExitStatus.MISSING_PREREQUISITE
    err = capsys.readouterr().err
    assert err.startswith(f"course-vm: stack mine on {url} keeps its secrets with a passphrase")
    assert "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE" in err
    assert "Traceback" not in err and err.count("\n") == 1
    assert not (tmp_path / "state" / "course-vm" / "pulumi" / "passphrase").exists(), "not course-vm's to set"


def test_a_backend_the_user_chose_is_read_with_their_own_passphrase(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    their_backend(tmp_path, monkeypatch, passphrase=TYPED)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", TYPED)
    assert list(StackSession.open("mine").outputs().vms) == [""]


def test_a_passphrase_that_does_not_decrypt_the_stack_says_which_one_was_tried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, passphrase=TYPED)
    assert main(["status"]) == ExitStatus.BAD_INPUT
    err = capsys.readouterr().err
    passphrase = tmp_path / "state" / "course-vm" / "pulumi" / "passphrase"
    assert err.startswith(f"course-vm's passphrase file {passphrase} does not decrypt stack dev's secrets")
    assert "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE" in err and "Traceback" not in err


def test_a_passphrase_the_user_set_that_does_not_decrypt_the_stack_is_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, passphrase=TYPED)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "another")
    with pytest.raises(CourseVmError, match=r"^the passphrase you set does not decrypt stack dev's secrets"):
        StackSession.open("dev", missing_ok=True)


# The outputs: each VM as the state has it, parsed once.


def test_after_a_first_up_that_failed_the_outputs_are_the_vms_of_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = exported_deployment("dev", class_outputs("alice"), root={}, unfinished=("bob",))
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, deployments={"dev": state})
    outputs = StackSession.open("dev").outputs()
    assert outputs.vms == {"alice": VmOutputs.parse(class_outputs("alice")["students"]["alice"])}
    assert outputs.unfinished == frozenset({"bob"})


@pytest.mark.parametrize(
    "exported",
    [{"version": 3}, {"version": 3, "deployment": "no mapping"}, {"version": 3, "deployment": {"resources": "none"}}],
)
def test_a_state_of_another_shape_is_a_stack_without_vms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exported: dict[str, Any]
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, deployments={"dev": exported})
    outputs = StackSession.open("dev").outputs()
    assert outputs == StackOutputs()
    with pytest.raises(CourseVmError) as raised:
        outputs.require_vms("dev")
    assert str(raised.value) == (
        "the stack has no ip, username, identityFile output. Fix: `course-vm up --stack dev` first"
    )


def test_a_student_name_no_roster_can_hold_is_refused_when_the_outputs_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("alice", vms={"..": vm_outputs()})})
    session = StackSession.open("dev")
    with pytest.raises(CourseVmError, match=r"^the stack's outputs name a student '\.\.', which is no student's name"):
        session.outputs()
    assert session.state().names() == {"alice", ".."}, "the state itself is read: down can still remove the entries"


# The config: read once, stored as Pulumi's keys and paths take it.


def test_the_config_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()})
    session = StackSession.open("dev")
    assert session.config().values == STACK_CONFIG
    assert session.config().cidrs() == ["203.0.113.7/32"]
    assert pulumi.calls() == [EXPORT, ["config", "--json", "--show-secrets", "--stack", "dev"]]


def test_store_sets_values_and_replaces_lists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()})
    session = StackSession.open("dev")
    assert session.config().cidrs() == ["203.0.113.7/32"]  # as `up` reads it first
    session.store({"gcp:zone": "europe-west4-a"}, {"allowedSshCidrs": ["198.51.100.0/24", "192.0.2.0/24"]})
    assert pulumi.config("dev") == {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west4-a",
        "course-vm:allowedSshCidrs": '["198.51.100.0/24", "192.0.2.0/24"]',
    }
    assert session.config().values == pulumi.config("dev"), "what was stored, without reading it again"
    assert pulumi.calls()[1:] == [
        ["config", "--json", "--show-secrets", "--stack", "dev"],
        ["config", "rm", "allowedSshCidrs", "--stack", "dev"],
        ["config", "set-all", "--path", "--plaintext", "gcp:zone=europe-west4-a",
         "--plaintext", "allowedSshCidrs[0]=198.51.100.0/24", "--plaintext", "allowedSshCidrs[1]=192.0.2.0/24",
         "--stack", "dev"],
    ]  # fmt: skip


def test_store_of_an_empty_list_removes_it_and_of_nothing_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()})
    session = StackSession.open("dev")
    session.store({}, {})
    assert pulumi.verbs() == ["stack export", "config"]
    session.store({}, {"allowedSshCidrs": []})
    assert pulumi.verbs()[2:] == ["config rm"]
    assert "course-vm:allowedSshCidrs" not in pulumi.config("dev")
    assert session.config().cidrs() == []


def test_a_config_that_cannot_be_read_is_an_engine_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stand_in_here(
        tmp_path, monkeypatch, {"dev": one_vm()}, fail={"config": {"stderr": "error: the config is broken\n"}}
    )
    with pytest.raises(EngineError, match=r"^Pulumi could not read the config of stack dev:\n  error: the config is"):
        StackSession.open("dev").config()


# The engine: preview, update, destroy, each with its event log.


def test_a_preview_is_a_plan_per_vm_from_the_event_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = preview_events({"alice": {"self": "create", "vm": "create"}, "bob": {"vm": "replace", "home": "same"}})
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": class_outputs("bob")}, events=events)
    plan = StackSession.open("dev").preview()
    assert plan.vms == (VmChange("alice", Action.CREATE, None), VmChange("bob", Action.REPLACE, HomeDisk.KEPT))
    preview = pulumi.calls()[-1]
    log = option(preview, "--event-log")
    assert preview == ["preview", "--stack", "dev", "--event-log", log]
    assert log is not None and not Path(log).exists(), "the log's folder is removed after it was read"


def test_the_programs_settings_problems_are_handed_over_as_a_settings_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    problems = ["diskSizeGb: got 'tiny', but ... Fix: pulumi config set diskSizeGb 30", "nope: got 'x', but ..."]
    # The program raises RunError with the problems as text (its events), and hands them over as data.
    refused = {"events": run_error(str(SettingsError(problems))), "problems": problems}
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, fail={"preview": refused})
    with pytest.raises(SettingsError) as raised:
        StackSession.open("dev").preview()
    assert raised.value.problems == tuple(problems)
    assert str(raised.value) == (
        f"course-vm settings: 2 problems, nothing was created:\n  - {problems[0]}\n  - {problems[1]}\n{RAW_CLI_NOTE}"
    )


def test_a_failed_preview_is_the_engines_error_with_its_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failure = {"events": provider_unconfigured()}
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, fail={"preview": failure})
    with pytest.raises(EngineRunError) as raised:
        StackSession.open("dev").preview(project="course-project-1")
    said = "\n  ".join(line.strip() for line in CREDENTIALS.splitlines())
    assert str(raised.value) == (
        f"Pulumi could not preview the changes to stack dev:\n  error: {said}\n"
        "Fix: log in for applications with `gcloud auth application-default login`, then run `course-vm up` again"
    )
    # The provider's error names it; before any step failed, the engine adds no `preview failed` (a bail), and the
    # CLI, bailing, says nothing on stderr.
    assert [d.message for d in raised.value.log.errors] == [CREDENTIALS + "\n"]


def test_a_passphrase_the_engine_refuses_is_the_passphrase_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = {"stderr": 'error: constructing secrets manager of type "passphrase": incorrect passphrase\n'}
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, fail={"up": wrong})
    with pytest.raises(CourseVmError, match=r"^course-vm's passphrase file .* does not decrypt stack dev's") as raised:
        StackSession.open("dev").update(print)
    assert not isinstance(raised.value, EngineError)


def test_an_update_says_its_progress_and_reads_the_state_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(
        tmp_path,
        monkeypatch,
        {"dev": {}},
        next_outputs=class_outputs("alice"),
        update_events=update_events({"alice": "passed"}),
    )
    session = StackSession.open("dev")
    assert session.outputs().vms == {}
    said: list[str] = []
    log = session.update(said.append)
    assert said == ["Updating (dev)"]
    assert failed_students(log) == set() and log.stepped
    assert list(session.outputs().vms) == ["alice"]
    assert pulumi.calls()[1][:-2] == ["up", "--yes", "--skip-preview", "--continue-on-error", "--stack", "dev"]
    assert pulumi.verbs() == ["stack export", "up", "stack export"]


def test_a_failed_update_carries_its_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failure = {
        "events": update_events({"alice": "passed", "bob": f"failed: {NOT_READY}"}),
    }
    stand_in_here(tmp_path, monkeypatch, {"dev": {}}, fail={"up": failure})
    with pytest.raises(EngineRunError) as raised:
        StackSession.open("dev").update(print)
    assert failed_students(raised.value.log) == {"bob"}
    assert raised.value.exit_code == 5
    assert str(raised.value) == (
        "Pulumi could not update stack dev:\n  error: the VM is not ready:\n  docker  FAILED  no docker\n"
        "  error: update failed\nFix: act on the engine's lines above, then run `course-vm up` again"
    )


def test_a_deletion_is_previewed_then_done(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What `destroy` deletes is what the state holds (here a home disk too), whatever the program would make.
    state = exported_deployment("dev", one_vm(), home_disks={"": 50})
    pulumi = stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, deployments={"dev": state})
    session = StackSession.open("dev")
    assert session.preview_destroy().vms == (VmChange("", Action.DELETE, HomeDisk.LOST),)
    said: list[str] = []
    session.destroy(said.append)
    assert said == ["Destroying (dev)"]
    assert session.outputs() == StackOutputs()
    destroys = [call[:-2] for call in pulumi.calls() if call[0] == "destroy"]
    assert destroys == [
        ["destroy", "--preview-only", "--stack", "dev"],
        ["destroy", "--yes", "--skip-preview", "--stack", "dev"],
    ]


def test_a_failed_deletion_says_to_run_down_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The deletion of the home disk fails (a step): the engine says so, then `update failed` (as for any update).
    failure = {"events": failed_step("delete", "home", "Error deleting Disk: googleapi: Error 400: the disk is in use")}
    stand_in_here(tmp_path, monkeypatch, {"dev": one_vm()}, fail={"destroy": failure})
    with pytest.raises(EngineRunError) as raised:
        StackSession.open("dev").destroy(print)
    assert str(raised.value) == (
        "Pulumi could not delete stack dev:\n  error: Error deleting Disk: googleapi: Error 400: the disk is in use\n"
        "  error: update failed\nFix: act on the engine's lines above, then run `course-vm down` again"
    )


# How many times each command starts the Pulumi CLI (issue 18's measures): the stand-in counts them.
# Each list is exact, so a test fails when a call is added, and says which.


def test_up_of_an_unchanged_one_vm_stack_runs_the_cli_4_times(tmp_path: Path, api: FakeComputeApi) -> None:
    # Measure: at most 6. Was 12 (version, stack select, six `stack output` runs, config, preview, up, history).
    unchanged = preview_events({"": {"ip": "same", "vm": "same", "verify": "same"}})
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()}, events=unchanged)
    result = run_cli("up", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert "no changes: nothing will be created, replaced or deleted\n" in result.stdout
    assert pulumi.verbs() == ["stack export", "config", "stack select", "preview"]


def test_status_runs_the_cli_twice(tmp_path: Path, api: FakeComputeApi) -> None:
    # Measure: at most 3. Was 7.
    pulumi = stand_in_pulumi(tmp_path, {"dev": class_outputs("alice", "bob")})
    result = run_cli("status", "--json", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert pulumi.verbs() == ["stack export", "stack select"]


@pytest.mark.integration
def test_check_runs_the_cli_once(tmp_path: Path, ready_sshd: Sshd) -> None:
    # Measure: at most 2. Was 2 (`stack output`, then `stack export`).
    vm = one_vm(ip="127.0.0.1", username=ready_sshd.user, identityFile=str(ready_sshd.client_key),
                hostKeys=[str(ready_sshd.host_key)])  # fmt: skip
    pulumi = stand_in_pulumi(tmp_path, {"dev": vm}, selected="dev")
    result = run_cli("check", "--port", str(ready_sshd.port), "--timeout", "30", "--json", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert pulumi.verbs() == ["stack export"]
