"""`python -m provisioner start` against the fake Compute API and a stand-in pulumi (up/down/status: test_stack)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.support.fake_compute_api import INSTANCE, FakeComputeApi
from tests.support.pulumi_cli import stand_in_pulumi


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
    assert "course-vm-bob: instance gone not found in course-project-1/europe-west1-b" in result.stderr
    assert api.instance_status == "RUNNING"
