"""`python -m provisioner render`: the user-data for a stack, or one clear error and exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import main
from provisioner.local.vm import free_loopback_port
from tests.conftest import ROOT, validate_cloud_config
from tests.support.fake_compute_api import INSTANCE, FakeComputeApi
from tests.support.sshd import Sshd


def write_stack(directory: Path, name: str = "dev", extra: str = "") -> None:
    (directory / f"Pulumi.{name}.yaml").write_text(
        "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
        f"  course-vm:sshKeyPath: {directory / 'key'}\n"
        "  course-vm:allowedSshCidrs:\n    - 203.0.113.7/32\n" + extra
    )


@pytest.mark.integration
def test_render_prints_valid_user_data_for_the_only_stack(tmp_path: Path) -> None:
    write_stack(tmp_path, extra="  course-vm:username: alice\n")
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "render", "--project-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#cloud-config\n")
    assert '  - name: "alice"\n' in result.stdout
    public = " ".join((tmp_path / "key.pub").read_text().split()[:2])
    assert public in result.stdout
    validate_cloud_config(result.stdout, tmp_path)


def test_render_of_a_class_needs_the_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:students:\n    - alice\n    - bob\n")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert "the stack is a class: pass --student NAME (one of alice, bob)" in capsys.readouterr().err
    assert main(["render", "--project-dir", str(tmp_path), "--student", "carol"]) == 2
    assert "--student carol: not on the stack's roster. Fix: one of alice, bob" in capsys.readouterr().err
    assert main(["render", "--project-dir", str(tmp_path), "--student", "bob"]) == 0
    [user] = yaml.safe_load(capsys.readouterr().out)["users"]
    assert user["name"] == "bob"
    assert user["ssh_authorized_keys"] == [" ".join((tmp_path / "key-bob.pub").read_text().split()[:2])]


def test_render_picks_the_named_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev", extra="  course-vm:username: alice\n")
    write_stack(tmp_path, "prod", extra="  course-vm:username: bob\n")
    assert main(["render", "--project-dir", str(tmp_path), "--stack", "prod"]) == 0
    assert '  - name: "bob"\n' in capsys.readouterr().out


def test_render_with_several_stacks_asks_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev")
    write_stack(tmp_path, "prod")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "course-vm: several stacks (Pulumi.dev.yaml, Pulumi.prod.yaml) and no --stack. Fix: pass --stack NAME\n"
    )


def test_render_without_a_stack_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert "Fix: `pulumi stack init dev`" in capsys.readouterr().err


def test_render_reports_every_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:diskSizeGb: 5\n  course-vm:username: root\n")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("course-vm: course-vm settings: 2 problems, nothing was created:\n")
    assert "  - diskSizeGb: got 5," in err
    assert "  - username: got 'root'," in err
    assert not (tmp_path / "key").exists()


# `python -m provisioner check`: its exit statuses and output are a contract other tools rely on.


def check_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", "check", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def sshd_args(server: Sshd) -> list[str]:
    return [
        "--host",
        "127.0.0.1",
        "--port",
        str(server.port),
        "--user",
        server.user,
        "--identity",
        str(server.client_key),
    ]


@pytest.mark.integration
def test_check_exit_0_with_a_table(ready_sshd: Sshd) -> None:
    result = check_cli(*sshd_args(ready_sshd), "--host-key", str(ready_sshd.host_key), "--timeout", "30")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "RESULT", "TIME", "DETAIL"]
    assert [line.split("  ")[0] for line in lines[1:6]] == [
        "cloud-init",
        "docker hello-world",
        "docker-compose on PATH",
        "conda on PATH",
        "docker enabled at boot",
    ]
    assert lines[-1] == "127.0.0.1: all checks passed"
    assert "course-vm: logged in; waiting for cloud-init to finish" in result.stderr


@pytest.mark.integration
def test_check_exit_1_json_when_a_check_fails(ready_sshd: Sshd, tmp_path: Path) -> None:
    ready_sshd.set("docker", "denied")
    known = tmp_path / "known_hosts"
    known.write_text(ready_sshd.host_key.known_hosts_line("127.0.0.1", ready_sshd.port) + "\n")
    result = check_cli(*sshd_args(ready_sshd), "--known-hosts", str(known), "--json")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"host", "ok", "checks"}
    assert document["host"] == "127.0.0.1" and document["ok"] is False
    assert [c["ok"] for c in document["checks"]] == [True, False, True, True, True]
    assert all(set(c) == {"name", "ok", "seconds", "detail"} for c in document["checks"])


@pytest.mark.integration
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--host-key", "ssh-ed25519 ???"], "malformed host key"),
        (["--known-hosts", "/nonexistent/known_hosts"], "cannot read known_hosts file"),
        ([], "give exactly one host key source"),
        (["--gce-instance", "vm"], "--gce-instance needs --gce-zone and --gce-project"),
    ],
)
def test_check_exit_2_on_bad_input(ready_sshd: Sshd, extra: list[str], message: str) -> None:
    result = check_cli(*sshd_args(ready_sshd), *extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


@pytest.mark.integration
def test_check_exit_2_on_a_key_others_can_read(ready_sshd: Sshd) -> None:
    os.chmod(ready_sshd.client_key, 0o640)
    result = check_cli(*sshd_args(ready_sshd), "--host-key", str(ready_sshd.host_key), "--json")
    assert result.returncode == 2
    assert f"Fix: chmod 400 {ready_sshd.client_key}" in result.stderr
    document = json.loads(result.stdout)
    assert document["ok"] is False and "chmod 400" in document["error"]


@pytest.mark.integration
def test_check_exit_3_when_the_vm_never_answers(ready_sshd: Sshd) -> None:
    args = sshd_args(ready_sshd)
    args[args.index("--port") + 1] = str(free_loopback_port())
    result = check_cli(*args, "--host-key", str(ready_sshd.host_key), "--timeout", "2")
    assert result.returncode == 3
    assert "could not log in" in result.stderr


@pytest.mark.integration
def test_check_exit_4_on_host_key_mismatch(ready_sshd: Sshd, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    result = check_cli(*sshd_args(ready_sshd), "--host-key", (tmp_path / "other.pub").read_text())
    assert result.returncode == 4
    assert "may be intercepted" in result.stderr


@pytest.mark.integration
def test_check_without_host_uses_the_stacks_outputs(ready_sshd: Sshd, tmp_path: Path) -> None:
    # A stand-in for the Pulumi CLI (not installable here) that prints the stack's outputs.
    outputs = {
        "ip": "127.0.0.1",
        "username": ready_sshd.user,
        "identityFile": str(ready_sshd.client_key),
        "hostKeys": [str(ready_sshd.host_key)],
    }
    env = stand_in_pulumi(tmp_path, outputs)
    result = check_cli("--port", str(ready_sshd.port), "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True


def stand_in_pulumi(tmp_path: Path, outputs: Mapping[str, object]) -> dict[str, str]:
    """An environment whose `pulumi` (a stand-in for the CLI, not installable here) prints OUTPUTS,
    but only when it is asked on the backend `up` uses (the local file backend, by default)."""
    state = tmp_path / "state"
    backend = (state / "course-vm" / "pulumi").as_uri()
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(
        "#!/bin/sh\n[ \"$1 $2\" = 'stack output' ] || exit 9\n"
        f"[ \"$PULUMI_BACKEND_URL\" = '{backend}' ] || {{ echo 'no stack on this backend' >&2; exit 1; }}\n"
        f"echo '{json.dumps(outputs)}'\n"
    )
    fake.chmod(0o755)
    environment = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}", "XDG_STATE_HOME": str(state)}
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME"):
        environment.pop(name, None)
    environment["PULUMI_HOME"] = str(tmp_path / "pulumi-home")  # not logged in anywhere
    return environment


@pytest.mark.integration
def test_check_of_a_class_reports_every_student_in_one_table(ready_sshd: Sshd, tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    # Two students whose VMs are the same sshd: one pinned to its real key, one to another key.
    vm = {"ip": "127.0.0.1", "username": ready_sshd.user, "identityFile": str(ready_sshd.client_key)}
    students = {
        "alice": {**vm, "hostKeys": [str(ready_sshd.host_key)]},
        "bob": {**vm, "hostKeys": [(tmp_path / "other.pub").read_text().strip()]},
    }
    env = stand_in_pulumi(tmp_path, {"project": "course-project-1", "students": students})
    result = check_cli("--port", str(ready_sshd.port), "--timeout", "30", env=env)
    assert result.returncode == 4, "the most serious student's status: a host key mismatch"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STUDENT", "HOST", "RESULT", "TIME", "DETAIL"]
    assert lines[1].split()[:3] == ["alice", "127.0.0.1", "ok"] and lines[1].endswith("all checks passed")
    assert lines[2].split()[:3] == ["bob", "-", "FAILED"] and "may be intercepted" in lines[2]
    assert lines[-1] == "1 of 2 VMs ready; see FAILED rows"
    assert "alice: logged in; waiting for cloud-init to finish" in result.stderr

    only = check_cli("--port", str(ready_sshd.port), "--student", "alice", "--json", env=env)
    assert only.returncode == 0, only.stderr
    assert list(json.loads(only.stdout)["students"]) == ["alice"]
    unknown = check_cli("--student", "carol", env=env)
    assert unknown.returncode == 2
    assert "no student carol in the stack's roster. Fix: one of alice, bob" in unknown.stderr


def test_check_without_host_or_pulumi_says_what_to_do(tmp_path: Path) -> None:
    result = check_cli(env={"PATH": "/nonexistent", "HOME": str(tmp_path)})
    assert result.returncode == 2
    assert "the Pulumi CLI is needed to read the stack's outputs" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "username"], "--set 'username': expected KEY=VALUE, e.g. --set username=alice"),
        (["--set", "username=root"], "username: got 'root'"),
        (["--set", "username=root"], "(for a local VM, set values with --set KEY=VALUE)"),
    ],
)
def test_local_up_refuses_bad_settings_before_booting_anything(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["local", "up", "--image", str(tmp_path / "none"), *args]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "state").exists() and not (tmp_path / "cache").exists()


# `python -m provisioner start`, against the fake Compute API and a stand-in pulumi.


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
