"""`status` (provisioner/cli/status.py) as a user runs it: each VM's state read from the fake Compute API now, its
last verification as `up` recorded it, from a stack the stand-in Pulumi CLI keeps."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from provisioner.driver.events import parse_events
from provisioner.driver.verifications import record_verifications
from tests.support.cli import run_cli
from tests.support.fake_compute_api import BASE, INSTANCE, FakeComputeApi
from tests.support.fixes import assert_fixes_are_valid
from tests.support.outputs import class_outputs, one_vm, vm_outputs
from tests.support.pulumi_events import update_events
from tests.support.pulumi_state import exported_deployment
from tests.support.stand_in_pulumi import StandInPulumi, stand_in_pulumi


def record(monkeypatch: pytest.MonkeyPatch, pulumi: StandInPulumi, verifications: dict[str, str]) -> None:
    """Record on the stand-in's machine what an `up` of stack dev saw of VERIFICATIONS (see update_events)."""
    monkeypatch.setenv("XDG_STATE_HOME", pulumi.environment["XDG_STATE_HOME"])
    record_verifications("dev", parse_events(json.dumps(event) for event in update_events(verifications)))


def a_recorded_class(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], dict[str, str]]:
    """A class of four whose last `up` saw alice's verification pass and bob's fail (carol's stack has
    none for her: verify was off); dave's passed before course-vm recorded it (only his pinned key says so).
    alice runs, bob stopped, carol's VM is gone, and the Compute API fails for dave's. The environment
    that reaches it and the fake Compute API, and each student's instance."""
    pinned = {"alice": vm_outputs("alice", ip="34.78.1.10"), "dave": vm_outputs("dave", ip="34.78.1.13")}
    outputs = class_outputs("alice", "bob", "carol", "dave", host_keys=None, vms=pinned)
    instances = {name: str(vm["instanceName"]) for name, vm in outputs["students"].items()}
    api.statuses.update({instances["alice"]: "RUNNING", instances["bob"]: "TERMINATED", instances["dave"]: "RUNNING"})
    api.failing[instances["dave"]] = 503
    pulumi = stand_in_pulumi(tmp_path, {"dev": outputs})
    record(monkeypatch, pulumi, {"alice": "passed", "bob": "failed: not ready"})
    record(monkeypatch, pulumi, {"carol": "off"})
    return {**pulumi.environment, **api.gcloud_environment()}, instances


def dave_503(instances: dict[str, str]) -> str:
    return (
        f"the Compute API could not read instance {instances['dave']} (503: The service is currently unavailable). "
        "Fix: try again in a minute"
    )


def carol_gone(instances: dict[str, str]) -> str:
    carol = instances["carol"]
    return (
        f"instance {carol} not found in course-project-1/europe-west1-b (The resource "
        f"'projects/course-project-1/zones/europe-west1-b/instances/{carol}' was not found). "
        "Fix: `course-vm up` creates it again"
    )


def test_status_shows_each_vms_state_now_and_its_last_verification(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, instances = a_recorded_class(api, tmp_path, monkeypatch)
    result = run_cli("status", env=env)
    assert result.returncode == 0, result.stderr
    carol = f"unknown (instance {instances['carol']} not found in course-project-1/europe-west1-b)"
    dave = f"unknown (the Compute API could not read instance {instances['dave']})"

    def row(student: str, state: str, ip: str, verified: str) -> str:
        return f"{student:<7}  {state:<{max(len(carol), len(dave))}}  {ip:<10}  {verified}"

    assert result.stdout.splitlines() == [
        row("STUDENT", "STATE", "IP", "VERIFIED"),
        row("alice", "RUNNING", "34.78.1.10", "passed (2026-11-27 14:00:00 UTC)"),
        row("bob", "TERMINATED", "34.78.1.11", "FAILED (2026-11-27 14:00:00 UTC)"),
        row("carol", carol, "34.78.1.12", "not verified (verify=false)"),
        row("dave", dave, "34.78.1.13", "passed"),
        "stack dev: 4 VMs, 1 RUNNING, 1 TERMINATED, 2 unknown",
        f"carol: {carol_gone(instances)}",
        f"dave: {dave_503(instances)}",
        "A FAILED verification runs again at the next `course-vm up --stack dev`.",
    ]
    assert_fixes_are_valid(["status"], result.stdout)
    assert not [request for request in api.requests if request.startswith("POST")], "status changes nothing"


def test_status_json_is_the_same_rows_with_stable_keys(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, instances = a_recorded_class(api, tmp_path, monkeypatch)
    result = run_cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    common = {"zone": INSTANCE.zone, "state_error": None, "verified_at": None, "verify_error": None, "iap": False}
    at = "2026-11-27T14:00:00Z"
    assert rows == [
        {**common, "student": "alice", "host": "course-vm-alice", "instance": instances["alice"], "ip": "34.78.1.10",
         "state": "RUNNING", "verified": "passed", "verified_at": at},
        {**common, "student": "bob", "host": "course-vm-bob", "instance": instances["bob"], "ip": "34.78.1.11",
         "state": "TERMINATED", "verified": "failed", "verified_at": at, "verify_error": "not ready"},
        {**common, "student": "carol", "host": "course-vm-carol", "instance": instances["carol"], "ip": "34.78.1.12",
         "state": "unknown", "state_error": carol_gone(instances), "verified": "off"},
        {**common, "student": "dave", "host": "course-vm-dave", "instance": instances["dave"], "ip": "34.78.1.13",
         "state": "unknown", "state_error": dave_503(instances), "verified": "passed"},
    ]  # fmt: skip


def test_status_of_a_single_vm_names_it_by_its_alias(api: FakeComputeApi, tmp_path: Path) -> None:
    api.instance_status = "SUSPENDED"
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm(instanceName=INSTANCE.name, host_keys=None)})
    result = run_cli("status", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "STUDENT    STATE      IP         VERIFIED",
        "course-vm  SUSPENDED  34.78.1.2  unknown",
        "stack dev: 1 VM, 1 SUSPENDED",
    ]
    assert api.requests == [BASE]


def test_status_of_an_iap_vm_calls_its_address_internal(api: FakeComputeApi, tmp_path: Path) -> None:
    # Under sshAccess iap `ip` is the VM's internal address: shown as it is, it would seem reachable.
    outputs = class_outputs("alice", iap=True)
    api.statuses[outputs["students"]["alice"]["instanceName"]] = "RUNNING"
    env = {**stand_in_pulumi(tmp_path, {"dev": outputs}).environment, **api.gcloud_environment()}
    table = run_cli("status", env=env)
    assert table.returncode == 0, table.stderr
    assert re.split(r"  +", table.stdout.splitlines()[1]) == ["alice", "RUNNING", "10.42.0.2 (internal: IAP)", "passed"]
    [row] = json.loads(run_cli("status", "--json", env=env).stdout)
    assert (row["ip"], row["iap"]) == ("10.42.0.2", True)


def test_status_without_credentials_says_unknown_in_every_row_and_why(tmp_path: Path) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": class_outputs("alice", "bob")})
    env = {**pulumi.environment, "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://compute.example.org"}
    result = run_cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["state"] for row in rows] == ["unknown", "unknown"]
    assert rows[0]["state_error"].startswith(
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got 'http://compute.example.org'"
    )
    assert rows[0]["state_error"].endswith(
        "Fix: export CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=https://compute.example.org/, or unset it"
    )
    table = run_cli("status", env=env).stdout.splitlines()
    assert table[1].startswith(
        "alice    unknown (CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got 'http://compute.example.org'"
    )
    assert table[-1] == "alice, bob: " + rows[0]["state_error"], "one reason, said once"


def test_status_of_a_stack_without_vms_is_an_empty_json_list(tmp_path: Path) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}})
    result = run_cli("status", "--json", env=pulumi.environment)
    assert (result.returncode, result.stdout) == (0, "[]\n")
    assert result.stderr == "stack dev: no course VM. Create one: course-vm up --project YOUR-PROJECT-ID\n"
    assert "stack init" not in pulumi.verbs()


def test_status_after_a_first_up_that_failed_part_way_says_vms_may_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pulumi keeps a failed update's outputs as they were: after a first `up`, none.
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}})
    record(monkeypatch, pulumi, {"alice": "passed", "bob": "failed: not ready"})
    result = run_cli("status", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "stack dev: no VMs in its outputs, for its first `course-vm up` did not finish; VMs may exist "
        "(that up verified: alice passed, bob failed). `course-vm up --stack dev` finishes it; "
        "`course-vm down --stack dev` removes what exists\n"
    )


def test_after_a_class_up_where_one_failed_status_sees_the_others(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a first `up` of alice, bob and carol leaves when bob's verification fails: no stack outputs, and in
    # the state alice's and carol's VMs with their outputs, bob's without (tests/cli/test_lifecycle.py runs it).
    finished = class_outputs("alice", "carol")
    state = exported_deployment("dev", finished, root={}, unfinished=("bob",))
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, deployments={"dev": state})
    record(monkeypatch, pulumi, {"alice": "passed", "bob": "failed: not ready", "carol": "passed"})
    for vm in finished["students"].values():
        api.statuses[vm["instanceName"]] = "RUNNING"
    result = run_cli("status", "--json", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["student"], row["state"], row["ip"], row["verified"]) for row in rows] == [
        ("alice", "RUNNING", "34.78.1.10", "passed"),
        ("carol", "RUNNING", "34.78.1.11", "passed"),
    ]


def test_status_of_a_vm_whose_outputs_name_no_instance_is_unknown_not_a_crash(
    api: FakeComputeApi, tmp_path: Path
) -> None:
    outputs = class_outputs("alice", instanceName="", zone="")  # as a stack made before instanceName was exported
    pulumi = stand_in_pulumi(tmp_path, {"dev": outputs})
    result = run_cli("status", "--json", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["state"], row["state_error"]) == (
        "unknown",
        "the stack's outputs name no instance or zone for it. Fix: `course-vm up` exports them",
    )
    assert api.requests == []


def test_status_of_a_stack_whose_state_cannot_be_read_says_what_the_cli_said(
    api: FakeComputeApi, tmp_path: Path
) -> None:
    # The state is where every command reads the stack's VMs from: without it there is nothing to show.
    failing = {"stack export": {"stderr": 'error: unknown command "export" for "pulumi stack"\n'}}
    pulumi = stand_in_pulumi(tmp_path, {"dev": class_outputs("alice")}, fail=failing)
    result = run_cli("status", "--json", env={**pulumi.environment, **api.gcloud_environment()})
    assert result.returncode == 5
    assert result.stdout == "", "nothing a JSON reader could take for rows"
    assert result.stderr == (
        "course-vm: Pulumi could not read stack dev:\n"
        '  error: unknown command "export" for "pulumi stack"\n'
        "Fix: act on the engine's lines above, then run the same command again\n"
    )
    assert pulumi.verbs() == ["stack export"]
    assert api.requests == []
