"""`start` and `stop` (provisioner/cli/power.py) as a user runs them, against the stand-in Pulumi CLI and the fake
Compute API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import run_cli
from tests.support.fake_compute_api import INSTANCE, ZONE_PATH, FakeComputeApi, zone_exhausted
from tests.support.fixes import assert_fixes_are_valid
from tests.support.outputs import class_outputs, one_vm
from tests.support.stand_in_pulumi import stand_in_pulumi


def a_vm(api: FakeComputeApi, tmp_path: Path, **changes: Any) -> dict[str, str]:
    """The environment that reaches stack dev, whose one VM is the fake Compute API's INSTANCE (CHANGES to its
    outputs), and that API."""
    outputs = one_vm(instanceName=INSTANCE.name, identityFile=str(tmp_path / "key"), **changes)
    return {**stand_in_pulumi(tmp_path, {"dev": outputs}).environment, **api.gcloud_environment()}


def a_class(
    api: FakeComputeApi, tmp_path: Path, stack: str = "dev", **statuses: str
) -> tuple[dict[str, str], dict[str, str]]:
    """A class STACK whose students' VMs have STATUSES (student -> GCE status; `gone`: no such VM): the environment
    that reaches it and the fake Compute API, and each student's instance."""
    outputs = class_outputs(*statuses, stack=stack, identityFile=str(tmp_path / "key"))
    instances = {name: str(vm["instanceName"]) for name, vm in outputs["students"].items()}
    for name, status in statuses.items():
        if status != "gone":
            api.statuses[instances[name]] = status
    env = {**stand_in_pulumi(tmp_path, {stack: outputs}).environment, **api.gcloud_environment()}
    return env, instances


def test_start_starts_a_stopped_vm_and_says_how_to_log_in(api: FakeComputeApi, tmp_path: Path) -> None:
    result = run_cli("start", env=a_vm(api, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "course-vm: running at 34.78.1.2 (same address and host keys): `ssh course-vm`\n"
    assert api.instance_status == "RUNNING"


def test_start_of_a_class_reports_each_vm_it_could_not_start(api: FakeComputeApi, tmp_path: Path) -> None:
    env, instances = a_class(api, tmp_path, alice="TERMINATED", bob="gone")
    result = run_cli("start", env=env)
    assert result.returncode == 2
    assert result.stdout.startswith("course-vm-alice: running at 34.78.1.10")
    assert "\ncourse-vm: 1 of 2 VMs could not be started:\n" in "\n" + result.stderr
    assert f"\n  course-vm-bob: instance {instances['bob']} not found in course-project-1/europe-west1-b" in (
        result.stderr
    )
    assert api.statuses[instances["alice"]] == "RUNNING"


def test_stop_stops_every_vm_of_a_class_and_says_how_to_start_each_again(api: FakeComputeApi, tmp_path: Path) -> None:
    env, instances = a_class(api, tmp_path, alice="RUNNING", bob="TERMINATED")
    result = run_cli("stop", "--stack", "dev", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "course-vm-alice: stopped (disks and address kept): `course-vm start --stack dev --student alice` "
        "starts it again\n"
        "course-vm-bob: stopped (disks and address kept): `course-vm start --stack dev --student bob` starts it again\n"
    )
    assert api.statuses == {instances["alice"]: "TERMINATED", instances["bob"]: "TERMINATED"}
    assert f"POST {ZONE_PATH}{instances['bob']}/stop" in api.requests, "an already stopped VM is asked too, and fine"


def test_stop_of_one_student_leaves_the_others_running(api: FakeComputeApi, tmp_path: Path) -> None:
    env, instances = a_class(api, tmp_path, alice="RUNNING", bob="RUNNING")
    result = run_cli("stop", "--student", "bob", "--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("course-vm-bob: stopped")
    assert api.statuses == {instances["alice"]: "RUNNING", instances["bob"]: "TERMINATED"}


def test_stop_of_a_single_vm(api: FakeComputeApi, tmp_path: Path) -> None:
    api.instance_status = "RUNNING"
    result = run_cli("stop", env=a_vm(api, tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "course-vm: stopped (disks and address kept): `course-vm start --stack dev` starts it again\n"
    )
    assert api.instance_status == "TERMINATED"


@pytest.mark.parametrize(("verb", "done"), [("stop", "stopped"), ("start", "started")])
def test_each_student_that_failed_is_one_row_and_the_exit_status_the_highest(
    api: FakeComputeApi, tmp_path: Path, verb: str, done: str
) -> None:
    alice = "RUNNING" if verb == "stop" else "TERMINATED"
    env, instances = a_class(api, tmp_path, alice=alice, bob="gone", carol="RUNNING")
    bob, carol = instances["bob"], instances["carol"]
    api.failing[carol] = 503
    result = run_cli(verb, env=env)
    assert result.returncode == 3, "bob's 2 (not found) and carol's 3 (the API failed): the highest"
    assert result.stdout.startswith("course-vm-alice: ")
    error = result.stderr[result.stderr.index("course-vm: 2 of 3") :]  # after the progress lines
    assert error.splitlines() == [
        f"course-vm: 2 of 3 VMs could not be {done}:",
        f"  course-vm-bob: instance {bob} not found in course-project-1/europe-west1-b (The resource "
        f"'projects/course-project-1/zones/europe-west1-b/instances/{bob}' was not found). "
        "Fix: `course-vm up` creates it again",
        f"  course-vm-carol: the Compute API could not {verb} instance {carol} (503: The service is "
        "currently unavailable). Fix: try again in a minute",
    ]
    assert api.statuses[instances["alice"]] == ("TERMINATED" if verb == "stop" else "RUNNING")
    assert_fixes_are_valid([verb], error)


def test_a_start_gce_refuses_for_want_of_room_is_one_line_at_once(api: FakeComputeApi, tmp_path: Path) -> None:
    api.operation_error = zone_exhausted()
    result = run_cli("start", "--timeout", "600", env=a_vm(api, tmp_path))
    assert result.returncode == 3
    assert result.stderr.splitlines()[-1] == (
        f"course-vm: GCE could not start instance {INSTANCE.name} (ZONE_RESOURCE_POOL_EXHAUSTED: The zone "
        "'projects/course-project-1/zones/europe-west1-b' does not have enough resources available to fulfill the "
        "request. Try a different zone, or try again later). Fix: zone europe-west1-b has no room for this machine "
        "type now; run `course-vm start` again in a few minutes"
    )
    assert "Traceback" not in result.stderr
    assert_fixes_are_valid(["start"], result.stderr)


@pytest.mark.parametrize("verb", ["start", "stop"])
def test_each_rows_fix_names_the_stack_it_was_given(api: FakeComputeApi, tmp_path: Path, verb: str) -> None:
    env, instances = a_class(api, tmp_path, "fall", bob="gone", carol="RUNNING")
    api.failing[instances["carol"]] = 400
    result = run_cli(verb, "--stack", "fall", env=env)
    error = result.stderr[result.stderr.index("course-vm: 2 of 2") :]
    assert "Fix: `course-vm up --stack fall` creates it again" in error
    assert "Fix: run `course-vm status --stack fall` to see the VM's state, then try again" in error
    assert_fixes_are_valid([verb], error)


def test_start_and_stop_of_an_iap_vm_name_no_address_it_does_not_have(api: FakeComputeApi, tmp_path: Path) -> None:
    # Under sshAccess iap the VM has no external address: its `ip` is the internal one, which nobody can reach.
    env = a_vm(api, tmp_path, iap=True)
    started = run_cli("start", env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout == "course-vm: running, reached through IAP (same host keys): `ssh course-vm`\n"
    stopped = run_cli("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "course-vm: stopped (disks kept): `course-vm start --stack dev` starts it again\n"
    assert api.instance_status == "TERMINATED"
