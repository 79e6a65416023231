"""Each VM's last verification as `up` saw it in the engine's events, kept on this machine for `status`."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from provisioner.driver.events import EngineLog, parse_events
from provisioner.driver.verifications import (
    Result,
    Verification,
    forget_verifications,
    record_verifications,
    recorded_verifications,
    verifications_file,
    verifications_of,
)
from tests.support.pulumi_events import COURSE_VM, STUDENT_VM, VM_CHILDREN, step, update_events, urn

NOT_READY = "the VM is not ready:\nCHECK  RESULT  TIME  DETAIL\ndocker  FAILED  1.0s  no docker\n"
AT_14 = 1795788000  # 2026-11-27T14:00:00Z
AT_15 = 1795791600


@pytest.fixture(autouse=True)
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "course-vm"


def log_of(events: list[dict[str, Any]]) -> EngineLog:
    return parse_events(json.dumps(event) for event in events)


def test_an_update_records_whose_verification_passed_and_whose_failed(state_home: Path) -> None:
    record_verifications("dev", log_of(update_events({"alice": "passed", "bob": "failed: " + NOT_READY})))
    assert recorded_verifications("dev") == {
        "alice": Verification(Result.PASSED, "2026-11-27T14:00:00Z"),
        "bob": Verification(Result.FAILED, "2026-11-27T14:00:00Z", NOT_READY.strip()),
    }
    path = state_home / "verifications" / "dev.json"
    assert verifications_file("dev") == path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert recorded_verifications("other") == {}


def test_a_later_up_keeps_when_an_unchanged_verification_passed() -> None:
    record_verifications("dev", log_of(update_events({"alice": "passed", "bob": "failed: " + NOT_READY})))
    later = update_events({"alice": "same", "bob": "passed", "carol": "same"}, timestamp=AT_15)
    record_verifications("dev", log_of(later))
    assert recorded_verifications("dev") == {
        "alice": Verification(Result.PASSED, "2026-11-27T14:00:00Z"),
        "bob": Verification(Result.PASSED, "2026-11-27T15:00:00Z"),
        "carol": Verification(Result.PASSED, None),  # passed before course-vm kept the time
    }


def test_vms_a_later_update_did_not_reach_keep_their_record() -> None:
    record_verifications("dev", log_of(update_events({"alice": "passed", "bob": "passed"})))
    record_verifications("dev", log_of(update_events({"bob": "failed: " + NOT_READY}, timestamp=AT_15)))
    assert recorded_verifications("dev") == {
        "alice": Verification(Result.PASSED, "2026-11-27T14:00:00Z"),
        "bob": Verification(Result.FAILED, "2026-11-27T15:00:00Z", NOT_READY.strip()),
    }


def test_a_vm_without_a_verification_has_verify_off() -> None:
    record_verifications("dev", log_of(update_events({"": "off"})))
    assert recorded_verifications("dev") == {"": Verification(Result.OFF)}


def test_an_update_that_reached_no_vm_writes_nothing() -> None:
    record_verifications("dev", EngineLog())
    assert not verifications_file("dev").exists()


def test_a_verification_being_deleted_is_no_verification() -> None:
    vm = urn("dev", [COURSE_VM, STUDENT_VM], "course-vm-alice")
    verify = [COURSE_VM, STUDENT_VM, VM_CHILDREN["verify"]]
    gone = [step(op, verify, "course-vm-alice-verify", vm) for op in ("delete", "delete-replaced", "discard")]
    assert verifications_of(log_of(gone), {}) == {}


def test_a_failure_stands_over_outputs_of_the_same_verification() -> None:
    # With continue-on-error the engine may report the failed step's outputs after its failure.
    events = update_events({"alice": "failed: " + NOT_READY})
    failed = next(e for e in events if "resOpFailedEvent" in e)
    outputs = {
        "sequence": 0,
        "timestamp": AT_14,
        "resOutputsEvent": {"metadata": failed["resOpFailedEvent"]["metadata"]},
    }
    assert verifications_of(log_of([*events, outputs]), {}) == {
        "alice": Verification(Result.FAILED, "2026-11-27T14:00:00Z", NOT_READY.strip())
    }


def test_an_unchanged_verification_that_failed_before_passed_at_no_known_time() -> None:
    before = {"alice": Verification(Result.FAILED, "2026-11-27T14:00:00Z", "no docker")}
    assert verifications_of(log_of(update_events({"alice": "same"}, timestamp=AT_15)), before) == {
        "alice": Verification(Result.PASSED, None)
    }


@pytest.mark.parametrize(
    "text",
    ['{"alice": {"outcome": "weird"}}', '{"alice": {"result": "maybe"}}', "[]", '["alice"]', "not JSON", ""],
)
def test_an_unreadable_record_is_no_record(text: str) -> None:
    path = verifications_file("dev")
    path.parent.mkdir(parents=True)
    path.write_text(text)
    assert recorded_verifications("dev") == {}


def test_an_unreadable_record_is_written_anew() -> None:
    path = verifications_file("dev")
    path.parent.mkdir(parents=True)
    path.write_text("not JSON")
    record_verifications("dev", log_of(update_events({"alice": "passed"})))
    assert recorded_verifications("dev") == {"alice": Verification(Result.PASSED, "2026-11-27T14:00:00Z")}


def test_a_record_that_cannot_be_written_is_left_as_it_is(state_home: Path) -> None:
    state_home.mkdir(parents=True)
    (state_home / "verifications").write_text("a file where the folder goes")
    record_verifications("dev", log_of(update_events({"alice": "passed"})))
    assert recorded_verifications("dev") == {}


def test_a_stacks_name_is_a_file_name_of_its_own(state_home: Path) -> None:
    assert verifications_file("a/b") == state_home / "verifications" / "a%2Fb.json"


def test_forget_removes_the_stacks_record_alone() -> None:
    record_verifications("dev", log_of(update_events({"alice": "passed"})))
    record_verifications("fall", log_of(update_events({"bob": "passed"})))
    forget_verifications("dev")
    assert recorded_verifications("dev") == {}
    assert list(recorded_verifications("fall")) == ["bob"]
    forget_verifications("dev")  # nothing left to forget: no error


@pytest.mark.parametrize("result", list(Result))
def test_a_result_reads_as_its_value(result: Result) -> None:
    # What `status` prints (str(result)): the value, as enum.StrEnum gives it on 3.11, on Python 3.10 too.
    assert str(result) == f"{result}" == result.value
