"""`up`, `down` and `status` up to the Pulumi CLI boundary (the CLI cannot be installed here).

FakeStack stands in for pulumi.automation.Stack: it records the config set and answers `up` with
the outputs a real update of this program exports. The ssh config files are real files.
"""

from __future__ import annotations

import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pulumi.automation import ConfigValue, OutputValue

from provisioner.access.ssh_config import hosts_file, ssh_config_block
from provisioner.cli import stack
from provisioner.cli.main import main
from provisioner.errors import CourseVmError
from tests.conftest import require_tool

OUTPUTS: dict[str, Any] = {
    "ip": "34.78.1.2", "username": "student", "identityFile": "/home/me/.ssh/course-vm",
    "sshCommand": "ssh -i /home/me/.ssh/course-vm student@34.78.1.2", "instanceName": "course-vm-vm-1",
    "zone": "europe-west1-b", "hostKeys": ["ssh-ed25519 AAAA"],
    "knownHostsFile": "/home/me/.ssh/course-vm.dev.known_hosts",
    # As the program exports it for stack dev (tests/gcp/test_course_vm.py checks that).
    "sshConfig": ssh_config_block(
        "course-vm", "34.78.1.2", "student", "/home/me/.ssh/course-vm", "/home/me/.ssh/course-vm.dev.known_hosts"
    ),
}  # fmt: skip


def outputs_of_stack(name: str) -> dict[str, Any]:
    """What the program exports for one student's VM in stack NAME: its Host block names the stack."""
    block = str(OUTPUTS["sshConfig"]).replace("Host course-vm\n", f"Host course-vm-{name}\n")
    return {**OUTPUTS, "sshConfig": block}


def class_outputs(*students: str) -> dict[str, Any]:
    """What a class stack exports: one entry per student."""
    return {
        "project": "course-project-1",
        "students": {
            name: {
                **OUTPUTS,
                "username": name,
                "identityFile": f"/home/me/.ssh/course-vm-{name}",
                "ip": f"34.78.1.{index}",
                "knownHostsFile": f"/home/me/.ssh/course-vm-{name}.dev.known_hosts",
                "sshConfig": ssh_config_block(
                    f"course-vm-{name}",
                    f"34.78.1.{index}",
                    name,
                    f"/home/me/.ssh/course-vm-{name}",
                    f"/home/me/.ssh/course-vm-{name}.dev.known_hosts",
                ),
            }
            for index, name in enumerate(students, start=10)
        },
    }


@dataclass
class FakeStack:
    config: dict[str, tuple[str, bool]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    exported: dict[str, Any] = field(default_factory=dict)
    next_outputs: dict[str, Any] = field(default_factory=lambda: dict(OUTPUTS))
    """What the next `up` exports."""

    def set_config(self, key: str, value: ConfigValue, *, path: bool = False) -> None:
        self.config[key] = (value.value, path)

    def remove_config(self, key: str, *, path: bool = False) -> None:
        self.calls.append(f"remove {key}")
        self.config = {k: v for k, v in self.config.items() if not k.startswith(key)}

    def up(self, *, on_output: Callable[[str], Any] | None = None, continue_on_error: bool | None = None) -> Any:
        self.calls.append("up" + (" --continue-on-error" if continue_on_error else ""))
        assert on_output is not None
        on_output("Updating (dev)")  # Pulumi's live progress goes through on_output
        self.exported = dict(self.next_outputs)
        return type("UpResult", (), {"outputs": {k: OutputValue(v, False) for k, v in self.exported.items()}})()

    def destroy(self, *, on_output: Callable[[str], Any] | None = None) -> Any:
        self.calls.append("destroy")
        self.exported = {}

    def outputs(self) -> Mapping[str, Any]:
        return {k: OutputValue(v, False) for k, v in self.exported.items()}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_up_sets_the_stack_config_and_writes_a_pinned_host_entry(home: Path) -> None:
    fake = FakeStack()
    opened: list[str] = []

    def opener(name: str) -> FakeStack:
        opened.append(name)
        return fake

    printed: list[str] = []
    outputs = stack.up(
        "dev",
        "course-project-1",
        "europe-west1-b",
        ["203.0.113.7/32", "198.51.100.0/24"],
        opener=opener,
        on_output=printed.append,
    )
    assert opened == ["dev"]
    assert fake.config == {
        "gcp:project": ("course-project-1", False),
        "gcp:zone": ("europe-west1-b", False),
        "allowedSshCidrs[0]": ("203.0.113.7/32", True),
        "allowedSshCidrs[1]": ("198.51.100.0/24", True),
    }
    assert fake.calls == ["remove allowedSshCidrs", "up --continue-on-error"]
    assert printed == ["Updating (dev)"]
    assert outputs["ip"] == "34.78.1.2"
    ours = hosts_file().read_text()
    assert "Host course-vm\n    HostName 34.78.1.2\n    User student\n" in ours
    assert "    UserKnownHostsFile /home/me/.ssh/course-vm.dev.known_hosts\n    StrictHostKeyChecking yes\n" in ours


def test_up_keeps_settings_it_is_not_given(home: Path) -> None:
    fake = FakeStack()
    stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    assert fake.config == {}
    assert fake.calls == ["up --continue-on-error"]


def test_other_stacks_get_their_own_host_alias(home: Path) -> None:
    fake = FakeStack(next_outputs=outputs_of_stack("alice"))
    stack.up("alice", "p-123456", "europe-west1-b", [], opener=lambda _: fake, on_output=print)
    assert "Host course-vm-alice\n" in hosts_file().read_text()


def test_down_destroys_and_removes_the_entry_and_nothing_else(home: Path) -> None:
    config = home / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text("Host work\n    User me\n")
    fake = FakeStack()
    stack.up("dev", "p-123456", "z-1-a", [], opener=lambda _: fake, on_output=print)
    assert stack.status("dev", opener=lambda _: fake)["ip"] == "34.78.1.2"
    stack.down("dev", opener=lambda _: fake, on_output=print)
    assert fake.calls[-1] == "destroy"
    assert config.read_text() == "Host work\n    User me\n"
    assert not hosts_file().exists()
    assert stack.status("dev", opener=lambda _: fake) == {}


def test_a_class_gets_one_pinned_host_entry_per_student(home: Path) -> None:
    fake = FakeStack(next_outputs=class_outputs("alice", "bob"))
    stack.up("dev", "p-123456", "europe-west1-b", [], opener=lambda _: fake, on_output=print)
    ours = hosts_file().read_text()
    for index, name in enumerate(("alice", "bob"), start=10):
        assert f"Host course-vm-{name}\n    HostName 34.78.1.{index}\n    User {name}\n" in ours
        assert f"    UserKnownHostsFile /home/me/.ssh/course-vm-{name}.dev.known_hosts\n" in ours
    assert "Host course-vm\n" not in ours


def test_a_roster_change_adds_and_removes_only_those_students_entries(home: Path) -> None:
    fake = FakeStack(next_outputs=class_outputs("alice", "bob"))
    stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    other = FakeStack(next_outputs=outputs_of_stack("other"))
    stack.up("other", None, None, [], opener=lambda _: other, on_output=print)
    fake.next_outputs = class_outputs("alice", "carol")
    stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-carol\n" in ours
    assert "Host course-vm-bob\n" not in ours
    assert "Host course-vm-other\n" in ours, "another stack's entry is not this stack's to remove"
    stack.down("dev", opener=lambda _: fake, on_output=print)
    assert "course-vm-alice" not in hosts_file().read_text()
    assert "Host course-vm-other\n" in hosts_file().read_text()


# The Host block is built from the VM's fields, each checked: never the sshConfig text read back.

INJECTED = 'Match exec "touch /tmp/course-vm-pwned"\n    ProxyCommand sh -c "id"\n'


def resolved(home: Path, alias: str) -> dict[str, str]:
    """What `ssh -G` makes of ALIAS through the user's ~/.ssh/config: OpenSSH's own reading."""
    out = subprocess.run(
        [require_tool("ssh"), "-G", "-F", str(home / ".ssh" / "config"), alias],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


@pytest.mark.integration
def test_a_tampered_ssh_config_output_never_reaches_the_users_config(home: Path) -> None:
    fake = FakeStack(next_outputs={**OUTPUTS, "sshConfig": str(OUTPUTS["sshConfig"]) + INJECTED})
    stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    ours = hosts_file().read_text()
    assert "Match" not in ours and "touch" not in ours and "ProxyCommand" not in ours
    seen = resolved(home, "course-vm")
    assert (seen["hostname"], seen["user"], seen["port"]) == ("34.78.1.2", "student", "22")
    assert seen["identityfile"] == "/home/me/.ssh/course-vm"
    assert seen["userknownhostsfile"] == "/home/me/.ssh/course-vm.dev.known_hosts"
    assert seen["stricthostkeychecking"] == "true"
    assert "proxycommand" not in seen


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ip", "34.78.1.2\n" + INJECTED, r"host '34\.78\.1\.2\\nMatch exec .*' is not an IP address"),
        ("ip", "evil.example.org", r"host 'evil\.example\.org' is not an IP address"),
        ("username", "student\nHost *", r"user 'student\\nHost \*' is not a Linux login"),
        ("identityFile", '/home/me/key"\nMatch exec "id', r"identity file .* holds a control character"),
        ("knownHostsFile", "/home/me/%d/known_hosts", r"known_hosts file '/home/me/%d/known_hosts' holds"),
    ],
)
def test_a_bad_field_in_the_outputs_writes_nothing_of_it(home: Path, key: str, value: str, message: str) -> None:
    stack.up("dev", None, None, [], opener=lambda _: FakeStack(), on_output=print)
    fake = FakeStack(next_outputs={**OUTPUTS, key: value})
    with pytest.raises(CourseVmError, match=r"^course-vm: cannot write an ssh Host block: " + message) as raised:
        stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    assert "\n" not in str(raised.value) and "Fix: " in str(raised.value)
    assert not hosts_file().exists(), "the VM's earlier block goes too: it may name an old address"


def test_one_students_bad_field_keeps_the_others_blocks(home: Path) -> None:
    outputs = class_outputs("alice", "bob")
    outputs["students"]["bob"]["ip"] = "34.78.1.11\nHost *"
    fake = FakeStack(next_outputs=outputs)
    with pytest.raises(CourseVmError, match=r"^course-vm-bob: cannot write an ssh Host block: host '34"):
        stack.up("dev", None, None, [], opener=lambda _: fake, on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "course-vm-bob" not in ours and "Host *" not in ours


def test_default_backend_is_a_local_file_with_a_generated_passphrase(home: Path) -> None:
    environment = stack.backend_environment()
    directory = home / "state" / "course-vm" / "pulumi"
    assert environment["PULUMI_BACKEND_URL"] == directory.as_uri()
    passphrase = Path(environment["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    first = passphrase.read_text()
    assert len(first.strip()) >= 40
    assert stack.backend_environment() == environment and passphrase.read_text() == first


def test_a_backend_the_user_chose_is_respected(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi_home = home / ".pulumi"
    pulumi_home.mkdir()
    (pulumi_home / "credentials.json").write_text('{"current": "https://api.pulumi.com"}')
    assert "PULUMI_BACKEND_URL" not in stack.backend_environment()
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "theirs")
    assert stack.backend_environment() == {}
    (pulumi_home / "credentials.json").unlink()
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    assert stack.backend_environment() == {}


def test_without_the_pulumi_cli_up_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(home / "empty"))
    assert main(["up", "--project", "course-project-1"]) == 2
    assert "the Pulumi CLI is not installed" in capsys.readouterr().err
    assert not (home / "state").exists(), "nothing is set up before the CLI is known to exist"
    assert main(["status"]) == 2
    assert main(["down"]) == 2
