"""`up`, `down` and `status` up to the Pulumi CLI boundary (the CLI cannot be installed here).

FakeStack stands in for pulumi.automation.Stack: it records the config set and answers `up` with
the outputs a real update of this program exports. The ssh config files are real files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from pulumi import automation
from pulumi.automation import CommandError, ConfigValue, EngineEvent, OutputValue
from pulumi.automation._cmd import CommandResult

from provisioner.access.ssh_config import hosts_file, ssh_config_block
from provisioner.cli import stack
from provisioner.cli.main import main
from provisioner.errors import EXIT_BAD_INPUT, EXIT_MISSING_PREREQUISITE, CourseVmError, EngineError
from provisioner.gcp.quotas import Existing
from provisioner.recipe.settings import Settings
from tests.conftest import ROOT
from tests.support.openssh import resolved
from tests.support.pulumi_cli import exported_deployment, preview_events, stand_in_pulumi, update_events

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
    events: list[dict[str, Any]] = field(
        default_factory=lambda: preview_events({"": {"self": "create", "vm": "create"}})
    )
    """What the next preview reports, as the engine's event log holds it."""
    state: dict[str, Any] | None = None
    """What `pulumi stack export` prints (see exported_deployment); None: the state of the outputs."""

    def preview(self, *, on_event: Callable[[Any], Any] | None = None) -> Any:
        self.calls.append("preview")
        assert on_event is not None
        for event in self.events:
            on_event(EngineEvent.from_json(event))

    def preview_destroy(self, *, on_event: Callable[[Any], Any] | None = None) -> Any:
        self.calls.append("preview_destroy")
        assert on_event is not None
        for event in self.events:
            on_event(EngineEvent.from_json(event))

    def get_all_config(self) -> dict[str, ConfigValue]:
        """The config as `pulumi config --json` gives it: namespaced keys, a --path list as its JSON text."""
        found: dict[str, Any] = {}
        for key, (value, path) in self.config.items():
            name, _, index = key.partition("[")
            name = name if ":" in name else f"course-vm:{name}"
            if path and index:
                found.setdefault(name, []).append(value)
            else:
                found[name] = value
        return {k: ConfigValue(v if isinstance(v, str) else json.dumps(v)) for k, v in found.items()}

    def set_config(self, key: str, value: ConfigValue, *, path: bool = False) -> None:
        self.config[key] = (value.value, path)

    def remove_config(self, key: str, *, path: bool = False) -> None:
        self.calls.append(f"remove {key}")
        self.config = {k: v for k, v in self.config.items() if not k.startswith(key)}

    def up(
        self, *, on_output: Callable[[str], Any] | None = None, on_event: Callable[[Any], Any] | None = None,
        continue_on_error: bool | None = None,
    ) -> Any:  # fmt: skip
        self.calls.append("up" + (" --continue-on-error" if continue_on_error else ""))
        assert on_output is not None
        on_output("Updating (dev)")  # Pulumi's live progress goes through on_output
        self.exported = dict(self.next_outputs)
        return type("UpResult", (), {"outputs": {k: OutputValue(v, False) for k, v in self.exported.items()}})()

    def destroy(
        self, *, on_output: Callable[[str], Any] | None = None, on_event: Callable[[Any], Any] | None = None
    ) -> Any:
        self.calls.append("destroy")
        self.exported = {}

    def outputs(self) -> Mapping[str, Any]:
        return {k: OutputValue(v, False) for k, v in self.exported.items()}

    def export_stack(self) -> automation.Deployment:
        """The stack's state as `pulumi stack export` gives it: STATE when set, else what the outputs come from."""
        exported = self.state if self.state is not None else exported_deployment("dev", self.exported)
        return automation.Deployment(version=exported["version"], deployment=exported["deployment"])


def opens(fake: FakeStack, opened: list[str] | None = None) -> stack.StackOpener:
    """An opener that hands out FAKE (recording each name asked for) whether or not it is to be created."""

    def opener(name: str, *, create: bool = True) -> FakeStack:
        if opened is not None:
            opened.append(name)
        return fake

    return opener


def yes(plan: stack.Plan) -> bool:
    return True


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
    printed: list[str] = []
    outputs = stack.up(
        "dev",
        "course-project-1",
        "europe-west1-b",
        ["203.0.113.7/32", "198.51.100.0/24"],
        confirm=yes,
        opener=opens(fake, opened),
        on_output=printed.append,
    )
    assert opened == ["dev"]
    assert fake.config == {
        "gcp:project": ("course-project-1", False),
        "gcp:zone": ("europe-west1-b", False),
        "allowedSshCidrs[0]": ("203.0.113.7/32", True),
        "allowedSshCidrs[1]": ("198.51.100.0/24", True),
    }
    assert fake.calls == ["remove allowedSshCidrs", "preview", "up --continue-on-error"]
    assert printed == ["allowedSshCidrs: (none) -> 203.0.113.7/32, 198.51.100.0/24", "Updating (dev)"]
    assert outputs["ip"] == "34.78.1.2"
    ours = hosts_file().read_text()
    assert "Host course-vm\n    HostName 34.78.1.2\n    User student\n" in ours
    assert "    UserKnownHostsFile /home/me/.ssh/course-vm.dev.known_hosts\n    StrictHostKeyChecking yes\n" in ours


def test_up_keeps_settings_it_is_not_given(home: Path) -> None:
    fake = FakeStack()
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    assert fake.config == {}
    assert fake.calls == ["preview", "up --continue-on-error"]


def test_other_stacks_get_their_own_host_alias(home: Path) -> None:
    fake = FakeStack(next_outputs=outputs_of_stack("alice"))
    stack.up("alice", "p-123456", "europe-west1-b", [], confirm=yes, opener=opens(fake), on_output=print)
    assert "Host course-vm-alice\n" in hosts_file().read_text()


def test_down_destroys_and_removes_the_entry_and_nothing_else(home: Path) -> None:
    config = home / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text("Host work\n    User me\n")
    fake = FakeStack()
    stack.up("dev", "p-123456", "z-1-a", [], confirm=yes, opener=opens(fake), on_output=print)
    assert stack.status("dev", opener=opens(fake))["ip"] == "34.78.1.2"
    stack.down("dev", confirm=yes, opener=opens(fake), on_output=print)
    assert fake.calls[-1] == "destroy"
    assert config.read_text() == "Host work\n    User me\n"
    assert not hosts_file().exists()
    assert stack.status("dev", opener=opens(fake)) == {}


def test_a_class_gets_one_pinned_host_entry_per_student(home: Path) -> None:
    fake = FakeStack(next_outputs=class_outputs("alice", "bob"))
    stack.up("dev", "p-123456", "europe-west1-b", [], confirm=yes, opener=opens(fake), on_output=print)
    ours = hosts_file().read_text()
    for index, name in enumerate(("alice", "bob"), start=10):
        assert f"Host course-vm-{name}\n    HostName 34.78.1.{index}\n    User {name}\n" in ours
        assert f"    UserKnownHostsFile /home/me/.ssh/course-vm-{name}.dev.known_hosts\n" in ours
    assert "Host course-vm\n" not in ours


def test_a_roster_change_adds_and_removes_only_those_students_entries(home: Path) -> None:
    fake = FakeStack(next_outputs=class_outputs("alice", "bob"))
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    other = FakeStack(next_outputs=outputs_of_stack("other"))
    stack.up("other", None, None, [], confirm=yes, opener=opens(other), on_output=print)
    fake.next_outputs = class_outputs("alice", "carol")
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-carol\n" in ours
    assert "Host course-vm-bob\n" not in ours
    assert "Host course-vm-other\n" in ours, "another stack's entry is not this stack's to remove"
    stack.down("dev", confirm=yes, opener=opens(fake), on_output=print)
    assert "course-vm-alice" not in hosts_file().read_text()
    assert "Host course-vm-other\n" in hosts_file().read_text()


# The Host block is built from the VM's fields, each checked: never the sshConfig text read back.

INJECTED = 'Match exec "touch /tmp/course-vm-pwned"\n    ProxyCommand sh -c "id"\n'


@pytest.mark.integration
def test_a_tampered_ssh_config_output_never_reaches_the_users_config(home: Path) -> None:
    fake = FakeStack(next_outputs={**OUTPUTS, "sshConfig": str(OUTPUTS["sshConfig"]) + INJECTED})
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
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
    stack.up("dev", None, None, [], confirm=yes, opener=opens(FakeStack()), on_output=print)
    fake = FakeStack(next_outputs={**OUTPUTS, key: value})
    with pytest.raises(CourseVmError, match=r"^course-vm: cannot write an ssh Host block: " + message) as raised:
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    assert "\n" not in str(raised.value) and "Fix: " in str(raised.value)
    assert not hosts_file().exists(), "the VM's earlier block goes too: it may name an old address"


def test_one_students_bad_field_keeps_the_others_blocks(home: Path) -> None:
    outputs = class_outputs("alice", "bob")
    outputs["students"]["bob"]["ip"] = "34.78.1.11\nHost *"
    fake = FakeStack(next_outputs=outputs)
    with pytest.raises(CourseVmError, match=r"^course-vm-bob: cannot write an ssh Host block: host '34"):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
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


def test_a_backend_the_user_chose_is_used_with_their_own_passphrase_settings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stack made with `pulumi stack init` and a typed passphrase: course-vm's passphrase file would not fit.
    pulumi_home = home / ".pulumi"
    pulumi_home.mkdir()
    (pulumi_home / "credentials.json").write_text('{"current": "https://api.pulumi.com"}')
    assert stack.backend_environment() == {}
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "theirs")
    assert stack.backend_environment() == {}
    (pulumi_home / "credentials.json").unlink()
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    assert stack.backend_environment() == {}
    assert not (home / "state" / "course-vm" / "pulumi" / "passphrase").exists()


def test_an_empty_passphrase_is_the_users_choice_too(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "")
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in stack.backend_environment()


def test_logged_in_to_course_vms_own_backend_keeps_its_passphrase(home: Path) -> None:
    # `pulumi login file://...` as `course-vm env` says: the same stacks, the same passphrase.
    pulumi_home = home / ".pulumi"
    pulumi_home.mkdir()
    own = home / "state" / "course-vm" / "pulumi"
    (pulumi_home / "credentials.json").write_text(json.dumps({"current": own.as_uri()}))
    assert stack.backend_environment() == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(own / "passphrase")}


class Recorder:
    """Stands in for pulumi.automation.create_or_select_stack: records what the CLI would be given."""

    def __init__(self, fake: FakeStack | None = None, error: str = "") -> None:
        self.calls: list[dict[str, Any]] = []
        self.fake = fake or FakeStack()
        self.error = error

    def __call__(self, name: str, *, work_dir: str, opts: Any) -> FakeStack:
        self.calls.append({"name": name, "work_dir": work_dir, "env_vars": dict(opts.env_vars)})
        if self.error:
            raise CommandError(CommandResult("", self.error, 255))
        return self.fake


@pytest.fixture
def pulumi_on_path(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `pulumi` on PATH (open_stack checks it is installed); the Automation API itself is faked."""
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("#!/bin/sh\nexit 9\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_open_stack_gives_the_automation_api_the_project_and_the_backend(
    home: Path, pulumi_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(automation, "create_or_select_stack", recorder)
    stack.open_stack("dev")
    own = home / "state" / "course-vm" / "pulumi"
    assert recorder.calls == [
        {
            "name": "dev",
            "work_dir": str(ROOT),
            "env_vars": {"PULUMI_BACKEND_URL": own.as_uri(), "PULUMI_CONFIG_PASSPHRASE_FILE": str(own / "passphrase")},
        }
    ]


MISSING = (
    'error: getting secrets manager: constructing secrets manager of type "passphrase": passphrase must be set '
    "with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables"
)
INCORRECT = (
    "error: failed to decrypt: incorrect passphrase, please set PULUMI_CONFIG_PASSPHRASE to the correct "
    "passphrase or set PULUMI_CONFIG_PASSPHRASE_FILE to a file containing the passphrase"
)


def test_a_stack_with_a_typed_passphrase_and_none_set_is_one_clear_error(
    home: Path, pulumi_on_path: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///srv/their-state")
    # status selects the stack (it never creates one): the same passphrase error either way.
    monkeypatch.setattr(automation, "select_stack", Recorder(error=MISSING))
    assert main(["status", "--stack", "mine"]) == EXIT_MISSING_PREREQUISITE
    err = capsys.readouterr().err
    assert err.startswith("course-vm: stack mine on file:///srv/their-state keeps its secrets with a passphrase")
    assert "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_passphrase_that_does_not_decrypt_the_stack_says_which_one_was_tried(
    home: Path, pulumi_on_path: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The stack opens, but its secrets (read back as outputs) do not decrypt with course-vm's passphrase.
    class Undecryptable(FakeStack):
        def outputs(self) -> Mapping[str, Any]:
            raise CommandError(CommandResult("", INCORRECT, 255))

    monkeypatch.setattr(automation, "select_stack", Recorder(fake=Undecryptable()))
    assert main(["status"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    passphrase = home / "state" / "course-vm" / "pulumi" / "passphrase"
    assert err.startswith(f"course-vm: course-vm's passphrase file {passphrase} does not decrypt stack dev's secrets")
    assert "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE" in err and "Traceback" not in err


def test_other_engine_errors_are_not_taken_for_passphrase_errors(
    home: Path, pulumi_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(automation, "create_or_select_stack", Recorder(error="error: could not reach the backend"))
    with pytest.raises(
        EngineError, match=r"(?s)^Pulumi could not open stack dev:\n  error: could not reach the backend\n"
    ):
        stack.open_stack("dev")


def test_stack_outputs_maps_a_passphrase_error_of_the_raw_cli(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(f"#!/bin/sh\necho '{MISSING}' >&2\nexit 255\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    with pytest.raises(CourseVmError, match=r"^stack dev on s3://their-bucket keeps its secrets with a passphrase"):
        stack.stack_outputs(home, "dev")


def test_stack_outputs_of_a_missing_stack_names_course_vms_commands(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `check --stack typo` reads outputs with the raw CLI: its "no stack" is told course-vm's own way out.
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text("#!/bin/sh\necho \"error: no stack named 'typo' found\" >&2\nexit 255\n")
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    with pytest.raises(CourseVmError) as raised:
        stack.stack_outputs(home, "typo")
    assert str(raised.value) == (
        "there is no stack typo on s3://their-bucket. Fix: `course-vm status --stack NAME` names the stacks "
        "that exist; `course-vm up --stack typo` creates this one"
    )


def test_the_env_lines_reach_course_vms_stacks_from_the_raw_cli(home: Path, tmp_path: Path) -> None:
    # The stand-in pulumi answers only on course-vm's own backend, as the real CLI would find the stack there.
    environment = stand_in_pulumi(tmp_path, {"ip": "34.78.1.2"})
    lines = subprocess.run(
        [sys.executable, "-m", "provisioner", "env"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    passphrase = tmp_path / "state" / "course-vm" / "pulumi" / "passphrase"
    assert f"export PULUMI_CONFIG_PASSPHRASE_FILE={passphrase}\n" in lines
    assert f"pulumi login {(tmp_path / 'state' / 'course-vm' / 'pulumi').as_uri()}" in lines
    assert lines.endswith(f"cd {ROOT}\n")
    same_passphrase = f'test "$(cat "$PULUMI_CONFIG_PASSPHRASE_FILE")" = "$(cat {passphrase})" || exit 7'
    shell = f'eval "$1"\n{same_passphrase}\npulumi stack output --json'
    result = subprocess.run(
        ["sh", "-c", shell, "sh", lines], env=environment, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"ip": "34.78.1.2"}


def test_env_lines_for_powershell(home: Path) -> None:
    lines = stack.raw_cli_lines(windows=True)
    own = home / "state" / "course-vm" / "pulumi"
    assert f"$env:PULUMI_BACKEND_URL = '{own.as_uri()}'" in lines
    assert f"$env:PULUMI_CONFIG_PASSPHRASE_FILE = '{own / 'passphrase'}'" in lines
    assert lines[-1] == f"Set-Location '{ROOT}'"


# An installed copy (pip/pipx, not a checkout): its project directory is its own, its python this one.


@pytest.fixture
def installed(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """stack's view of paths as in an installed copy: the packaged program, a project dir under XDG_CONFIG_HOME."""
    packaged = home / "site-packages" / "provisioner" / "_program"
    packaged.mkdir(parents=True)
    for name in ("Pulumi.yaml", "__main__.py"):
        (packaged / name).write_text((ROOT / name).read_text())
    project = home / "config" / "course-vm"
    monkeypatch.setattr(stack, "FROM_CHECKOUT", False)
    monkeypatch.setattr(stack, "PROGRAM_DIR", packaged)
    monkeypatch.setattr(stack, "PROJECT_DIR", project)
    return project


def test_an_installed_copy_runs_the_program_in_its_own_interpreter(
    installed: Path, pulumi_on_path: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()
    monkeypatch.setattr(automation, "create_or_select_stack", recorder)
    stack.open_stack("dev")
    assert recorder.calls[0]["work_dir"] == str(installed)
    project = yaml.safe_load((installed / "Pulumi.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": sys.prefix}}
    assert project["config"] == yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert (installed / "__main__.py").read_text() == (ROOT / "__main__.py").read_text()


def test_an_upgrade_rewrites_the_program_but_keeps_the_stack_files(installed: Path) -> None:
    installed.mkdir(parents=True)
    (installed / "__main__.py").write_text("# an older course-vm's program\n")
    (installed / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: p-123456\n")
    assert stack.project_directory() == installed
    assert (installed / "__main__.py").read_text() == (ROOT / "__main__.py").read_text()
    assert (installed / "Pulumi.dev.yaml").read_text() == "config:\n  gcp:project: p-123456\n"


def test_outside_a_virtualenv_pulumi_is_told_this_python(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    assert stack.runtime_environment() == {"PULUMI_PYTHON_CMD": sys.executable}
    # ... and so is the raw pulumi CLI that `course-vm env` sets up.
    assert f"export PULUMI_PYTHON_CMD={shlex.quote(sys.executable)}" in stack.raw_cli_lines(windows=False)
    stack.project_directory()
    assert yaml.safe_load((installed / "Pulumi.yaml").read_text())["runtime"]["options"] == {"toolchain": "pip"}


def test_a_windows_virtualenv_path_stays_whole_in_the_project_file() -> None:
    text = stack.installed_project_file((ROOT / "Pulumi.yaml").read_text(), "C:\\Users\\Ana Li\\pipx\\venvs\\course-vm")
    options = yaml.safe_load(text)["runtime"]["options"]
    assert options["virtualenv"] == "C:\\Users\\Ana Li\\pipx\\venvs\\course-vm"


def test_without_the_pulumi_cli_every_command_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(home / "empty"))
    assert main(["up", "--project", "course-project-1"]) == EXIT_MISSING_PREREQUISITE
    assert "the Pulumi CLI is not on PATH" in capsys.readouterr().err
    assert not (home / "state").exists(), "nothing is set up before the CLI is known to exist"
    assert main(["status"]) == EXIT_MISSING_PREREQUISITE
    assert main(["down"]) == EXIT_MISSING_PREREQUISITE


# Preview, then confirm: nothing changes without a yes, and a preview without changes runs nothing.


def test_up_shows_the_plan_and_a_no_changes_nothing(home: Path) -> None:
    fake = FakeStack(events=preview_events({"bob": {"vm": "replace"}, "carol": {"self": "delete", "vm": "delete"}}))
    shown: list[stack.Plan] = []

    def no(plan: stack.Plan) -> bool:
        shown.append(plan)
        return False

    nothing = r"^not confirmed: nothing was created, changed or deleted in the cloud\. Fix: "
    with pytest.raises(CourseVmError, match=nothing):
        stack.up("dev", None, None, [], confirm=no, opener=opens(fake), on_output=print)
    assert fake.calls == ["preview"], "no up after a no"
    assert [(vm.student, vm.action) for vm in shown[0].vms] == [("bob", "replace"), ("carol", "delete")]
    assert not hosts_file().exists()


def test_a_no_says_that_the_options_given_stay_in_the_stacks_settings(home: Path) -> None:
    # The preview needs --zone in the stack's settings, so a no cannot take it back unsaid.
    fake = FakeStack(events=preview_events({"": {"vm": "replace"}}))
    with pytest.raises(CourseVmError) as raised:
        stack.up("dev", None, "europe-west4-a", ["203.0.113.7/32"], confirm=lambda plan: False, opener=opens(fake))
    assert "The stack's settings keep what --zone, --allow gave; a later `up` previews them again." in str(raised.value)
    assert "up --continue-on-error" not in fake.calls


def test_down_shows_the_plan_and_a_no_deletes_nothing(home: Path) -> None:
    fake = FakeStack()
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    fake.events = preview_events({"": {"self": "delete", "vm": "delete", "ip": "delete"}})
    with pytest.raises(CourseVmError, match=r"^not confirmed"):
        stack.down("dev", confirm=lambda plan: False, opener=opens(fake), on_output=print)
    assert fake.calls[-1] == "preview_destroy" and "destroy" not in fake.calls
    assert "Host course-vm\n" in hosts_file().read_text()


def test_a_preview_without_changes_runs_no_update_and_keeps_the_entries(home: Path) -> None:
    fake = FakeStack()
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print)
    hosts_file().unlink()
    fake.events = preview_events({"": {"ip": "same", "vm": "same"}})
    shown: list[stack.Plan] = []

    def show(plan: stack.Plan) -> bool:
        shown.append(plan)
        return True

    outputs = stack.up("dev", None, None, [], confirm=show, opener=opens(fake), on_output=print)
    assert fake.calls == ["preview", "up --continue-on-error", "preview"]
    assert not shown[0].changes
    assert outputs["ip"] == "34.78.1.2"
    assert "Host course-vm\n" in hosts_file().read_text()


def test_status_and_down_never_ask_for_a_stack_to_be_created(home: Path) -> None:
    asked: list[bool] = []

    def opener(name: str, *, create: bool = True) -> FakeStack:
        asked.append(create)
        raise stack.no_such_stack(name, ["dev", "alice"])

    with pytest.raises(CourseVmError, match=r"^there is no stack typo \(the stacks that exist: alice, dev\)"):
        stack.status("typo", opener=opener)
    with pytest.raises(CourseVmError, match=r"^there is no stack typo"):
        stack.down("typo", confirm=yes, opener=opener)
    assert asked == [False, False]


def test_a_missing_stack_where_none_exists_says_how_to_create_one() -> None:
    assert str(stack.no_such_stack("dev", [])) == (
        "there is no stack dev (no stack exists yet); nothing was created or deleted. "
        "Fix: create it with `course-vm up --stack dev --project YOUR-PROJECT-ID`"
    )


# allowedSshCidrs: --allow replaces the stored list, --add-allow appends to it; a change is said first.

STORED = {"gcp:project": ("course-project-1", False), "gcp:zone": ("europe-west1-b", False),
          "allowedSshCidrs[0]": ("203.0.113.7/32", True)}  # fmt: skip


def up_with_cidrs(fake: FakeStack, allowed: list[str], added: list[str]) -> None:
    """`up` with ALLOWED (--allow) and ADDED (--add-allow); what it says goes into fake.calls, in order."""
    stack.up(
        "dev", None, None, allowed, confirm=yes, opener=opens(fake), on_output=lambda line: fake.calls.append(line),
        added_cidrs=added,
    )  # fmt: skip


def test_allow_replaces_the_stored_ranges_and_says_so_before_the_preview(home: Path) -> None:
    fake = FakeStack(config=dict(STORED))
    up_with_cidrs(fake, ["198.51.100.0/24"], [])
    assert fake.get_all_config()["course-vm:allowedSshCidrs"].value == '["198.51.100.0/24"]'
    assert fake.calls[:3] == [
        "remove allowedSshCidrs", "allowedSshCidrs: 203.0.113.7/32 -> 198.51.100.0/24", "preview"
    ]  # fmt: skip


def test_add_allow_appends_to_the_stored_ranges_once(home: Path) -> None:
    fake = FakeStack(config=dict(STORED))
    up_with_cidrs(fake, [], ["198.51.100.0/24", "203.0.113.7/32", "198.51.100.0/24"])
    assert fake.get_all_config()["course-vm:allowedSshCidrs"].value == '["203.0.113.7/32", "198.51.100.0/24"]'
    assert "allowedSshCidrs: 203.0.113.7/32 -> 203.0.113.7/32, 198.51.100.0/24" in fake.calls


def test_allow_and_add_allow_together_make_the_given_list_plus_the_added(home: Path) -> None:
    fake = FakeStack(config=dict(STORED))
    up_with_cidrs(fake, ["192.0.2.0/24"], ["198.51.100.0/24"])
    assert fake.get_all_config()["course-vm:allowedSshCidrs"].value == '["192.0.2.0/24", "198.51.100.0/24"]'


@pytest.mark.parametrize(("allowed", "added"), [(["203.0.113.7/32"], []), ([], ["203.0.113.7/32"])])
def test_ranges_already_stored_change_nothing_and_say_nothing(home: Path, allowed: list[str], added: list[str]) -> None:
    fake = FakeStack(config=dict(STORED))
    up_with_cidrs(fake, allowed, added)
    assert fake.config == STORED
    assert fake.calls == ["preview", "up --continue-on-error", "Updating (dev)"]


# The cloud check: after the preview, with the settings it validated, before any question or change.


def test_the_check_gets_the_stacks_settings_and_the_vms_created_before_the_question(home: Path) -> None:
    fake = FakeStack(config={**STORED, "students": ('["alice", "bob"]', False)})
    fake.events = preview_events({"alice": {"self": "create", "vm": "create"}, "bob": {"self": "create"},
                                  "carol": {"vm": "replace"}})  # fmt: skip
    seen: list[tuple[str, str, str, tuple[str, ...], int]] = []

    def check(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        seen.append((stack_name, settings.project, settings.zone, settings.students, created))
        fake.calls.append("check")

    def ask(plan: stack.Plan) -> bool:
        fake.calls.append("ask")
        return True

    stack.up("dev", None, "europe-west4-a", [], confirm=ask, opener=opens(fake), on_output=print, check=check)
    # The zone given here counts, though the stack stored another; a replaced VM adds nothing.
    assert seen == [("dev", "course-project-1", "europe-west4-a", ("alice", "bob"), 2)]
    assert fake.calls == ["preview", "check", "ask", "up --continue-on-error"]


def test_a_check_that_refuses_leaves_everything_as_it_was(home: Path) -> None:
    fake = FakeStack(config=dict(STORED))

    def refuse(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        raise CourseVmError("short of quota")

    with pytest.raises(CourseVmError, match="short of quota"):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print, check=refuse)
    assert fake.calls == ["preview"]
    assert not hosts_file().exists()


# Each VM's last verification: what `up` saw in the engine's events, for `status` to show.

NOT_READY = "the VM is not ready:\nCHECK  RESULT  TIME  DETAIL\ndocker  FAILED  1.0s  no docker\n"


@dataclass
class UpdatingStack(FakeStack):
    """A FakeStack whose `up` reports UPDATE (engine events) as it goes and, with FAIL, then fails as an
    update in which a resource failed does (continue-on-error or not)."""

    update: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def up(
        self, *, on_output: Callable[[str], Any] | None = None, on_event: Callable[[Any], Any] | None = None,
        continue_on_error: bool | None = None,
    ) -> Any:  # fmt: skip
        assert on_event is not None
        for event in self.update:
            on_event(EngineEvent.from_json(event))
        if self.fail:
            raise CommandError(CommandResult("", "error: update failed\n", 255))
        return super().up(on_output=on_output, on_event=on_event, continue_on_error=continue_on_error)


def test_up_records_whose_verification_failed_although_the_update_failed(home: Path) -> None:
    fake = UpdatingStack(
        events=preview_events({"alice": {"self": "create"}, "bob": {"self": "create"}}),
        update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY}),
        fail=True,
    )
    with pytest.raises(EngineError):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert stack.recorded_verifications("dev") == {
        "alice": stack.Verification("passed", "2026-11-27T14:00:00Z"),
        "bob": stack.Verification("failed", "2026-11-27T14:00:00Z", NOT_READY.strip()),
    }
    path = home / "state" / "course-vm" / "verifications" / "dev.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_later_up_keeps_when_an_unchanged_verification_passed(home: Path) -> None:
    first = UpdatingStack(update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY}), fail=True)
    with pytest.raises(EngineError):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(first))
    later = UpdatingStack(
        update=update_events({"alice": "same", "bob": "passed", "carol": "same"}, timestamp=1795791600),
        next_outputs=class_outputs("alice", "bob", "carol"),
    )
    stack.up("dev", None, None, [], confirm=yes, opener=opens(later))
    assert stack.recorded_verifications("dev") == {
        "alice": stack.Verification("passed", "2026-11-27T14:00:00Z"),
        "bob": stack.Verification("passed", "2026-11-27T15:00:00Z"),
        "carol": stack.Verification("passed", None),  # passed before course-vm kept the time
    }
    assert stack.recorded_verifications("other") == {}


def test_a_vm_without_a_verification_has_verify_off(home: Path) -> None:
    fake = UpdatingStack(update=update_events({"": "off"}))
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert stack.recorded_verifications("dev") == {"": stack.Verification("off")}


def test_an_unreadable_record_is_no_record(home: Path) -> None:
    path = stack.verifications_file("dev")
    path.parent.mkdir(parents=True)
    path.write_text('{"alice": {"outcome": "weird"}}')
    assert stack.recorded_verifications("dev") == {}


def test_down_forgets_the_stacks_verifications(home: Path) -> None:
    fake = UpdatingStack(update=update_events({"alice": "passed"}), next_outputs=class_outputs("alice"))
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert stack.recorded_verifications("dev") == {"alice": stack.Verification("passed", "2026-11-27T14:00:00Z")}
    stack.down("dev", confirm=yes, opener=opens(fake))
    assert stack.recorded_verifications("dev") == {}


# sshAccess iap: the Host block names the instance and course-vm's own tunnel, and nothing else.

IAP = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"
IAP_OUTPUTS = {**OUTPUTS, "ip": "10.42.0.2", "proxyCommand": IAP, "instanceName": "course-vm-vm-1a2b3c"}


@pytest.mark.integration
def test_up_writes_an_iap_host_entry_that_ssh_reaches_through_the_tunnel(home: Path) -> None:
    stack.up("dev", None, None, [], confirm=yes, opener=opens(FakeStack(next_outputs=IAP_OUTPUTS)), on_output=print)
    seen = resolved(home, "course-vm")
    assert seen["hostname"] == "course-vm-vm-1a2b3c"
    assert seen["proxycommand"] == IAP
    assert seen["userknownhostsfile"] == "/home/me/.ssh/course-vm.dev.known_hosts"


def test_a_firewall_vm_with_an_empty_proxy_command_keeps_its_ip(home: Path) -> None:
    blocks, problems = stack.host_entries("dev", {**OUTPUTS, "proxyCommand": ""})
    assert problems == []
    assert "    HostName 34.78.1.2\n" in blocks["course-vm"] and "ProxyCommand" not in blocks["course-vm"]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"proxyCommand": 'sh -c "id"'}, "proxy command 'sh -c \"id\"' is not course-vm's IAP tunnel"),
        ({"proxyCommand": IAP + "\nMatch exec id"}, "is not course-vm's IAP tunnel"),
        ({"instanceName": "vm\nHost *"}, "host 'vm\\\\nHost \\*' is not a GCE instance name"),
    ],
)
def test_a_tampered_proxy_command_or_instance_writes_nothing(changes: dict[str, str], message: str) -> None:
    blocks, problems = stack.host_entries("dev", {**IAP_OUTPUTS, **changes})
    assert blocks == {}
    [problem] = problems
    assert re.search(message, str(problem)), problem


# An update that fails for some students: their VMs' own outputs in the stack's state stand in for
# the stack outputs Pulumi keeps as they were.


def test_a_class_up_that_fails_for_one_student_writes_the_others_entries_and_names_it(home: Path) -> None:
    fake = UpdatingStack(
        events=preview_events({name: {"self": "create", "vm": "create"} for name in ("alice", "bob", "carol")}),
        update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY, "carol": "passed"}),
        fail=True,
        state=exported_deployment("dev", class_outputs("alice", "carol"), root={}, unfinished=("bob",)),
    )
    with pytest.raises(stack.PartialUpError) as raised:
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert raised.value.exit_code == 5
    assert raised.value.failed == ("bob",)
    assert list(raised.value.outputs["students"]) == ["alice", "carol"]
    assert str(raised.value).startswith("1 of 3 VMs of stack dev did not finish: bob. ")
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-carol\n" in ours
    assert "course-vm-bob" not in ours


def test_down_after_a_class_up_that_failed_removes_the_entries_it_wrote(home: Path) -> None:
    fake = UpdatingStack(
        events=preview_events({name: {"self": "create", "vm": "create"} for name in ("alice", "bob")}),
        update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY}),
        fail=True,
        state=exported_deployment("dev", class_outputs("alice"), root={}, unfinished=("bob",)),
    )
    with pytest.raises(stack.PartialUpError):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert "Host course-vm-alice\n" in hosts_file().read_text()
    # The stack's outputs name no VM (Pulumi kept the first update's: none); the preview names them all.
    fake.events = preview_events({name: {"self": "delete", "vm": "delete"} for name in ("alice", "bob")})
    stack.down("dev", confirm=yes, opener=opens(fake))
    assert not hosts_file().exists()


def test_a_student_removed_after_a_class_up_that_failed_loses_the_entry_it_wrote(home: Path) -> None:
    fake = UpdatingStack(
        events=preview_events({name: {"self": "create", "vm": "create"} for name in ("alice", "bob", "carol")}),
        update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY, "carol": "passed"}),
        fail=True,
        state=exported_deployment("dev", class_outputs("alice", "carol"), root={}, unfinished=("bob",)),
    )
    with pytest.raises(stack.PartialUpError):
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    # carol leaves the class: the next update deletes her VM and succeeds.
    fake.events = preview_events({"alice": {}, "bob": {"self": "create"}, "carol": {"self": "delete"}})
    fake.fail, fake.update, fake.next_outputs = False, [], class_outputs("alice", "bob")
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n" in ours and "Host course-vm-bob\n" in ours
    assert "course-vm-carol" not in ours


def test_a_later_up_that_fails_for_one_student_keeps_that_students_entry_and_updates_the_others(home: Path) -> None:
    fake = FakeStack(next_outputs=class_outputs("alice", "bob"))
    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    # The next update replaces both VMs (new addresses); bob's new VM fails its verification.
    renewed = class_outputs("alice", "bob")
    renewed["students"]["alice"]["ip"] = "34.78.2.10"
    failing = UpdatingStack(
        exported=class_outputs("alice", "bob"),
        events=preview_events({name: {"vm": "replace"} for name in ("alice", "bob")}),
        update=update_events({"alice": "passed", "bob": "failed: " + NOT_READY}),
        fail=True,
        # bob's StudentVm registered nothing: the state keeps his previous outputs, as Pulumi's same step does.
        state=exported_deployment("dev", renewed, root=class_outputs("alice", "bob")),
    )
    with pytest.raises(stack.PartialUpError) as raised:
        stack.up("dev", None, None, [], confirm=yes, opener=opens(failing))
    assert raised.value.failed == ("bob",)
    assert "`course-vm check --stack dev --student bob` checks one again" in str(raised.value)
    ours = hosts_file().read_text()
    assert "Host course-vm-alice\n    HostName 34.78.2.10\n" in ours
    assert "Host course-vm-bob\n    HostName 34.78.1.11\n" in ours, "bob's entry is left as it was"


def test_an_update_that_failed_before_any_step_is_the_engines_error_alone(home: Path) -> None:
    fake = UpdatingStack(
        events=preview_events({name: {"self": "create"} for name in ("alice", "bob")}),
        fail=True,
        state=exported_deployment("dev", class_outputs("alice")),
    )
    with pytest.raises(EngineError) as raised:
        stack.up("dev", None, None, [], confirm=yes, opener=opens(fake))
    assert not isinstance(raised.value, stack.PartialUpError)
    assert str(raised.value).startswith("Pulumi could not update stack dev:")


def test_a_single_vm_stack_reads_the_same_with_its_state(home: Path) -> None:
    outputs = {**OUTPUTS, "project": "course-project-1"}
    assert stack.with_state(outputs, stack.state_vms(exported_deployment("dev", outputs)["deployment"])) == outputs
    # A later update failed at the verification: the StudentVm's own outputs are fresher than the stack's.
    fresher = {**outputs, "ip": "34.78.9.9"}
    state = stack.state_vms(exported_deployment("dev", fresher, root=outputs)["deployment"])
    assert stack.with_state(outputs, state) == fresher


def test_a_class_reads_each_vm_as_its_state_has_it() -> None:
    stale = class_outputs("alice", "dave")  # dave left the class: his VM was deleted
    now = class_outputs("alice", "bob")
    now["students"]["alice"]["ip"] = "34.78.2.10"
    state = stack.state_vms(exported_deployment("dev", now, root=stale, unfinished=("carol",))["deployment"])
    assert state is not None and state.unfinished == {"carol"}
    merged = stack.with_state(stale, state)
    assert merged["students"] == now["students"]
    assert merged["project"] == "course-project-1"


def test_a_secret_in_the_state_is_read_as_the_cli_writes_it() -> None:
    sig = {stack.SECRET_SIG_KEY: stack.SECRET_SIG}
    vm = {**OUTPUTS, "username": {**sig, "plaintext": '"student"'}, "sshCommand": {**sig, "ciphertext": "v1:abc"},
          "zone": {**sig, "plaintext": "not JSON"}}  # fmt: skip
    state = stack.state_vms(exported_deployment("dev", vm)["deployment"])
    assert state is not None
    assert state.vms[""]["username"] == "student", "--show-secrets: the value's JSON text"
    assert state.vms[""]["sshCommand"] is None, "without: nothing to read"
    assert state.vms[""]["zone"] is None


def test_a_state_of_no_vm_or_another_layout_is_no_state() -> None:
    assert stack.state_vms(exported_deployment("dev", {})["deployment"]) is None
    assert stack.state_vms({}) is None
    assert stack.with_state(OUTPUTS, None) == OUTPUTS


def raw_cli(home: Path, monkeypatch: pytest.MonkeyPatch, export: str) -> None:
    """A `pulumi` whose stack outputs are a first `up`'s that failed (none), and whose `stack export` runs EXPORT."""
    bin_dir = home / "bin"
    bin_dir.mkdir()
    (bin_dir / "pulumi").write_text(
        f"#!/bin/sh\n[ \"$1 $2\" = 'stack export' ] && {{ {export}; }}\n[ \"$1 $2\" = 'stack output' ] || exit 9\n"
        "echo '{}'\n"
    )
    (bin_dir / "pulumi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_stack_outputs_read_the_vms_of_the_state(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (home / "state.json").write_text(json.dumps(exported_deployment("dev", class_outputs("alice"), root={})))
    raw_cli(home, monkeypatch, f"cat '{home / 'state.json'}'; exit 0")
    outputs = stack.stack_outputs(home, "dev")
    assert outputs["students"] == class_outputs("alice")["students"]


@pytest.mark.parametrize(
    "export",
    [
        'echo \'error: unknown command "export" for "pulumi stack"\' >&2; exit 1',
        "echo 'not JSON'; exit 0",
        "echo '[]'; exit 0",
    ],
)
def test_a_state_that_cannot_be_read_leaves_the_outputs_alone(
    home: Path, monkeypatch: pytest.MonkeyPatch, export: str
) -> None:
    raw_cli(home, monkeypatch, export)
    with pytest.raises(CourseVmError) as raised:
        stack.stack_outputs(home, "dev")
    assert str(raised.value) == (
        "the stack has no ip, username, identityFile output. Fix: `course-vm up --stack dev` first"
    )


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("..", "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"),
        ("", "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"),
        ("a/b", "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"),
        ("root", "that name belongs to the system or grants extra rights"),
        ("con", "that name cannot be a folder's name on Windows (it names a device there), and each hand-out is one"),
    ],
)
def test_a_student_name_no_roster_can_hold_in_the_outputs_is_refused_by_every_command(name: str, why: str) -> None:
    # Every command reads the VMs through stack_vms, so a name written into the stack's outputs or
    # state by someone else (`..` would make the hand-out folder `--out/..`) reaches none of them.
    outputs = {"students": {"alice": OUTPUTS, name: OUTPUTS}}
    with pytest.raises(CourseVmError) as raised:
        stack.stack_vms(outputs, ["alice"])
    assert str(raised.value) == (
        f"the stack's outputs name a student {name!r}, which is no student's name ({why}): someone changed the "
        "stack's outputs or state, so course-vm acts on none of its VMs. Fix: check who else can write to the "
        "stack's Pulumi backend, then run `course-vm up` for the stack to write its outputs again from the roster"
    )
    assert raised.value.exit_code == EXIT_BAD_INPUT


def test_students_that_are_no_mapping_are_refused() -> None:
    with pytest.raises(CourseVmError, match="the stack's `students` output is no mapping of names to VMs: someone"):
        stack.stack_vms({"students": ["alice"]})


@pytest.mark.parametrize("key_setting", [None, "~/keys/course-vm"])
def test_down_frees_the_stacks_claims_on_its_students_keys_once_its_vms_are_gone(
    home: Path, key_setting: str | None
) -> None:
    from provisioner.access.keys import claim_keys, key_claims

    key = home / (".ssh" if key_setting is None else "keys") / "course-vm"
    claim_keys("dev", [("alex", Path(f"{key}-alex"))], key)
    claim_keys("other", [("alex", home / "elsewhere-alex")], home / "elsewhere")
    fake = FakeStack(config={} if key_setting is None else {"sshKeyPath": (key_setting, False)})
    fake.exported = dict(OUTPUTS)
    with pytest.raises(CourseVmError, match=r"^not confirmed"):
        stack.down("dev", confirm=lambda plan: False, opener=opens(fake), on_output=print)
    assert key_claims(Path(f"{key}-alex")) == [("dev", "alex")], "a no keeps the VMs, and so their claims"
    Path(f"{key}-alex").parent.mkdir(parents=True, exist_ok=True)
    Path(f"{key}-alex").write_text("private")
    said: list[str] = []
    stack.down("dev", confirm=yes, opener=opens(fake), on_output=said.append)
    assert key_claims(Path(f"{key}-alex")) == []
    assert key_claims(home / "elsewhere-alex") == [("other", "alex")]
    assert not Path(f"{key}-alex").exists(), "retired: the next class's alex gets a new key"
    assert said[-1] == (
        "retired 1 students' generated keys (renamed to KEY.retired-...), so that a later class gets new ones"
    )


def test_up_hands_the_cloud_check_the_vms_it_updates_as_they_are_now(home: Path) -> None:
    fake = FakeStack(config=dict(STORED))
    students = {name: {**OUTPUTS, "instanceName": f"{name}-vm"} for name in ("alice", "bob", "carol")}
    fake.state = exported_deployment(
        "dev", {"students": students}, machines={"alice": ("e2-standard-4", 30), "bob": ("e2-standard-2", 40)}
    )
    fake.events = preview_events({"alice": {"vm": "update"}, "bob": {"vm": "replace"}, "carol": {"vm": "same"}})
    seen: list[list[Existing]] = []

    def check(stack_name: str, settings: Settings, created: int, existing: Sequence[Existing]) -> None:
        seen.append(list(existing))

    stack.up("dev", None, None, [], confirm=yes, opener=opens(fake), on_output=print, check=check)
    assert seen == [[Existing("e2-standard-4", 30), Existing("e2-standard-2", 40)]]
