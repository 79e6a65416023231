"""The dynamic resource's provider, tested directly: against a real sshd and the fake Compute API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pulumi.dynamic.dynamic import serialize_provider

from provisioner.access.proxy import iap_proxy_command
from provisioner.errors import CourseVmError
from provisioner.gcp.verification import CHECKER_VERSION, VmVerificationProvider
from tests.conftest import ROOT
from tests.support.fake_compute_api import ED25519, INSTANCE, FakeComputeApi
from tests.support.iap_relay import RealGcloudTunnels
from tests.support.sshd import Sshd


def props(sshd: Sshd, **changes: Any) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": sshd.port,
        "user": sshd.user,
        "identity_file": str(sshd.client_key),
        "project": INSTANCE.project,
        "zone": INSTANCE.zone,
        "instance_name": INSTANCE.name,
        "instance_id": "4242",
        "timeout_seconds": 60,
        "checker_version": CHECKER_VERSION,
        "known_hosts_file": str(sshd.client_key) + ".dev.known_hosts",
        **changes,
    }


def publish(api: FakeComputeApi, sshd: Sshd) -> dict[str, str]:
    api.guest_attributes = [{"namespace": "hostkeys", "key": sshd.host_key.type, "value": sshd.host_key.blob}]
    return api.gcloud_environment()


LOAD_AND_CREATE = """
import base64, json, sys, dill
provider = dill.loads(base64.b64decode(sys.stdin.readline()))
assert "provisioner" not in sys.modules, "the provider must load without importing the project"
result = provider.create(json.loads(sys.stdin.readline()))
print(json.dumps({"id": result.id, "outs": result.outs}))
"""


@pytest.mark.integration
def test_provider_survives_pulumi_serialization_and_verifies_the_vm(
    ready_sshd: Sshd, api: FakeComputeApi, tmp_path: Path
) -> None:
    env = publish(api, ready_sshd)
    serialized = serialize_provider(VmVerificationProvider(str(ROOT)))
    # -I: a fresh interpreter that cannot import the project from its directory or PYTHONPATH,
    # like the provider process Pulumi starts.
    result = subprocess.run(
        [sys.executable, "-I", "-c", LOAD_AND_CREATE],
        cwd=tmp_path,
        env=env,
        text=True,
        input=serialized + "\n" + json.dumps(props(ready_sshd)) + "\n",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["id"] == "4242-verified"
    outs = created["outs"]
    assert outs["host_keys"] == [str(ready_sshd.host_key)]
    assert outs["host_key_fingerprint"] == ready_sshd.host_key.fingerprint
    line = f"[127.0.0.1]:{ready_sshd.port} {ready_sshd.host_key}"
    assert outs["known_hosts"] == line
    assert Path(outs["known_hosts_file"]) == Path(str(ready_sshd.client_key) + ".dev.known_hosts")
    assert Path(outs["known_hosts_file"]).read_text() == line + "\n"
    assert json.loads(outs["report"])["ok"] is True
    assert "PRIVATE KEY" not in result.stdout


@pytest.mark.integration
def test_keys_the_guest_agent_replaced_are_the_ones_pinned(
    ready_sshd: Sshd, api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in publish(api, ready_sshd).items():
        monkeypatch.setenv(name, value)
    # cloud-init's keys first, then the guest agent's (the ones sshd serves), as on a GCE first boot.
    api.then_guest_attributes = api.guest_attributes
    api.guest_attributes = [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    outs = VmVerificationProvider(str(ROOT)).create(props(ready_sshd)).outs
    assert outs is not None
    assert outs["host_keys"] == [str(ready_sshd.host_key)]
    assert Path(outs["known_hosts_file"]).read_text() == f"[127.0.0.1]:{ready_sshd.port} {ready_sshd.host_key}\n"


@pytest.mark.integration
def test_a_vm_that_is_not_right_fails_the_update_with_the_diagnosis(
    ready_sshd: Sshd, api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in publish(api, ready_sshd).items():
        monkeypatch.setenv(name, value)
    ready_sshd.set("docker", "denied")
    with pytest.raises(CourseVmError) as raised:
        VmVerificationProvider(str(ROOT)).create(props(ready_sshd))
    message = str(raised.value)
    assert message.startswith("the VM is not ready:\nCHECK")
    assert "docker hello-world      FAILED" in message
    assert "permission denied" in message
    assert not Path(str(ready_sshd.client_key) + ".dev.known_hosts").exists()


def test_a_new_instance_is_checked_again_and_a_timeout_change_is_not() -> None:
    provider = VmVerificationProvider(str(ROOT))
    old = {"host": "1.2.3.4", "instance_id": "1", "timeout_seconds": 60, "checker_version": "1"}
    assert provider.diff("x", old, dict(old)).changes is False
    replaced = provider.diff("x", old, {**old, "instance_id": "2"})
    assert replaced.changes is True and replaced.replaces == ["instance_id"]
    assert provider.diff("x", old, {**old, "checker_version": "2"}).replaces == ["checker_version"]
    retimed = provider.diff("x", old, {**old, "timeout_seconds": 90})
    assert retimed.changes is True and not retimed.replaces
    updated = provider.update("x", old, {**old, "timeout_seconds": 90}).outs
    assert updated is not None and updated["timeout_seconds"] == 90


def test_delete_removes_only_the_known_hosts_file_it_wrote(tmp_path: Path) -> None:
    # The name a stack made before pins were per stack has in its state: `pulumi destroy` removes it.
    known = tmp_path / "course-vm.known_hosts"
    known.write_text("1.2.3.4 ssh-ed25519 AAAA\n")
    (tmp_path / "course-vm").write_text("the key stays")
    VmVerificationProvider(str(ROOT)).delete("x", {"host": "1.2.3.4", "port": 22, "known_hosts_file": str(known)})
    assert not known.exists()
    assert (tmp_path / "course-vm").read_text() == "the key stays"


@pytest.mark.parametrize("planted", ["authorized_keys", "bashrc.known_hosts", "link.known_hosts"])
def test_a_path_from_state_that_is_not_a_pins_file_is_left_alone(
    tmp_path: Path, planted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Whoever can write the stack's state names the file `down` edits: it must be a pins file course-vm
    # wrote, not ~/.ssh/authorized_keys (whose lines start with the "host" ssh-ed25519) or what a link names.
    victim = tmp_path / "authorized_keys"
    victim.write_text("ssh-ed25519 AAAA alice@laptop\n")
    (tmp_path / "bashrc.known_hosts").write_text("ssh-ed25519 AAAA alice@laptop\nexport PATH=~/bin:$PATH\n")
    (tmp_path / "link.known_hosts").symlink_to(victim)
    path = tmp_path / planted
    before = path.read_text()
    provider = VmVerificationProvider(str(ROOT))
    crafted = {"host": "ssh-ed25519", "port": 22, "known_hosts_file": str(path)}
    provider.delete("x", crafted)  # the VM goes all the same; the file is left alone, and said so
    assert "not a known_hosts file course-vm wrote" in capsys.readouterr().err
    with pytest.raises(CourseVmError, match="not a known_hosts file course-vm wrote"):
        provider.update("x", {**crafted, "known_hosts": "", "timeout_seconds": 60},
                        {"known_hosts_file": str(tmp_path / "new.known_hosts"), "timeout_seconds": 60})  # fmt: skip
    assert path.read_text() == before and victim.read_text() == "ssh-ed25519 AAAA alice@laptop\n"


def test_a_known_hosts_file_ssh_itself_added_lines_to_is_still_edited(tmp_path: Path) -> None:
    # UpdateHostKeys with HashKnownHosts (elsewhere in the user's ssh config) adds hashed lines; a
    # comment, a host list or a marker are known_hosts syntax too.
    pins = tmp_path / "course-vm.dev.known_hosts"
    other = [
        "# added by hand",
        "|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-ed25519 AAAA",
        "5.6.7.8,vm.example ssh-ed25519 BBBB a comment",
        "@cert-authority *.example ssh-ed25519 CCCC",
    ]
    pins.write_text("1.2.3.4 ssh-ed25519 AAAA\n" + "\n".join(other) + "\n")
    VmVerificationProvider(str(ROOT)).delete("x", {"host": "1.2.3.4", "port": 22, "known_hosts_file": str(pins)})
    assert pins.read_text() == "\n".join(other) + "\n"


def test_pins_from_state_are_written_only_to_a_pins_file(tmp_path: Path) -> None:
    provider = VmVerificationProvider(str(ROOT))
    olds = {"host": "1.2.3.4", "port": 22, "known_hosts": "1.2.3.4 ssh-ed25519 AAAA", "timeout_seconds": 60}
    with pytest.raises(CourseVmError, match="not a known_hosts file course-vm wrote"):
        provider.update("x", olds, {"known_hosts_file": str(tmp_path / ".bashrc"), "timeout_seconds": 60})
    assert not (tmp_path / ".bashrc").exists()
    with pytest.raises(CourseVmError, match="is not a host key line"):
        provider.update("x", {**olds, "known_hosts": "1.2.3.4 ssh-ed25519 AAAA\nMatch exec id"},
                        {"known_hosts_file": str(tmp_path / "k.known_hosts"), "timeout_seconds": 60})  # fmt: skip
    assert not (tmp_path / "k.known_hosts").exists()


@pytest.mark.integration
def test_two_stacks_with_one_key_each_keep_their_own_pin(
    ready_sshd: Sshd, api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in publish(api, ready_sshd).items():
        monkeypatch.setenv(name, value)
    provider = VmVerificationProvider(str(ROOT))
    stacks = {
        stack: props(ready_sshd, known_hosts_file=f"{ready_sshd.client_key}.{stack}.known_hosts")
        for stack in ("dev", "prod")
    }
    created = {stack: provider.create(p).outs for stack, p in stacks.items()}
    line = f"[127.0.0.1]:{ready_sshd.port} {ready_sshd.host_key}\n"
    provider.delete("dev", created["dev"] or {})
    assert not Path(stacks["dev"]["known_hosts_file"]).exists()
    assert Path(stacks["prod"]["known_hosts_file"]).read_text() == line


def test_a_stack_made_before_moves_its_pins_to_a_file_of_its_own_without_a_new_check(tmp_path: Path) -> None:
    # Such stacks shared KEY.known_hosts: the last one up had written its lines there.
    shared = tmp_path / "course-vm.known_hosts"
    shared.write_text("1.2.3.4 ssh-ed25519 AAAA\n5.6.7.8 ssh-ed25519 BBBB\n")
    pins = tmp_path / "course-vm.dev.known_hosts"
    base: dict[str, Any] = {
        "host": "1.2.3.4",
        "port": 22,
        "instance_id": "1",
        "timeout_seconds": 60,
        "checker_version": "1",
    }
    olds = {**base, "known_hosts": "1.2.3.4 ssh-ed25519 AAAA", "known_hosts_file": str(shared)}
    news = {**base, "known_hosts_file": str(pins)}
    provider = VmVerificationProvider(str(ROOT))
    diff = provider.diff("x", olds, news)
    assert diff.changes is True and not diff.replaces, "a new pin file needs no new VM check"
    outs = provider.update("x", olds, news).outs
    assert outs is not None and outs["known_hosts_file"] == news["known_hosts_file"]
    assert pins.read_text() == "1.2.3.4 ssh-ed25519 AAAA\n"
    assert shared.read_text() == "5.6.7.8 ssh-ed25519 BBBB\n", "the other stack's line stays"
    provider.delete("x", outs)
    assert not pins.exists()
    provider.update("y", {**olds, "host": "5.6.7.8", "known_hosts": "5.6.7.8 ssh-ed25519 BBBB"}, news)
    assert not shared.exists(), "emptied, the shared file goes"


@pytest.mark.integration
def test_an_iap_vm_is_verified_through_the_tunnel_and_pinned_under_its_name(
    ready_sshd: Sshd, api: FakeComputeApi, iap: RealGcloudTunnels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up`'s verification reaches the VM through Google's real gcloud and the IAP relay stand-in."""
    for name, value in publish(api, ready_sshd).items():
        monkeypatch.setenv(name, value)
    iap.relay.backend_port = ready_sshd.port
    tunnel = iap_proxy_command(INSTANCE.project, INSTANCE.zone)
    outs = (
        VmVerificationProvider(str(ROOT))
        .create(props(ready_sshd, host=INSTANCE.name, port=22, proxy_command=tunnel))
        .outs
    )
    assert outs is not None
    # What ssh looks up behind the ProxyCommand: the HostName, the instance's name.
    line = f"{INSTANCE.name} {ready_sshd.host_key}"
    assert outs["known_hosts"] == line
    assert Path(outs["known_hosts_file"]).read_text() == line + "\n"
    assert json.loads(outs["report"])["ok"] is True
    assert iap.gcloud.pids()  # each reaped: the fixture checks
    assert {(c.query["project"], c.query["zone"], c.query["instance"]) for c in iap.relay.connects} == {
        (INSTANCE.project, INSTANCE.zone, INSTANCE.name)
    }


def test_a_stack_made_before_iap_is_not_checked_again() -> None:
    provider = VmVerificationProvider(str(ROOT))
    old = {"host": "1.2.3.4", "instance_id": "1", "timeout_seconds": 60, "checker_version": "1"}
    assert provider.diff("x", old, {**old, "proxy_command": ""}).changes is False
    iap = iap_proxy_command(INSTANCE.project, INSTANCE.zone)
    assert "proxy_command" in provider.diff("x", old, {**old, "proxy_command": iap}).replaces
