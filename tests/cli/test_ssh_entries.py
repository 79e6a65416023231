"""A stack's `Host` entries in ~/.ssh: each built from a VM's checked fields, never from the `sshConfig` text."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from provisioner.access.ssh_config import add_host, hosts_file
from provisioner.cli.ssh_entries import aliases, host_blocks, remove_entries, write_entries
from provisioner.stack import VmOutputs
from tests.support.outputs import HOST_KEY, IAP, class_outputs, vm_outputs


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def vms(outputs: dict[str, Any]) -> dict[str, VmOutputs]:
    return {name: VmOutputs.parse(vm) for name, vm in outputs["students"].items()}


def vm(student: str = "", *, iap: bool = False, host_keys: Any = (HOST_KEY,), **changes: Any) -> VmOutputs:
    """STUDENT's VM as the program exports it (under IAP, with HOST_KEYS pinned), CHANGES on top as they are."""
    return VmOutputs.parse({**vm_outputs(student, iap=iap, host_keys=host_keys), **changes})


def test_aliases_are_the_host_names_of_the_students_vms() -> None:
    assert aliases("dev", ["alice", ""]) == {"course-vm-alice", "course-vm"}
    assert aliases("fall", ["alice"]) == {"course-vm-fall-alice"}


def test_each_block_is_the_one_the_program_exports() -> None:
    blocks, problems = host_blocks("dev", {"": vm(), "alice": vm("alice")})
    assert problems == []
    assert blocks == {"course-vm": vm_outputs()["sshConfig"], "course-vm-alice": vm_outputs("alice")["sshConfig"]}


def test_a_firewall_vm_with_an_empty_proxy_command_keeps_its_ip() -> None:
    blocks, problems = host_blocks("dev", {"": vm(proxyCommand="")})
    assert problems == []
    assert "    HostName 34.78.1.2\n" in blocks["course-vm"] and "ProxyCommand" not in blocks["course-vm"]


def test_an_iap_vm_is_reached_by_its_instance_name_through_the_tunnel() -> None:
    blocks, _ = host_blocks("dev", {"": vm(iap=True)})
    assert blocks["course-vm"].startswith(f"Host course-vm\n    HostName course-vm-vm-1a2b3c\n    ProxyCommand {IAP}\n")


def test_a_vm_without_pins_gets_no_strict_checking() -> None:
    blocks, _ = host_blocks("dev", {"": vm(host_keys=None)})
    assert "UserKnownHostsFile" not in blocks["course-vm"] and "StrictHostKeyChecking" not in blocks["course-vm"]


INJECTED = 'Match exec "touch /tmp/course-vm-pwned"\n    ProxyCommand sh -c "id"\n'


def test_the_ssh_config_output_is_never_written() -> None:
    tampered = vm(sshConfig=vm_outputs()["sshConfig"] + INJECTED)
    blocks, problems = host_blocks("dev", {"": tampered})
    assert problems == []
    assert blocks["course-vm"] == vm_outputs()["sshConfig"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ip": "34.78.1.2\n" + INJECTED}, r"host '34\.78\.1\.2\\nMatch exec .*' is not an IP address"),
        ({"ip": "evil.example.org"}, r"host 'evil\.example\.org' is not an IP address"),
        ({"username": "student\nHost *"}, r"user 'student\\nHost \*' is not a Linux login"),
        ({"identityFile": '/home/me/key"\nMatch exec "id'}, r"identity file .* holds a control character"),
        ({"knownHostsFile": "/home/me/%d/known_hosts"}, r"known_hosts file '/home/me/%d/known_hosts' holds"),
        ({"iap": True, "proxyCommand": 'sh -c "id"'}, "proxy command 'sh -c \"id\"' is not course-vm's IAP tunnel"),
        ({"iap": True, "proxyCommand": IAP + "\nMatch exec id"}, r"proxy command .* is not course-vm's IAP tunnel"),
        ({"iap": True, "instanceName": "vm\nHost *"}, r"host 'vm\\nHost \*' is not a GCE instance name"),
    ],
)
def test_a_tampered_field_writes_nothing_of_its_vm(changes: dict[str, Any], message: str) -> None:
    blocks, problems = host_blocks("dev", {"": vm(**changes)})
    assert blocks == {}
    [problem] = problems
    assert re.search(r"^course-vm: cannot write an ssh Host block: " + message, str(problem)), problem
    assert "\n" not in str(problem) and "Fix: " in str(problem)


def test_write_entries_writes_each_block_and_removes_the_stale_ones() -> None:
    add_host("course-vm-dave", "Host course-vm-dave\n    HostName 34.78.1.99\n")
    add_host("course-vm-other", "Host course-vm-other\n    HostName 34.78.1.98\n")
    assert write_entries("dev", vms(class_outputs("alice", "bob")), {"course-vm-alice", "course-vm-dave"}) == []
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n    HostName 34.78.1.10\n" in ours and "Host course-vm-bob\n" in ours
    assert "course-vm-dave" not in ours
    assert "Host course-vm-other\n" in ours, "not named stale: not this call's to remove"


def test_a_refused_vms_old_entry_goes_too_and_the_others_are_written() -> None:
    write_entries("dev", vms(class_outputs("alice", "bob")))
    outputs = class_outputs("alice", "bob")
    outputs["students"]["bob"]["ip"] = "34.78.1.11\nHost *"
    [problem] = write_entries("dev", vms(outputs))
    assert str(problem).startswith("course-vm-bob: cannot write an ssh Host block: host '34")
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours, "the others' blocks are kept"
    assert "course-vm-bob" not in ours and "Host *" not in ours, "it may name an old address"


def test_remove_entries_removes_those_that_exist() -> None:
    write_entries("dev", vms(class_outputs("alice", "bob")))
    remove_entries({"course-vm-alice", "course-vm-nobody"})
    assert "course-vm-alice" not in hosts_file().read_text()
    remove_entries({"course-vm-bob"})
    assert not hosts_file().exists(), "with no entry left the file goes"


def test_an_entry_forwards_the_ports_and_the_agent_its_vm_was_made_with() -> None:
    made = VmOutputs.parse(vm_outputs(forwards=["3000"], forward_agent=True))
    blocks, problems = host_blocks("dev", {"": made})
    assert problems == []
    assert blocks["course-vm"] == made.ssh_config, "what the program exports, built from checked fields"
    assert "    ForwardAgent yes\n    LocalForward localhost:3000 localhost:3000\n" in blocks["course-vm"]


def test_ports_someone_wrote_into_the_state_write_nothing_of_that_vm() -> None:
    blocks, problems = host_blocks("dev", {"": vm(forwardPorts=["8888\nMatch exec id"])})
    assert blocks == {}
    [problem] = problems
    assert "forwarded port '8888\\nMatch exec id' is not PORT or LOCAL:REMOTE" in str(problem)
