"""The command line's `up`, `down`, `start`, `stop` and `status` against a stand-in pulumi and the fake Compute API."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
from pulumi.automation import EngineEvent

from provisioner.cli import stack
from provisioner.errors import SettingsError
from tests.support.fixes import assert_fixes_are_valid
from tests.conftest import ROOT
from tests.support.fake_compute_api import (
    BASE,
    INSTANCE,
    MACHINE_TYPES_PATH,
    PROJECT_PATH,
    REGION_PATH,
    ZONE_PATH,
    FakeComputeApi,
    quota,
)
from tests.support.pulumi_cli import (
    STACK_CONFIG,
    error_diagnostic,
    exported_deployment,
    preview_events,
    stand_in_engine,
    stand_in_pulumi,
    update_events,
)


@pytest.fixture(autouse=True)
def compute(api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch) -> FakeComputeApi:
    """Every command here reaches the fake Compute API (`up` reads the project and its quotas), through
    the environment the stand-ins copy."""
    for name, value in api.gcloud_environment().items():
        monkeypatch.setenv(name, value)
    return api


def start_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "provisioner", "start", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)


def test_start_starts_a_stopped_vm_and_says_how_to_log_in(api: FakeComputeApi, tmp_path: Path) -> None:
    outputs = {"project": INSTANCE.project, "zone": INSTANCE.zone, "instanceName": INSTANCE.name, "ip": "34.78.1.2",
               "username": "student", "identityFile": str(tmp_path / "key")}  # fmt: skip
    env = stand_in_pulumi(tmp_path, outputs)
    env.update(api.gcloud_environment())
    result = start_cli(env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "course-vm: running at 34.78.1.2 (same address and host keys): `ssh course-vm`\n"
    assert api.instance_status == "RUNNING"


def test_start_of_a_class_reports_each_vm_it_could_not_start(api: FakeComputeApi, tmp_path: Path) -> None:
    vm = {"zone": INSTANCE.zone, "ip": "34.78.1.2", "username": "x", "identityFile": str(tmp_path / "key")}
    students = {"alice": {**vm, "instanceName": INSTANCE.name}, "bob": {**vm, "instanceName": "gone"}}
    env = stand_in_pulumi(tmp_path, {"project": INSTANCE.project, "students": students})
    env.update(api.gcloud_environment())
    result = start_cli(env=env)
    assert result.returncode == 2
    assert result.stdout.startswith("course-vm-alice: running at 34.78.1.2")
    assert "\ncourse-vm: 1 of 2 VMs could not be started:\n" in "\n" + result.stderr
    assert "\n  course-vm-bob: instance gone not found in course-project-1/europe-west1-b" in result.stderr
    assert api.instance_status == "RUNNING"


def power_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "provisioner", *args]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False, env=env)


def a_class(api: FakeComputeApi, tmp_path: Path, **statuses: str) -> dict[str, str]:
    """A class stack whose students' VMs have STATUSES (student -> GCE status; `gone`: no such VM), and
    the environment that reaches it and the fake Compute API."""
    vm = {"zone": INSTANCE.zone, "username": "x", "identityFile": str(tmp_path / "key")}
    students = {}
    for index, (name, status) in enumerate(statuses.items(), start=10):
        students[name] = {**vm, "instanceName": f"{name}-vm", "ip": f"34.78.1.{index}"}
        if status != "gone":
            api.statuses[f"{name}-vm"] = status
    env = stand_in_pulumi(tmp_path, {"project": INSTANCE.project, "students": students})
    env.update(api.gcloud_environment())
    return env


def test_stop_stops_every_vm_of_a_class_and_says_how_to_start_each_again(api: FakeComputeApi, tmp_path: Path) -> None:
    env = a_class(api, tmp_path, alice="RUNNING", bob="TERMINATED")
    result = power_cli("stop", "--stack", "dev", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "course-vm-alice: stopped (disks and address kept): `course-vm start --stack dev --student alice` "
        "starts it again\n"
        "course-vm-bob: stopped (disks and address kept): `course-vm start --stack dev --student bob` starts it again\n"
    )
    assert api.statuses == {"alice-vm": "TERMINATED", "bob-vm": "TERMINATED"}
    assert f"POST {ZONE_PATH}bob-vm/stop" in api.requests, "an already stopped VM is asked too, and that is fine"


def test_stop_of_one_student_leaves_the_others_running(api: FakeComputeApi, tmp_path: Path) -> None:
    env = a_class(api, tmp_path, alice="RUNNING", bob="RUNNING")
    result = power_cli("stop", "--student", "bob", "--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("course-vm-bob: stopped")
    assert api.statuses == {"alice-vm": "RUNNING", "bob-vm": "TERMINATED"}


def test_stop_of_a_single_vm(api: FakeComputeApi, tmp_path: Path) -> None:
    api.instance_status = "RUNNING"
    outputs = {"project": INSTANCE.project, "zone": INSTANCE.zone, "instanceName": INSTANCE.name, "ip": "34.78.1.2",
               "username": "student", "identityFile": str(tmp_path / "key")}  # fmt: skip
    env = {**stand_in_pulumi(tmp_path, outputs), **api.gcloud_environment()}
    result = power_cli("stop", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "course-vm: stopped (disks and address kept): `course-vm start --stack dev` starts it again\n"
    )
    assert api.instance_status == "TERMINATED"


@pytest.mark.parametrize(("verb", "done"), [("stop", "stopped"), ("start", "started")])
def test_each_student_that_failed_is_one_row_and_the_exit_status_the_highest(
    api: FakeComputeApi, tmp_path: Path, verb: str, done: str
) -> None:
    env = a_class(api, tmp_path, alice="RUNNING" if verb == "stop" else "TERMINATED", bob="gone", carol="RUNNING")
    api.failing["carol-vm"] = 503
    result = power_cli(verb, env=env)
    assert result.returncode == 3, "bob's 2 (not found) and carol's 3 (the API failed): the highest"
    assert result.stdout.startswith("course-vm-alice: ")
    error = result.stderr[result.stderr.index("course-vm: 2 of 3") :]  # after the progress lines
    assert error.splitlines() == [
        f"course-vm: 2 of 3 VMs could not be {done}:",
        "  course-vm-bob: instance bob-vm not found in course-project-1/europe-west1-b (The resource "
        "'projects/course-project-1/zones/europe-west1-b/instances/bob-vm' was not found). "
        "Fix: `course-vm up` creates it again",
        f"  course-vm-carol: the Compute API could not {verb} instance carol-vm (503: The service is "
        "currently unavailable). Fix: try again in a minute",
    ]
    assert api.statuses["alice-vm"] == ("TERMINATED" if verb == "stop" else "RUNNING")
    assert_fixes_are_valid([verb], error)


@pytest.mark.parametrize("verb", ["start", "stop"])
def test_each_rows_fix_names_the_stack_it_was_given(api: FakeComputeApi, tmp_path: Path, verb: str) -> None:
    env = a_class(api, tmp_path, bob="gone", carol="RUNNING")
    api.failing["carol-vm"] = 400
    result = power_cli(verb, "--stack", "fall", env=env)
    error = result.stderr[result.stderr.index("course-vm: 2 of 2") :]
    assert "Fix: `course-vm up --stack fall` creates it again" in error
    assert "Fix: run `course-vm status --stack fall` to see the VM's state, then try again" in error
    assert_fixes_are_valid([verb], error)


# `up`, `down`, `status` through the real Automation API against a stand-in `pulumi` (tests/support).

VM = {"ip": "34.78.1.2", "username": "student", "identityFile": "/home/me/.ssh/course-vm", "instanceName": "vm-1",
      "zone": "europe-west1-b", "sshCommand": "ssh -i /home/me/.ssh/course-vm student@34.78.1.2"}  # fmt: skip
CREATE = preview_events({"": {"self": "create", "ip": "create", "vm": "create"}})


def cli(*args: str, env: dict[str, str], typed: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command line as a user runs it; stdin is no terminal (TYPED, or nothing)."""
    command = [sys.executable, "-m", "provisioner", *args]
    stdin = subprocess.DEVNULL if typed is None else None
    return subprocess.run(
        command, cwd=ROOT, input=typed, stdin=stdin, capture_output=True, text=True, timeout=120, check=False, env=env
    )


def test_up_yes_previews_then_updates_and_says_how_to_log_in(tmp_path: Path) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Pulumi's preview of stack dev:\n  the VM (course-vm): create\n")
    assert "Proceed?" not in result.stdout
    assert result.stdout.endswith(
        "Ready: `ssh course-vm` (VS Code Remote-SSH: host course-vm), or: " + VM["sshCommand"] + "\n"
    )
    assert engine.verbs().index("preview") < engine.verbs().index("up")


def test_without_a_terminal_or_yes_up_shows_the_plan_and_changes_nothing(tmp_path: Path) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = cli("up", env=engine.environment)
    assert result.returncode == 2
    assert result.stdout == "Pulumi's preview of stack dev:\n  the VM (course-vm): create\n"
    assert result.stderr.endswith(
        "course-vm: nothing was changed: this needs a yes, and there is no terminal to ask on. "
        "Fix: run it again with --yes once the preview above is what you want\n"
    )
    assert "up" not in engine.verbs()


def test_a_preview_without_changes_goes_on_unasked_and_runs_no_update(tmp_path: Path) -> None:
    same = preview_events({"": {"ip": "same", "vm": "same"}})
    engine = stand_in_engine(tmp_path, {"dev": VM}, events=same)
    result = cli("up", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert "no changes: nothing will be created, replaced or deleted\n" in result.stdout
    assert "Ready: `ssh course-vm`" in result.stdout
    assert "up" not in engine.verbs()


def test_down_previews_the_deletion_and_without_a_terminal_deletes_nothing(tmp_path: Path) -> None:
    gone = preview_events({"": {"self": "delete", "ip": "delete", "vm": "delete", "home": "delete"}})
    engine = stand_in_engine(tmp_path, {"dev": VM}, events=gone)
    result = cli("down", env=engine.environment)
    assert result.returncode == 2
    assert "the VM (course-vm): DELETE: everything on it is lost, its home disk too\n" in result.stdout
    assert "--yes" in result.stderr
    assert "destroy" in engine.verbs(), "the preview of the deletion"
    assert all("--preview-only" in call for call in engine.calls() if call[0] == "destroy")
    assert cli("down", "--yes", env=engine.environment).returncode == 0
    assert [call for call in engine.calls() if call[0] == "destroy" and "--preview-only" not in call]


@pytest.mark.parametrize(
    "command",
    [["status", "--stack", "typo"], ["status", "--json", "--stack", "typo"], ["down", "--stack", "typo", "--yes"]],
)
def test_status_and_down_of_a_missing_stack_name_the_stacks_and_create_none(tmp_path: Path, command: list[str]) -> None:
    engine = stand_in_engine(tmp_path, {"dev": VM, "alice": {}}, events=CREATE)
    result = cli(*command, env=engine.environment)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: there is no stack typo (the stacks that exist: alice, dev); nothing was created or deleted. "
        "Fix: name one of them with --stack\n"
    )
    assert result.stdout == "", "nothing a JSON reader could take for rows"
    assert "stack init" not in engine.verbs()
    assert "destroy" not in engine.verbs()


# The Pulumi engine's failures: what failed, the engine's own lines, a next step; exit 5, no traceback.

API_DISABLED = (
    "error: 1 error occurred:\n"
    "\t* Error creating instance: googleapi: Error 403: Compute Engine API has not been used in project 123456789012 "
    "before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/compute.googleapis"
    ".com/overview?project=123456789012 then retry.\n"
    "Details:\n"
    '[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]\n'
    ", accessNotConfigured\n"
    "error: update failed\n"
)
QUOTA = (
    "error: 1 error occurred:\n"
    "\t* Error creating instance: googleapi: Error 403: Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west1., "
    "quotaExceeded\n"
    "error: update failed\n"
    "error: update failed\n"
)
CREDENTIALS = (
    "error: pulumi:providers:gcp resource 'default_8_10_0' has a problem: could not find default credentials. "
    "See https://cloud.google.com/docs/authentication/external/set-up-adc for more information\n"
)
LOCKED = (
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete "
    "the lock file with `pulumi cancel`.\n"
    "  file:///home/me/.local/state/course-vm/pulumi/.pulumi/locks/organization/course-vm/dev/5b1c.json: "
    "created by me@laptop (pid 4242) at 2026-11-27T14:00:00Z\n"
)
CRASH = (
    "error: Program failed with an unhandled exception:\n"
    "  Traceback (most recent call last):\n"
    '    File "/work/course-vm/__main__.py", line 14, in <module>\n'
    "      key = ensure_key_pair(seat.ssh_key_path)\n"
    "  ValueError: boom\n"
)


@pytest.mark.parametrize(
    ("failing", "stderr", "said", "fix"),
    [
        (
            "up",
            API_DISABLED,
            "update stack dev:\n  error: 1 error occurred:\n  * Error creating instance: googleapi: Error 403: Compute "
            "Engine API has not been used in project 123456789012 before or it is disabled. Enable it by visiting "
            "https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project=123456789012 then "
            "retry.\n  error: update failed",
            "enable the API with `gcloud services enable compute.googleapis.com --project 123456789012`, wait a "
            "minute, then run `course-vm up` again",
        ),
        (
            "up",
            QUOTA,
            "update stack dev:\n  error: 1 error occurred:\n  * Error creating instance: googleapi: Error 403: Quota "
            "'CPUS' exceeded.  Limit: 8.0 in region europe-west1., quotaExceeded\n  error: update failed",
            "ask for more quota at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1, or use "
            "another zone (--zone) or a smaller machineType; then run `course-vm up` again",
        ),
        (
            "preview",
            CREDENTIALS,
            "preview the changes to stack dev:\n  " + CREDENTIALS.strip(),
            "log in for applications with `gcloud auth application-default login`, then run `course-vm up` again",
        ),
        (
            "preview",
            CRASH,
            "preview the changes to stack dev:\n"
            "  error: Program failed with an unhandled exception:\n  ValueError: boom",
            "act on the engine's lines above, then run `course-vm up` again",
        ),
    ],
)
def test_an_engine_failure_is_one_error_with_the_engines_lines_and_a_next_step(
    tmp_path: Path, failing: str, stderr: str, said: str, fix: str
) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, fail={failing: {"stderr": stderr}})
    result = cli("up", "--yes", "--project", "course-project-1", env=engine.environment)
    assert result.returncode == 5
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.endswith(f"course-vm: Pulumi could not {said}\nFix: {fix}\n")


def test_a_locked_stack_says_how_to_clear_the_lock_and_where(tmp_path: Path) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, fail={"preview": {"stderr": LOCKED}})
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 5
    said = "\n  ".join(line.strip() for line in LOCKED.splitlines())
    assert result.stderr.endswith(
        f"course-vm: Pulumi could not preview the changes to stack dev:\n  {said}"
        "\nFix: if no other `up` or `down` of stack dev is still running, clear its lock with "
        "`pulumi cancel --yes --stack dev` in a shell set up by `course-vm env` "
        '(`eval "$(course-vm env)"`; PowerShell: `course-vm env | Out-String | Invoke-Expression`), then run '
        "`course-vm up` again\n"
    )  # fmt: skip


def test_the_engines_diagnostics_events_are_its_clearest_lines(tmp_path: Path) -> None:
    message = "sdk-v2/provider2.go:520: Error creating instance: googleapi: Error 403: QUOTA_EXCEEDED\n"
    failure = {"stderr": "error: update failed\n", "events": [error_diagnostic(message)]}
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, fail={"up": failure})
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 5
    assert (
        "course-vm: Pulumi could not update stack dev:\n  "
        + message
        + "  error: update failed\nFix: ask for more quota at https://console.cloud.google.com/iam-admin/quotas, "
        in result.stderr
    )


def test_the_programs_settings_error_comes_through_as_it_is(tmp_path: Path) -> None:
    problems = [
        "machineType 'n2-standard-999': not a machine type. Fix: pulumi config set machineType e2-standard-4",
        "diskSizeGb '5': below the image's 10 GB. Fix: pulumi config set diskSizeGb 20",
    ]
    stdout = (
        "Previewing update (dev):\n\nDiagnostics:\n  pulumi:pulumi:Stack (course-vm-dev):\n    error: "
        + str(SettingsError(problems)).replace("\n", "\n    ")
        + "\n"
    )
    failure = {"stdout": stdout, "stderr": "error: preview failed\n"}
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, fail={"preview": failure})
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 2
    # The problems as the program listed them, and how to run their raw pulumi Fix lines on this stack.
    assert result.stderr.endswith(f"course-vm: {SettingsError(problems, note=stack.RAW_CLI_NOTE)}\n")
    assert 'after `eval "$(course-vm env)"`' in result.stderr.splitlines()[-1]
    assert "Traceback" not in result.stderr


def on_a_terminal(*args: str, env: dict[str, str], typed: bytes) -> tuple[int, str]:
    """The command line run with a terminal on stdin, on which TYPED is typed (b"" for end of input)."""
    controller, terminal = pty.openpty()
    command = [sys.executable, "-m", "provisioner", *args]
    with subprocess.Popen(
        command, cwd=ROOT, stdin=terminal, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        os.close(terminal)
        os.write(controller, typed or b"\x04")  # Ctrl-D: the terminal's end of input
        output, _ = process.communicate(timeout=120)
    os.close(controller)
    return process.returncode, output


@pytest.mark.parametrize(("typed", "goes_on"), [(b"y\n", True), (b"n\n", False), (b"\n", False), (b"", False)])
def test_on_a_terminal_only_a_yes_changes_anything(tmp_path: Path, typed: bytes, goes_on: bool) -> None:
    replace = preview_events({"": {"ip": "same", "vm": "replace", "home": "same"}})
    engine = stand_in_engine(tmp_path, {"dev": VM}, events=replace, next_outputs=VM)
    code, output = on_a_terminal("up", env=engine.environment, typed=typed)
    assert "the VM (course-vm): REPLACE: everything on its boot disk is lost; /home is kept" in output
    assert "Proceed? [y/N] " in output
    assert ("up" in engine.verbs()) is goes_on
    if goes_on:
        assert code == 0 and "Ready: `ssh course-vm`" in output
    else:
        assert code == 2 and "not confirmed: nothing was created, changed or deleted" in output


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
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CLASS_CREATE, config=CLASS_CONFIG)
    result = cli("up", "--yes", env=engine.environment)
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
    assert "up" not in engine.verbs()


def test_enough_quota_goes_on_to_the_update(tmp_path: Path, compute: FakeComputeApi) -> None:
    compute.project_quotas = [quota("CPUS_ALL_REGIONS", 128, 2)]
    compute.region_quotas = [quota("CPUS", 128, 2), quota("IN_USE_ADDRESSES", 40, 1), quota("SSD_TOTAL_GB", 1000)]
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CLASS_CREATE, config=CLASS_CONFIG, next_outputs=VM)
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert engine.verbs().index("preview") < engine.verbs().index("up")
    assert compute.requests == [PROJECT_PATH, REGION_PATH, MACHINE_TYPES_PATH + "e2-standard-4"]


def test_a_change_that_creates_no_vm_reads_only_the_project(tmp_path: Path, compute: FakeComputeApi) -> None:
    compute.region_quotas = [quota("CPUS", 0)]
    engine = stand_in_engine(tmp_path, {"dev": VM}, events=preview_events({"": {"ip": "same", "vm": "replace"}}))
    result = cli("up", "--yes", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert compute.requests == [PROJECT_PATH]


def test_an_api_not_enabled_names_the_command_that_enables_it_and_creates_nothing(
    tmp_path: Path, compute: FakeComputeApi
) -> None:
    compute.api_enabled = False
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = cli("up", "--yes", "--project", "course-project-1", env=engine.environment)
    assert result.returncode == 6
    assert result.stderr.endswith(
        "course-vm: course-vm up needs the Compute Engine API, which is not enabled in project course-project-1; "
        "nothing was created. Fix: `gcloud services enable compute.googleapis.com --project course-project-1`, "
        "wait a minute, then run `course-vm up` again\n"
    )
    assert "up" not in engine.verbs()


def test_an_unreachable_compute_api_is_one_clear_error(tmp_path: Path) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    env = {**engine.environment, "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://127.0.0.1:9/"}
    result = cli("up", "--yes", env=env)
    assert result.returncode == 3
    assert "course-vm: the Compute API (http://127.0.0.1:9/compute/v1) did not answer GET " in result.stderr
    assert "Traceback" not in result.stderr
    assert "up" not in engine.verbs()


# --allow replaces the stored ranges, --add-allow adds to them; a change is one line before the preview.


def test_up_help_says_that_allow_replaces_and_add_allow_adds(tmp_path: Path) -> None:
    result = cli("up", "--help", env=dict(os.environ))
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
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=CREATE, next_outputs=VM)
    result = cli("up", "--yes", *flags, env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{line}\nPulumi's preview of stack dev:\n")
    assert json.loads(engine.config("dev")["course-vm:allowedSshCidrs"]) == stored


def test_a_class_table_says_to_hand_out_folders_never_the_key_files() -> None:
    from provisioner.cli.lifecycle import class_table

    vm = {"ip": "34.78.1.2", "identityFile": "/home/me/.ssh/course-vm", "studentPublicKey": "ssh-ed25519 AAAA"}
    table = class_table("prod", {"bob": vm})
    # bob brought his own key: the KEY column is the instructor's, which must never be handed to him.
    assert table.endswith(
        "1 VMs. Hand each student their folder: `course-vm handout --stack prod --out DIR`; "
        "`course-vm check` checks them all again."
    )
    assert "Give each student their key" not in table


# `status`: each VM's state read from the fake Compute API now, its last verification as `up` recorded it.


def a_recorded_class(api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A class of four whose last `up` saw alice's verification pass and bob's fail (carol's stack has
    none for her: verify was off); dave's passed before course-vm recorded it (only his pinned key says so).
    alice runs, bob stopped, carol's VM is gone, and the Compute API fails for dave's."""
    vm = {"zone": INSTANCE.zone, "username": "x", "identityFile": str(tmp_path / "key")}
    names = ("alice", "bob", "carol", "dave")
    students = {name: {**vm, "instanceName": f"{name}-vm", "ip": f"34.78.1.{i}"} for i, name in enumerate(names, 10)}
    students["alice"]["hostKeyFingerprint"] = students["dave"]["hostKeyFingerprint"] = "SHA256:abc"
    api.statuses.update({"alice-vm": "RUNNING", "bob-vm": "TERMINATED", "dave-vm": "RUNNING"})
    api.failing["dave-vm"] = 503
    engine = stand_in_engine(tmp_path, {"dev": {"project": INSTANCE.project, "students": students}})
    monkeypatch.setenv("XDG_STATE_HOME", engine.environment["XDG_STATE_HOME"])
    stack.record_verifications(
        "dev", [EngineEvent.from_json(e) for e in update_events({"alice": "passed", "bob": "failed: not ready"})]
    )
    stack.record_verifications("dev", [EngineEvent.from_json(e) for e in update_events({"carol": "off"})])
    return {**engine.environment, **api.gcloud_environment()}


DAVE_503 = (
    "the Compute API could not read instance dave-vm (503: The service is currently unavailable). "
    "Fix: try again in a minute"
)
CAROL_GONE = (
    "instance carol-vm not found in course-project-1/europe-west1-b (The resource "
    "'projects/course-project-1/zones/europe-west1-b/instances/carol-vm' was not found). "
    "Fix: `course-vm up` creates it again"
)


def test_status_shows_each_vms_state_now_and_its_last_verification(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = a_recorded_class(api, tmp_path, monkeypatch)
    result = cli("status", env=env)
    assert result.returncode == 0, result.stderr
    carol = "unknown (instance carol-vm not found in course-project-1/europe-west1-b)"

    def row(student: str, state: str, ip: str, verified: str) -> str:
        return f"{student:<7}  {state:<{len(carol)}}  {ip:<10}  {verified}"

    assert result.stdout.splitlines() == [
        row("STUDENT", "STATE", "IP", "VERIFIED"),
        row("alice", "RUNNING", "34.78.1.10", "passed (2026-11-27 14:00:00 UTC)"),
        row("bob", "TERMINATED", "34.78.1.11", "FAILED (2026-11-27 14:00:00 UTC)"),
        row("carol", carol, "34.78.1.12", "not verified (verify=false)"),
        row("dave", "unknown (the Compute API could not read instance dave-vm)", "34.78.1.13", "passed"),
        "stack dev: 4 VMs, 1 RUNNING, 1 TERMINATED, 2 unknown",
        f"carol: {CAROL_GONE}",
        f"dave: {DAVE_503}",
        "A FAILED verification runs again at the next `course-vm up --stack dev`.",
    ]
    assert_fixes_are_valid(["status"], result.stdout)
    assert not [request for request in api.requests if request.startswith("POST")], "status changes nothing"


def test_status_json_is_the_same_rows_with_stable_keys(
    api: FakeComputeApi, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = a_recorded_class(api, tmp_path, monkeypatch)
    result = cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    common = {"zone": INSTANCE.zone, "state_error": None, "verified_at": None, "verify_error": None, "iap": False}
    at = "2026-11-27T14:00:00Z"
    assert rows == [
        {**common, "student": "alice", "host": "course-vm-alice", "instance": "alice-vm", "ip": "34.78.1.10",
         "state": "RUNNING", "verified": "passed", "verified_at": at},
        {**common, "student": "bob", "host": "course-vm-bob", "instance": "bob-vm", "ip": "34.78.1.11",
         "state": "TERMINATED", "verified": "failed", "verified_at": at, "verify_error": "not ready"},
        {**common, "student": "carol", "host": "course-vm-carol", "instance": "carol-vm", "ip": "34.78.1.12",
         "state": "unknown", "state_error": CAROL_GONE, "verified": "off"},
        {**common, "student": "dave", "host": "course-vm-dave", "instance": "dave-vm", "ip": "34.78.1.13",
         "state": "unknown", "state_error": DAVE_503, "verified": "passed"},
    ]  # fmt: skip


def test_status_of_a_single_vm_names_it_by_its_alias(api: FakeComputeApi, tmp_path: Path) -> None:
    api.instance_status = "SUSPENDED"
    outputs = {**VM, "project": INSTANCE.project, "instanceName": INSTANCE.name}
    engine = stand_in_engine(tmp_path, {"dev": outputs})
    result = cli("status", env={**engine.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "STUDENT    STATE      IP         VERIFIED",
        "course-vm  SUSPENDED  34.78.1.2  unknown",
        "stack dev: 1 VM, 1 SUSPENDED",
    ]
    assert api.requests == [BASE]


def test_status_without_credentials_says_unknown_in_every_row_and_why(tmp_path: Path) -> None:
    students = {name: {**VM, "instanceName": f"{name}-vm"} for name in ("alice", "bob")}
    engine = stand_in_engine(tmp_path, {"dev": {"project": INSTANCE.project, "students": students}})
    env = {**engine.environment, "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": "http://compute.example.org"}
    result = cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["state"] for row in rows] == ["unknown", "unknown"]
    assert rows[0]["state_error"].startswith(
        "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got 'http://compute.example.org'"
    )
    assert rows[0]["state_error"].endswith(
        "Fix: export CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=https://compute.example.org, or unset it"
    )
    table = cli("status", env=env).stdout.splitlines()
    assert table[1].startswith(
        "alice    unknown (CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got 'http://compute.example.org'"
    )
    assert table[-1] == "alice, bob: " + rows[0]["state_error"], "one reason, said once"


def test_status_of_a_stack_without_vms_is_an_empty_json_list(tmp_path: Path) -> None:
    engine = stand_in_engine(tmp_path, {"dev": {}})
    result = cli("status", "--json", env=engine.environment)
    assert (result.returncode, result.stdout) == (0, "[]\n")
    assert "no course VM" in result.stderr
    assert "stack init" not in engine.verbs()


def test_status_after_a_first_up_that_failed_part_way_says_vms_may_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pulumi keeps a failed update's outputs as they were: after a first `up`, none.
    engine = stand_in_engine(tmp_path, {"dev": {}})
    monkeypatch.setenv("XDG_STATE_HOME", engine.environment["XDG_STATE_HOME"])
    events = update_events({"alice": "passed", "bob": "failed: not ready"})
    stack.record_verifications("dev", [EngineEvent.from_json(e) for e in events])
    result = cli("status", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "stack dev: no VMs in its outputs, for its first `course-vm up` did not finish; VMs may exist "
        "(that up verified: alice passed, bob failed). `course-vm up --stack dev` finishes it; "
        "`course-vm down --stack dev` removes what exists\n"
    )


def test_status_of_a_vm_whose_outputs_name_no_instance_is_unknown_not_a_crash(
    api: FakeComputeApi, tmp_path: Path
) -> None:
    students = {"alice": {"ip": "34.78.1.10", "username": "alice"}}  # as a stack made before instanceName was exported
    engine = stand_in_engine(tmp_path, {"dev": {"project": INSTANCE.project, "students": students}})
    result = cli("status", "--json", env={**engine.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    [row] = json.loads(result.stdout)
    assert (row["state"], row["state_error"]) == (
        "unknown",
        "the stack's outputs name no instance or zone for it. Fix: `course-vm up` exports them",
    )
    assert api.requests == []


# A class `up` in which one student's VM fails: the others' VMs are ready, and every command sees them.

TRIO = ["alice", "bob", "carol"]
TRIO_CONFIG = {"dev": {**STACK_CONFIG, "course-vm:students": json.dumps(TRIO)}}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
NOT_READY = "the VM is not ready:\nCHECK   RESULT  TIME  DETAIL\ndocker  FAILED  1.0s  no docker"


def trio_vm(tmp_path: Path, name: str, index: int) -> dict[str, object]:
    """One student's outputs, as their StudentVm registers them (with verify: pinned host keys)."""
    key = tmp_path / ".ssh" / f"course-vm-{name}"
    return {"ip": f"34.78.1.{index}", "username": name, "identityFile": str(key), "instanceName": f"{name}-vm",
            "zone": INSTANCE.zone, "hostKeys": [HOST_KEY],
            "hostKeyFingerprint": f"SHA256:{name}", "knownHostsFile": f"{key}.dev.known_hosts"}  # fmt: skip


def a_class_up_where_bob_fails(
    tmp_path: Path, compute: FakeComputeApi
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """`up --yes` of alice, bob and carol, where bob's verification fails: Pulumi fails the update,
    keeps no stack outputs (a first `up`), and its state holds alice's and carol's VMs' outputs."""
    compute.project_quotas = [quota("CPUS_ALL_REGIONS", 128, 2)]
    compute.region_quotas = [quota("CPUS", 128, 2), quota("IN_USE_ADDRESSES", 40, 1), quota("SSD_TOTAL_GB", 1000)]
    students = {"alice": trio_vm(tmp_path, "alice", 10), "carol": trio_vm(tmp_path, "carol", 12)}
    failure = {
        "stderr": "error: update failed\n",
        "events": update_events({"alice": "passed", "bob": "failed: " + NOT_READY, "carol": "passed"}),
        "deployment": exported_deployment("dev", {"students": students}, root={}, unfinished=("bob",)),
    }
    events = preview_events(
        {name: {"self": "create", "ip": "create", "vm": "create", "verify": "create"} for name in TRIO}
    )
    engine = stand_in_engine(tmp_path, {"dev": {}}, events=events, config=TRIO_CONFIG, fail={"up": failure})
    return cli("up", "--yes", env=engine.environment), engine.environment


def test_a_class_up_where_one_verification_fails_writes_the_others_and_names_it(
    tmp_path: Path, compute: FakeComputeApi
) -> None:
    result, _env = a_class_up_where_bob_fails(tmp_path, compute)
    assert result.returncode == 5, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    table = result.stdout[result.stdout.index("STUDENT  ") :].splitlines()
    assert [line.split()[0] for line in table[1:4]] == ["alice", "carol", "bob"]
    assert table[1].endswith("SHA256:alice") and table[2].endswith("SHA256:carol")
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
    hosts = (tmp_path / ".ssh" / "course-vm.config").read_text()
    assert "Host course-vm-alice\n" in hosts and "HostName 34.78.1.10\n" in hosts
    assert "Host course-vm-carol\n" in hosts and "HostName 34.78.1.12\n" in hosts
    assert "course-vm-bob" not in hosts, "no entry for a VM without outputs"


def test_after_a_class_up_where_one_failed_status_sees_the_others(
    api: FakeComputeApi, tmp_path: Path, compute: FakeComputeApi
) -> None:
    _result, env = a_class_up_where_bob_fails(tmp_path, compute)
    api.statuses.update({"alice-vm": "RUNNING", "carol-vm": "RUNNING"})
    result = cli("status", "--json", env={**env, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [(row["student"], row["state"], row["ip"], row["verified"]) for row in rows] == [
        ("alice", "RUNNING", "34.78.1.10", "passed"),
        ("carol", "RUNNING", "34.78.1.12", "passed"),
    ]


def test_status_of_a_stack_whose_state_cannot_be_read_shows_its_outputs(api: FakeComputeApi, tmp_path: Path) -> None:
    students = {"alice": {**VM, "instanceName": "alice-vm"}}
    engine = stand_in_engine(
        tmp_path, {"dev": {"project": INSTANCE.project, "students": students}},
        fail={"stack export": {"stderr": "error: unknown command \"export\" for \"pulumi stack\"\n"}},
    )  # fmt: skip
    api.statuses["alice-vm"] = "RUNNING"
    result = cli("status", "--json", env={**engine.environment, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert [(row["student"], row["state"]) for row in json.loads(result.stdout)] == [("alice", "RUNNING")]
    assert "stack export" in engine.verbs()


IAP = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"


def test_start_and_stop_of_an_iap_vm_name_no_address_it_does_not_have(api: FakeComputeApi, tmp_path: Path) -> None:
    # Under sshAccess iap the VM has no external address: its `ip` is the internal one, which nobody can reach.
    outputs = {"project": INSTANCE.project, "zone": INSTANCE.zone, "instanceName": INSTANCE.name, "ip": "10.42.0.2",
               "proxyCommand": IAP, "username": "student", "identityFile": str(tmp_path / "key")}  # fmt: skip
    env = {**stand_in_pulumi(tmp_path, outputs), **api.gcloud_environment()}
    started = power_cli("start", env=env)
    assert started.returncode == 0, started.stderr
    assert started.stdout == "course-vm: running, reached through IAP (same host keys): `ssh course-vm`\n"
    stopped = power_cli("stop", env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout == "course-vm: stopped (disks kept): `course-vm start --stack dev` starts it again\n"
    assert api.instance_status == "TERMINATED"


def test_an_iap_vms_address_is_called_internal_in_the_tables() -> None:
    from provisioner.cli.lifecycle import VmStatus, class_table, status_table

    iap = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project p-1 --zone europe-west1-b"
    table = class_table("dev", {"alice": {"ip": "10.42.0.2", "identityFile": "/k", "proxyCommand": iap}})
    assert table.splitlines()[1].split()[:4] == ["alice", "course-vm-alice", "10.42.0.2", "(internal:"]
    row = VmStatus("alice", "course-vm-alice", "vm", "z", "10.42.0.2", "RUNNING", None, "passed", None, None, iap=True)
    assert "10.42.0.2 (internal: IAP)" in status_table("dev", [row]).splitlines()[1]
    assert row.as_json()["iap"] is True
