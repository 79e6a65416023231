"""`python -m provisioner check`: its exit statuses and output are a contract other tools rely on."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from provisioner.local.vm import free_loopback_port
from tests.support.cli import run_cli
from tests.support.fake_compute_api import ED25519, INSTANCE, FakeComputeApi
from tests.support.iap_relay import RealGcloudTunnels
from tests.support.outputs import PROJECT, ZONE, class_outputs, one_vm, vm_outputs
from tests.support.pulumi_state import exported_deployment
from tests.support.sshd import Sshd, other_host_key
from tests.support.stand_in_pulumi import StandInPulumi, option, stand_in_pulumi


def check_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli("check", *args, env=env)


def at_the_sshd(server: Sshd, host_key: str | None = None) -> dict[str, Any]:
    """What the output builder (vm_outputs, one_vm) takes for a VM that is SERVER: its address, its user
    and key, pinned to its host key (or HOST_KEY)."""
    return {
        "ip": "127.0.0.1",
        "host_keys": (host_key or str(server.host_key),),
        "username": server.user,
        "identityFile": str(server.client_key),
    }


def reads_of(engine: StandInPulumi, stack: str) -> list[list[str]]:
    """The Pulumi CLI processes `check` started, having checked that each was about STACK."""
    calls = engine.calls()
    assert all(option(call, "--stack") == stack for call in calls), calls
    return calls


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
    result = check_cli(*sshd_args(ready_sshd), "--host-key", other_host_key(tmp_path))
    assert result.returncode == 4
    assert "may be intercepted" in result.stderr
    # At once: a wrong host key is no reason to try again until the timeout. One connection got as far as
    # the key exchange (the fixture's probe of the port closes before it).
    deadline = time.monotonic() + 5
    while "[preauth]" not in ready_sshd.log and time.monotonic() < deadline:
        time.sleep(0.05)  # sshd logs the closed connection a moment after the client is gone
    assert ready_sshd.log.count("[preauth]") == 1, ready_sshd.log


@pytest.mark.integration
def test_check_pins_the_keys_a_gce_vm_publishes_after_its_first_ones(ready_sshd: Sshd, api: FakeComputeApi) -> None:
    # A GCE first boot: the keys read first are cloud-init's; the guest agent's replace them.
    api.guest_attributes = [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    api.then_guest_attributes = [
        {"namespace": "hostkeys", "key": ready_sshd.host_key.type, "value": ready_sshd.host_key.blob}
    ]
    gce = ["--gce-instance", INSTANCE.name, "--gce-zone", INSTANCE.zone, "--gce-project", INSTANCE.project]
    result = check_cli(*sshd_args(ready_sshd), *gce, "--timeout", "60", env={**os.environ, **api.gcloud_environment()})
    assert result.returncode == 0, result.stderr
    assert f"now publishes other host keys; pinning those ({ready_sshd.host_key.fingerprint})" in result.stderr


@pytest.mark.integration
def test_check_without_host_uses_the_stacks_outputs(ready_sshd: Sshd, tmp_path: Path) -> None:
    # Without --stack: stack dev, as for every command, whichever stack the Pulumi CLI has selected.
    stacks = {"dev": one_vm(**at_the_sshd(ready_sshd)), "fall": one_vm(stack="fall")}
    engine = stand_in_pulumi(tmp_path, stacks, selected="fall")
    result = check_cli("--port", str(ready_sshd.port), "--json", env=engine.environment)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["ok"] is True
    assert len(reads_of(engine, "dev")) <= 2, "issue 18's measure: `check` starts the Pulumi CLI at most twice"


def test_check_without_a_stack_named_reads_dev_not_the_selected_one(tmp_path: Path) -> None:
    engine = stand_in_pulumi(tmp_path, {"fall": one_vm(stack="fall")}, selected="fall")
    result = check_cli(env=engine.environment)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: there is no stack dev (the stacks that exist: fall); nothing was created or deleted. "
        "Fix: name one of them with --stack\n"
    )


def test_check_of_a_stack_that_does_not_exist_names_those_that_do(tmp_path: Path) -> None:
    engine = stand_in_pulumi(tmp_path, {"dev": one_vm()})
    result = check_cli("--stack", "prod", env=engine.environment)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: there is no stack prod (the stacks that exist: dev); nothing was created or deleted. "
        "Fix: name one of them with --stack\n"
    )
    assert result.stdout == ""


@pytest.mark.integration
def test_check_of_a_class_reports_every_student_in_one_table(ready_sshd: Sshd, tmp_path: Path) -> None:
    # Two students whose VMs are the same sshd: one pinned to its real key, one to another key.
    students = {
        "alice": vm_outputs("alice", **at_the_sshd(ready_sshd)),
        "bob": vm_outputs("bob", **at_the_sshd(ready_sshd, other_host_key(tmp_path).strip())),
    }
    engine = stand_in_pulumi(tmp_path, {"dev": class_outputs(vms=students)}, selected="dev")
    env = engine.environment
    result = check_cli("--port", str(ready_sshd.port), "--timeout", "30", env=env)
    assert result.returncode == 4, "the most serious student's status: a host key mismatch"
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["STUDENT", "HOST", "RESULT", "TIME", "DETAIL"]
    assert lines[1].split()[:3] == ["alice", "127.0.0.1", "ok"] and lines[1].endswith("all checks passed")
    assert lines[2].split()[:3] == ["bob", "-", "FAILED"] and "may be intercepted" in lines[2]
    assert lines[-1] == "1 of 2 VMs ready; see FAILED rows"
    assert "alice: logged in; waiting for cloud-init to finish" in result.stderr
    assert len(reads_of(engine, "dev")) <= 2, "issue 18's measure: `check` of a class runs the Pulumi CLI at most twice"

    only = check_cli("--port", str(ready_sshd.port), "--student", "alice", "--json", env=env)
    assert only.returncode == 0, only.stderr
    assert list(json.loads(only.stdout)["students"]) == ["alice"]
    unknown = check_cli("--student", "carol", env=env)
    assert unknown.returncode == 2
    assert "no student carol among the stack's VMs. Fix: one of alice, bob (a student just added" in unknown.stderr


@pytest.mark.integration
def test_after_an_up_that_failed_for_one_student_check_checks_the_others(ready_sshd: Sshd, tmp_path: Path) -> None:
    # A first `up` whose update failed at bob's verification: Pulumi kept no stack outputs, and its
    # state holds alice's VM (here the sshd) as her StudentVm registered it.
    alice = class_outputs(vms={"alice": vm_outputs("alice", **at_the_sshd(ready_sshd))})
    state = exported_deployment("dev", alice, root={}, unfinished=("bob",))
    env = stand_in_pulumi(tmp_path, {"dev": {}}, deployments={"dev": state}, selected="dev").environment
    result = check_cli("--stack", "dev", "--port", str(ready_sshd.port), "--timeout", "30", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert list(json.loads(result.stdout)["students"]) == ["alice"]


def test_check_without_host_or_pulumi_says_what_to_do(tmp_path: Path) -> None:
    result = check_cli(env={"PATH": "/nonexistent", "HOME": str(tmp_path)})
    assert result.returncode == 6, "a missing Pulumi CLI is a missing prerequisite, as for every other command"
    assert "with no --host, check reads the VM's address from the stack's outputs, which needs the Pulumi CLI" in (
        result.stderr
    )


@pytest.mark.integration
def test_check_of_a_vm_whose_setup_still_runs_says_which_step_and_how_to_wait(ready_sshd: Sshd) -> None:
    (ready_sshd.state / "result.json").unlink()
    ready_sshd.set("cloud-init.json", '{"status": "running"}')
    ready_sshd.set("output.log", "[course-vm] BEGIN account\n[course-vm] END account 1s\n[course-vm] BEGIN anaconda\n")
    result = check_cli(*sshd_args(ready_sshd), "--host-key", str(ready_sshd.host_key), "--timeout", "4")
    assert result.returncode == 1, result.stderr
    assert "course-vm: setup: running anaconda (begun before this check); done: account 1s\n" in result.stderr
    assert result.stderr.endswith(
        "course-vm: the VM's setup is still running: run the same check with --timeout 1800 to wait for it\n"
    )


def test_check_waits_for_a_finished_vm_by_default_and_for_a_new_one_when_told() -> None:
    result = check_cli("--help")
    assert "(default 180: a VM whose setup is done; a new VM's setup takes up to 1800)" in " ".join(
        result.stdout.split()
    )


# sshAccess iap: the stack's VMs are reached by instance name through the IAP tunnel: Google's real gcloud, to the
# IAP relay stand-in (the `iap` fixture, which also checks every tunnel was reaped).


def iap_vm(server: Sshd, student: str = "") -> dict[str, Any]:
    """STUDENT's VM ("" for a stack's one VM) under iap, which is SERVER: its `ip` output is the internal
    address, which check must not try."""
    return vm_outputs(student, iap=True, **at_the_sshd(server))


def iap_stack(tmp_path: Path, outputs: dict[str, Any], iap: RealGcloudTunnels, server: Sshd) -> dict[str, str]:
    """The environment of the selected stack `dev` with OUTPUTS, whose VMs are SERVER under iap: Google's real
    gcloud first on PATH, its tunnels reaching SERVER through the IAP relay stand-in."""
    env = stand_in_pulumi(tmp_path, {"dev": outputs}, selected="dev").environment
    iap.relay.backend_port = server.port
    env.update(iap.environment(env["PATH"]))
    return env


@pytest.mark.integration
def test_check_of_an_iap_vm_goes_through_the_tunnel(ready_sshd: Sshd, iap: RealGcloudTunnels, tmp_path: Path) -> None:
    vm = iap_vm(ready_sshd)
    env = iap_stack(tmp_path, {"project": PROJECT, **vm}, iap, ready_sshd)
    result = check_cli("--json", env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["checks"], report
    assert [(c.query["instance"], c.query["zone"], c.query["project"]) for c in iap.relay.connects] == [
        (vm["instanceName"], ZONE, PROJECT)
    ]


@pytest.mark.integration
def test_check_of_an_iap_class_goes_through_each_tunnel(
    ready_sshd: Sshd, iap: RealGcloudTunnels, tmp_path: Path
) -> None:
    alice = iap_vm(ready_sshd, "alice")
    env = iap_stack(tmp_path, class_outputs(vms={"alice": alice}), iap, ready_sshd)
    result = check_cli("--timeout", "30", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1].split()[:3] == ["alice", alice["instanceName"], "ok"]
    assert {c.query["instance"] for c in iap.relay.connects} == {alice["instanceName"]}


@pytest.mark.integration
def test_check_through_a_tunnel_refused_for_good_is_one_line_at_once(
    ready_sshd: Sshd, iap: RealGcloudTunnels, tmp_path: Path
) -> None:
    vm = iap_vm(ready_sshd)
    env = iap_stack(tmp_path, {"project": PROJECT, **vm}, iap, ready_sshd)
    iap.relay.mode = "denied"
    result = check_cli("--timeout", "60", env=env)
    assert result.returncode == 3, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert f"the IAP tunnel to {vm['instanceName']} was refused: " in last, result.stderr
    assert "Error while connecting [4033: 'not authorized']" in last and "Fix: `gcloud auth login`" in last
    assert "Traceback" not in result.stderr
    assert len(iap.gcloud.pids()) == 1


@pytest.mark.integration
def test_check_through_a_broken_tunnel_is_exit_3_with_one_line(
    ready_sshd: Sshd, iap: RealGcloudTunnels, tmp_path: Path
) -> None:
    vm = iap_vm(ready_sshd)
    env = iap_stack(tmp_path, {"project": PROJECT, **vm}, iap, ready_sshd)
    iap.relay.mode = "backend"
    result = check_cli("--timeout", "3", env=env)
    assert result.returncode == 3, result.stderr
    # gcloud's words come as the check waits, and end its last line: the last attempt, cut short by the
    # deadline before gcloud (0.5 s to start) has said anything, does not replace them.
    said = "ended the connection: ERROR: [0] Error during local connection to [stdin]: Error while connecting [4003: "
    waiting = [line for line in result.stderr.splitlines() if line.startswith("course-vm: waiting for ")]
    assert said in waiting[0], result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("course-vm: could not log in to ") and "Fix: " in last, result.stderr
    assert f"{said}'failed to connect to backend']" in last, result.stderr
    assert "Traceback" not in result.stderr


def test_check_of_a_class_whose_first_up_finished_for_no_student_says_there_is_nothing_yet(tmp_path: Path) -> None:
    # The StudentVms are in the state, without outputs: no VM finished, so there is nothing to check.
    state = exported_deployment("dev", {"project": PROJECT}, root={}, unfinished=("alice", "bob"))
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, deployments={"dev": state})
    result = run_cli("check", "--stack", "dev", env=pulumi.environment)
    assert result.returncode == 2, result.stdout
    assert result.stderr == (
        "course-vm: the stack has no ip, username, identityFile output. Fix: `course-vm up --stack dev` first\n"
    )
