"""The lifecycle commands as a user runs them (provisioner/cli/lifecycle.py): `up` and `down` against the stand-in
Pulumi CLI and the fake Compute API, each failure one error with a next step. `start`/`stop` and `status` have
test_power.py and test_status.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import IO, Any

import pytest

from provisioner.cli.up import class_table
from provisioner.driver.engine_errors import RAW_CLI_NOTE
from provisioner.errors import ExitStatus, SettingsError
from provisioner.stack import VmOutputs
from tests.support.cli import on_a_terminal, run_cli, started_cli
from tests.support.fake_compute_api import MACHINE_TYPES_PATH, PROJECT_PATH, REGION_PATH, FakeComputeApi, quota
from tests.support.fixes import assert_fixes_are_valid
from tests.support.outputs import class_outputs, one_vm, vm_outputs
from tests.support.pulumi_errors import (
    API_DISABLED,
    CRASH,
    CREDENTIALS,
    LOCKED,
    QUOTA,
    failed_create,
    program_failed,
    provider_unconfigured,
    run_error,
)
from tests.support.pulumi_events import preview_events, update_events
from tests.support.pulumi_state import STACK_CONFIG, exported_deployment
from tests.support.stand_in_pulumi import stand_in_pulumi


@pytest.fixture(autouse=True)
def compute(api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch) -> FakeComputeApi:
    """Every command here reaches the fake Compute API (`up` reads the project and its quotas), through
    the environment the stand-in copies."""
    for name, value in api.gcloud_environment().items():
        monkeypatch.setenv(name, value)
    return api


VM = one_vm()
CREATE = preview_events({"": {"self": "create", "ip": "create", "vm": "create"}})


def test_up_yes_previews_then_updates_and_says_how_to_log_in(tmp_path: Path) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Pulumi's preview of stack dev:\n  the VM (course-vm): create\n")
    assert "Proceed?" not in result.stdout
    assert result.stdout.endswith(
        "Ready: `ssh course-vm` (VS Code Remote-SSH: host course-vm), or: " + VM["sshCommand"] + "\n"
    )
    assert pulumi.verbs().index("preview") < pulumi.verbs().index("up")
    assert pulumi.outputs("dev") == VM


def test_without_a_terminal_or_yes_up_shows_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = run_cli("up", env=pulumi.environment)
    assert result.returncode == ExitStatus.DECLINED
    # A stack with nothing yet: the engine creates what the VMs share too (and the stack resource, not shown).
    assert result.stdout == (
        "Pulumi's preview of stack dev:\n  the VM (course-vm): create\n"
        "  course-vm-network (shared by the VMs): create\n  course-vm-ssh (shared by the VMs): create\n"
        "  course-vm-subnet (shared by the VMs): create\n"
    )
    assert result.stderr.endswith(
        "course-vm: nothing was changed: this needs a yes, and there is no terminal to ask on. "
        "Fix: run it again with --yes once the preview above is what you want\n"
    )
    assert "up" not in pulumi.verbs()


def test_a_preview_without_changes_goes_on_unasked_and_runs_no_update(tmp_path: Path) -> None:
    same = preview_events({"": {"ip": "same", "vm": "same"}})
    pulumi = stand_in_pulumi(tmp_path, {"dev": VM}, events=same)
    result = run_cli("up", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert "no changes: nothing will be created, replaced or deleted\n" in result.stdout
    assert "Ready: `ssh course-vm`" in result.stdout
    assert "up" not in pulumi.verbs()


@pytest.mark.parametrize(("typed", "goes_on"), [(b"y\n", True), (b"n\n", False), (b"\n", False), (b"", False)])
def test_on_a_terminal_only_a_yes_changes_anything(tmp_path: Path, typed: bytes, goes_on: bool) -> None:
    replace = preview_events({"": {"ip": "same", "vm": "replace", "home": "same"}})
    pulumi = stand_in_pulumi(tmp_path, {"dev": VM}, events=replace, next_outputs=VM)
    code, output = on_a_terminal("up", env=pulumi.environment, typed=typed)
    assert "the VM (course-vm): REPLACE: everything on its boot disk is lost; /home is kept" in output
    assert "Proceed? [y/N] " in output
    assert ("up" in pulumi.verbs()) is goes_on
    if goes_on:
        assert code == 0 and "Ready: `ssh course-vm`" in output
    else:
        assert code == ExitStatus.DECLINED and "not confirmed: nothing was created, changed or deleted" in output


def test_down_previews_the_deletion_and_without_a_terminal_deletes_nothing(tmp_path: Path) -> None:
    # The engine deletes what the stack's state holds: here the VM with its home disk, and what the VMs share.
    state = exported_deployment("dev", VM, home_disks={"": 50})
    pulumi = stand_in_pulumi(tmp_path, {"dev": VM}, deployments={"dev": state})
    result = run_cli("down", env=pulumi.environment)
    assert result.returncode == ExitStatus.DECLINED
    assert "the VM (course-vm): DELETE: everything on it is lost, its home disk too\n" in result.stdout
    assert "  course-vm-network (shared by the VMs): delete\n" in result.stdout
    assert "--yes" in result.stderr
    assert "destroy" in pulumi.verbs(), "the preview of the deletion"
    assert all("--preview-only" in call for call in pulumi.calls() if call[0] == "destroy")
    assert pulumi.outputs("dev") == VM
    assert run_cli("down", "--yes", env=pulumi.environment).returncode == 0
    assert [call for call in pulumi.calls() if call[0] == "destroy" and "--preview-only" not in call]
    assert pulumi.outputs("dev") == {}


@pytest.mark.parametrize(
    "command",
    [
        ["status", "--stack", "typo"],
        ["status", "--json", "--stack", "typo"],
        ["down", "--stack", "typo", "--yes"],
        ["start", "--stack", "typo"],
        ["stop", "--stack", "typo"],
        ["check", "--stack", "typo"],
        ["handout", "--stack", "typo", "--out", "OUT"],
    ],
)
def test_every_command_that_reads_a_missing_stack_names_the_stacks_and_creates_none(
    tmp_path: Path, command: list[str]
) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": VM, "alice": {}}, events=CREATE)
    command = [str(tmp_path / "out") if word == "OUT" else word for word in command]
    result = run_cli(*command, env=pulumi.environment)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: there is no stack typo (the stacks that exist: alice, dev); nothing was created or deleted. "
        "Fix: name one of them with --stack\n"
    )
    assert result.stdout == "", "nothing a JSON reader could take for rows"
    assert pulumi.verbs() == ["stack export", "stack ls"], "the stack is looked for, and nothing else is done"
    assert not (tmp_path / "out").exists()
    assert_fixes_are_valid(command, result.stderr)


# The Pulumi engine's failures: what failed, the engine's own lines, a next step; exit 5, no traceback.


def engine_said(doing: str, message: str, *, closing: str | None = None) -> str:
    """What course-vm quotes of an engine that failed DOING with an error diagnostic MESSAGE (and its CLOSING error)."""
    lines = [line.strip() for line in f"error: {message}".splitlines() if line.strip()]
    return "\n  ".join([f"{doing}:", *lines, *([f"error: {closing}"] if closing else [])])


@pytest.mark.parametrize(
    ("failing", "events", "said", "fix"),
    [
        (
            "up",
            failed_create(API_DISABLED),
            engine_said("update stack dev", API_DISABLED, closing="update failed"),
            "enable the API with `gcloud services enable compute.googleapis.com --project 123456789012`, wait a "
            "minute, then run `course-vm up` again",
        ),
        (
            "up",
            failed_create(QUOTA),
            "update stack dev:\n  error: sdk-v2/provider2.go:572: sdk.helper_schema: Error creating instance: "
            "googleapi: Error 403: Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west1., quotaExceeded: "
            "provider=google-beta@8.10.0\n  error: update failed",
            "ask for more quota at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1, or use "
            "another zone (--zone) or a smaller machineType; then run `course-vm up` again",
        ),
        (
            "preview",
            provider_unconfigured(CREDENTIALS),
            engine_said("preview the changes to stack dev", CREDENTIALS),
            "log in for applications with `gcloud auth application-default login`, then run `course-vm up` again",
        ),
        (
            "preview",
            program_failed(CRASH),
            "preview the changes to stack dev:\n"
            "  error: Program failed with an unhandled exception:\n  ValueError: boom",
            "act on the engine's lines above, then run `course-vm up` again",
        ),
    ],
)
def test_an_engine_failure_is_one_error_with_the_engines_lines_and_a_next_step(
    tmp_path: Path, failing: str, events: list[dict[str, Any]], said: str, fix: str
) -> None:
    # The engine says why in its events (shown on stdout); the CLI, bailing, says nothing on stderr and exits 1.
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, fail={failing: {"events": events}})
    result = run_cli("up", "--yes", "--project", "course-project-1", env=pulumi.environment)
    assert result.returncode == 5
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.endswith(f"course-vm: Pulumi could not {said}\nFix: {fix}\n")


def test_a_locked_stack_says_how_to_clear_the_lock_and_where(tmp_path: Path) -> None:
    # Only the update takes the lock (a DIY backend's preview does not), and the CLI says so on stderr.
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, fail={"up": {"stderr": LOCKED}})
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 5
    said = "\n  ".join(["update stack dev:", *(line.strip() for line in LOCKED.splitlines())])
    assert result.stderr.endswith(
        f"course-vm: Pulumi could not {said}"
        "\nFix: if no other `up` or `down` of stack dev is still running, clear its lock with "
        "`pulumi cancel --yes --stack dev` in a shell set up by `course-vm env` "
        '(`eval "$(course-vm env)"`; PowerShell: `course-vm env | Out-String | Invoke-Expression`), then run '
        "`course-vm up` again\n"
    )  # fmt: skip


def test_the_engines_diagnostics_events_are_its_clearest_lines(tmp_path: Path) -> None:
    message = "sdk-v2/provider2.go:520: Error creating instance: googleapi: Error 403: QUOTA_EXCEEDED\n"
    failure = {"events": failed_create(message)}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, fail={"up": failure})
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 5
    assert (
        "course-vm: Pulumi could not update stack dev:\n  error: "
        + message
        + "  error: update failed\nFix: ask for more quota at https://console.cloud.google.com/iam-admin/quotas, "
        in result.stderr
    )


# The settings' problems: every one at once, each with its raw pulumi Fix line and how to run it on this stack.

PROBLEMS = [
    "machineType 'n2-standard-999': not a machine type. Fix: pulumi config set machineType e2-standard-4",
    "diskSizeGb '5': below the image's 10 GB. Fix: pulumi config set diskSizeGb 20",
]


def test_the_programs_settings_error_comes_through_as_it_is(tmp_path: Path) -> None:
    # The program hands its problems over as data (the file COURSE_VM_PROBLEMS_FILE names), beside the RunError it
    # raises with them as text (the language host's error diagnostic).
    failure = {"events": run_error(str(SettingsError(PROBLEMS))), "problems": PROBLEMS}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, fail={"preview": failure})
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 2
    # The problems as the program listed them, and how to run their raw pulumi Fix lines on this stack.
    assert result.stderr.endswith(f"{SettingsError(PROBLEMS, note=RAW_CLI_NOTE)}\n")
    assert 'after `eval "$(course-vm env)"`' in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr
    assert "up" not in pulumi.verbs()


def test_settings_the_program_would_refuse_are_refused_before_the_preview(tmp_path: Path) -> None:
    config = {"dev": {**STACK_CONFIG, "course-vm:diskSizeGb": "10", "course-vm:verify": "maybe"}}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, config=config)
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 2
    problems = [
        "diskSizeGb: got '10', but the disk must be a whole number of GB from 20 to 65536 (Ubuntu needs 10 GB, "
        "Anaconda and Docker about 8 GB more). Fix: `course-vm up --set diskSizeGb=30`",
        "verify: got 'maybe', but it must be true or false. Fix: `course-vm up --set verify=true`",
    ]
    # Before the prerequisites are looked for and the Pulumi CLI runs: the stack file says what is stored.
    assert result.stderr == f"{SettingsError(problems)}\n"
    assert pulumi.verbs() == []
    assert_fixes_are_valid(["up"], result.stderr)


# Before anything is created: the Compute API enabled, and room in the quotas for the VMs the preview creates.

ROSTER = [f"student{n:02d}" for n in range(1, 31)]
CLASS_CREATE = preview_events({name: {"self": "create", "ip": "create", "vm": "create"} for name in ROSTER})
CLASS_CONFIG = {"dev": {**STACK_CONFIG, "course-vm:students": json.dumps(ROSTER)}}


def test_a_class_the_quotas_cannot_hold_gets_the_table_and_nothing_is_created(
    tmp_path: Path, compute: FakeComputeApi
) -> None:
    compute.project_quotas = [quota("CPUS_ALL_REGIONS", 32, 2)]
    compute.region_quotas = [quota("CPUS", 24, 2), quota("IN_USE_ADDRESSES", 8, 1), quota("STATIC_ADDRESSES", 8),
                             quota("SSD_TOTAL_GB", 2000, 30)]  # fmt: skip
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CLASS_CREATE, config=CLASS_CONFIG)
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 6, result.stderr
    assert result.stderr.endswith(
        "course-vm: the 30 new VMs would exceed 4 quotas of project course-project-1; nothing was created:\n"
        "  QUOTA             SCOPE         NEEDED  IN USE  LIMIT\n"
        "  CPUS_ALL_REGIONS  project       120     2       32\n"
        "  CPUS              europe-west1  120     2       24\n"
        "  IN_USE_ADDRESSES  europe-west1  30      1       8\n"
        "  STATIC_ADDRESSES  europe-west1  30      0       8\n"
        "Fix: ask for more at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1 (or use "
        "fewer or smaller VMs, smaller disks, or a zone in another region), then run `course-vm up` again\n"
    )
    assert "Traceback" not in result.stderr
    assert "up" not in pulumi.verbs()


def test_enough_quota_goes_on_to_the_update(tmp_path: Path, compute: FakeComputeApi) -> None:
    compute.project_quotas = [quota("CPUS_ALL_REGIONS", 128, 2)]
    compute.region_quotas = [quota("CPUS", 128, 2), quota("IN_USE_ADDRESSES", 40, 1), quota("SSD_TOTAL_GB", 1000)]
    pulumi = stand_in_pulumi(
        tmp_path, {"dev": {}}, events=CLASS_CREATE, config=CLASS_CONFIG, next_outputs=class_outputs(*ROSTER)
    )
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert pulumi.verbs().index("preview") < pulumi.verbs().index("up")
    assert compute.requests == [PROJECT_PATH, REGION_PATH, MACHINE_TYPES_PATH + "e2-standard-4"]


def test_a_change_that_creates_no_vm_reads_only_the_project(tmp_path: Path, compute: FakeComputeApi) -> None:
    compute.region_quotas = [quota("CPUS", 0)]
    replace = preview_events({"": {"ip": "same", "vm": "replace"}})
    pulumi = stand_in_pulumi(tmp_path, {"dev": VM}, events=replace, next_outputs=VM)
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert compute.requests == [PROJECT_PATH]


def test_an_api_not_enabled_names_the_command_that_enables_it_and_creates_nothing(
    tmp_path: Path, compute: FakeComputeApi
) -> None:
    compute.api_enabled = False
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = run_cli("up", "--yes", "--project", "course-project-1", env=pulumi.environment)
    assert result.returncode == 6
    assert result.stderr.endswith(
        "course-vm up needs the Compute Engine API, which is not enabled in project course-project-1; "
        "nothing was created. Fix: `gcloud services enable compute.googleapis.com --project course-project-1`, "
        "wait a minute, then run `course-vm up` again\n"
    )
    assert "up" not in pulumi.verbs()


def test_an_unreachable_compute_api_is_one_clear_error(tmp_path: Path) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    env = {**pulumi.environment, "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://127.0.0.1:9/"}
    result = run_cli("up", "--yes", env=env)
    assert result.returncode == 3
    assert "course-vm: the Compute API (http://127.0.0.1:9/compute/v1) did not answer GET " in result.stderr
    assert "Traceback" not in result.stderr
    assert "up" not in pulumi.verbs()


# --allow replaces the stored ranges, --add-allow adds to them; a change is one line before the preview.


def test_up_help_says_that_allow_replaces_and_add_allow_adds() -> None:
    result = run_cli("up", "--help")
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    assert "the ranges given REPLACE the stack's stored allowedSshCidrs" in text
    assert "--add-allow CIDR an IPv4 range to add to the stack's stored allowedSshCidrs, keeping the others" in text


@pytest.mark.parametrize(
    ("flags", "line", "stored"),
    [
        (["--allow", "198.51.100.0/24"], "allowedSshCidrs: 203.0.113.7/32 -> 198.51.100.0/24", ["198.51.100.0/24"]),
        (
            ["--add-allow", "198.51.100.0/24"],
            "allowedSshCidrs: 203.0.113.7/32 -> 203.0.113.7/32, 198.51.100.0/24",
            ["203.0.113.7/32", "198.51.100.0/24"],
        ),
    ],
)
def test_a_changed_range_list_is_said_before_the_preview(
    tmp_path: Path, flags: list[str], line: str, stored: list[str]
) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = run_cli("up", "--yes", *flags, env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{line}\nPulumi's preview of stack dev:\n")
    assert json.loads(pulumi.config("dev")["course-vm:allowedSshCidrs"]) == stored


# A class's table: what each student's VM is, and how to hand it out.


def test_a_class_table_says_to_hand_out_folders_never_the_key_files() -> None:
    bob = VmOutputs.parse(vm_outputs("bob", stack="prod", studentPublicKey="ssh-ed25519 AAAA"))
    table = class_table("prod", {"bob": bob})
    # bob brought his own key: the KEY column is the instructor's, which must never be handed to him.
    assert table.endswith(
        "1 VMs. Hand each student their folder: `course-vm handout --stack prod --out DIR`; "
        "`course-vm check` checks them all again."
    )
    assert "Give each student their key" not in table


def test_an_iap_vms_address_is_called_internal_in_the_class_table() -> None:
    table = class_table("dev", {"alice": VmOutputs.parse(vm_outputs("alice", iap=True))})
    assert table.splitlines()[1].split()[:5] == ["alice", "course-vm-alice", "10.42.0.2", "(internal:", "IAP)"]


# A class `up` in which one student's VM fails: the others' VMs are ready, and their entries are written.

TRIO = ["alice", "bob", "carol"]
NOT_READY = "the VM is not ready:\nCHECK   RESULT  TIME  DETAIL\ndocker  FAILED  1.0s  no docker"


def test_a_class_up_where_one_verification_fails_writes_the_others_and_names_it(
    tmp_path: Path, compute: FakeComputeApi
) -> None:
    # Pulumi fails the update and keeps no stack outputs (a first `up`); its state holds alice's and carol's VMs.
    compute.project_quotas = [quota("CPUS_ALL_REGIONS", 128, 2)]
    compute.region_quotas = [quota("CPUS", 128, 2), quota("IN_USE_ADDRESSES", 40, 1), quota("SSD_TOTAL_GB", 1000)]
    keys = tmp_path / ".ssh"
    finished = class_outputs("alice", "carol", keys=keys)
    failure = {
        "events": update_events({"alice": "passed", "bob": "failed: " + NOT_READY, "carol": "passed"}),
        "deployment": exported_deployment("dev", finished, root={}, unfinished=("bob",)),
    }
    events = preview_events(
        {name: {"self": "create", "ip": "create", "vm": "create", "verify": "create"} for name in TRIO}
    )
    config = {"dev": {**STACK_CONFIG, "course-vm:students": json.dumps(TRIO)}}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=events, config=config, fail={"up": failure})
    result = run_cli("up", "--yes", env=pulumi.environment)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    table = result.stdout[result.stdout.index("STUDENT  ") :].splitlines()
    assert [line.split()[0] for line in table[1:4]] == ["alice", "carol", "bob"]
    assert table[1].split() == [
        "alice",
        "course-vm-alice",
        "34.78.1.10",
        f"{keys}/course-vm-alice",
        "SHA256:fingerprint",
    ]
    assert table[2].split() == [
        "carol",
        "course-vm-carol",
        "34.78.1.11",
        f"{keys}/course-vm-carol",
        "SHA256:fingerprint",
    ]
    assert table[3].split()[1:] == ["course-vm-bob", "-", "-", "FAILED:", "see", "below"]
    assert table[4].startswith("2 of 3 VMs ready (not bob). Hand each student their folder")
    error = result.stderr[result.stderr.index("course-vm: 1 of 3") :]
    assert error.startswith(
        "course-vm: 1 of 3 VMs of stack dev did not finish: bob. The others' ssh entries are written "
        "(the table above).\nPulumi could not update stack dev:\n"
    )
    assert "no docker" in error, "the engine's lines: bob's check report"
    assert error.splitlines()[-1] == (
        "Fix: act on the engine's lines above, then run `course-vm up` again: it retries what did not finish (bob) "
        "and leaves the VMs that finished as they are. To look into one first: "
        "`course-vm render --stack dev --student bob` prints the recipe a VM was given"
    )
    assert_fixes_are_valid(["up"], error)
    hosts = (keys / "course-vm.config").read_text()
    assert "Host course-vm-alice\n" in hosts and "HostName 34.78.1.10\n" in hosts
    assert "Host course-vm-carol\n" in hosts and "HostName 34.78.1.11\n" in hosts
    assert "course-vm-bob" not in hosts, "no entry for a VM without outputs"


def ctrl_c_once(process: subprocess.Popen[str], stream: IO[str] | None, said: str) -> tuple[str, str]:
    """Ctrl-C for PROCESS (a terminal's: its whole group) once STREAM, one of its pipes, has SAID; what it printed
    after that on stdout and stderr (STREAM's lines up to SAID are in neither)."""
    assert stream is not None
    seen = ""
    while said not in seen:
        line = stream.readline()
        assert line, f"`up` ended before it said {said!r}: {seen}{process.communicate(timeout=30)}"
        seen += line
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.communicate(timeout=60)
    finally:
        process.kill()


def test_ctrl_c_during_up_waits_for_pulumi_to_cancel_passing_on_all_it_says(tmp_path: Path) -> None:
    # A terminal's Ctrl-C reaches course-vm and the Pulumi CLI it runs alike. Pulumi cancels cleanly, saying
    # more than a pipe holds; course-vm passes all of it on (an unread pipe would hold Pulumi, and course-vm
    # with it), keeps the verifications that ended before, and then exits 130 saying what may be left.
    ended = update_events({"": "passed"})
    cancelled = {"cancelled": 3000, "events": ended}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, events=CREATE, fail={"up": cancelled})
    process = started_cli("up", "--yes", env=pulumi.environment, own_group=True)
    out, err = ctrl_c_once(process, process.stdout, "Updating (dev)")
    assert process.returncode == ExitStatus.INTERRUPTED, err
    assert "cancelling: waiting for the running operations to finish (2999)\n" in out
    assert err.endswith(
        "course-vm: interrupted: Pulumi may have created, changed or deleted some of stack dev's resources before "
        "it stopped. `course-vm up` finishes the job; `course-vm down` removes what exists\n"
    )
    assert "Traceback" not in err
    recorded = json.loads((tmp_path / "state" / "course-vm" / "verifications" / "dev.json").read_text())
    assert recorded[""]["result"] == "passed", "the verification that ended before the Ctrl-C"


def test_ctrl_c_during_the_preview_says_it_changed_nothing_in_the_cloud(tmp_path: Path) -> None:
    cancelled = {"cancelled": 1}
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, fail={"preview": cancelled})
    process = started_cli("up", "--yes", "--set", "spot=true", env=pulumi.environment, own_group=True)
    _, err = ctrl_c_once(process, process.stderr, "previewing the changes to stack dev")
    assert process.returncode == ExitStatus.INTERRUPTED, err
    assert err.endswith(
        "course-vm: interrupted: a preview changes nothing in the cloud. The stack's settings keep what --set "
        "gave. `course-vm up` previews again\n"
    ), err
    assert "up" not in pulumi.verbs()
