"""A stack's config as `pulumi config --json` gives it, and what the program would make of it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.driver.config import StackConfig
from provisioner.errors import CourseVmError, SettingsError
from tests.support.pulumi_state import STACK_CONFIG


def test_the_clis_json_is_read_key_by_key_a_list_as_its_json_text() -> None:
    # What `pulumi config --json --show-secrets` prints: each key with its value (a --path list as a list).
    document = {
        "gcp:project": {"value": "course-project-1", "secret": False},
        "course-vm:allowedSshCidrs": {"value": ["203.0.113.7/32"], "objectValue": ["203.0.113.7/32"], "secret": False},
        "course-vm:verify": {"value": "false", "secret": False},
        "course-vm:unset": {"secret": True},
        "course-vm:bare": "text",
    }
    assert StackConfig.from_cli(document).values == {
        "gcp:project": "course-project-1",
        "course-vm:allowedSshCidrs": '["203.0.113.7/32"]',
        "course-vm:verify": "false",
        "course-vm:bare": "text",
    }


@pytest.mark.parametrize("document", [[], "text", None])
def test_a_document_of_another_shape_is_no_config(document: object) -> None:
    assert StackConfig.from_cli(document) == StackConfig()


def test_own_keys_are_course_vms_without_their_prefix() -> None:
    config = StackConfig({**STACK_CONFIG, "course-vm:students": '["alice"]'})
    assert config.own() == {"allowedSshCidrs": '["203.0.113.7/32"]', "students": '["alice"]'}


@pytest.mark.parametrize(("access", "iap"), [("iap", True), ("firewall", False), (None, False), ("IAP", False)])
def test_iap_is_the_stored_ssh_access_alone(access: str | None, iap: bool) -> None:
    values = dict(STACK_CONFIG) | ({"course-vm:sshAccess": access} if access else {})
    assert StackConfig(values).iap is iap


def test_the_settings_are_what_the_program_builds_from_every_key() -> None:
    config = StackConfig({**STACK_CONFIG, "course-vm:students": '["alice", "bob"]', "gcp:zone": "europe-west4-a"})
    settings = config.settings()
    assert (settings.project, settings.zone, settings.students) == (
        "course-project-1",
        "europe-west4-a",
        ("alice", "bob"),
    )


def test_settings_the_program_would_refuse_are_refused_all_together() -> None:
    config = StackConfig({**STACK_CONFIG, "course-vm:diskSizeGb": "tiny", "course-vm:nope": "x"})
    with pytest.raises(SettingsError) as raised:
        config.settings()
    assert [problem.split(":", 1)[0] for problem in raised.value.problems] == ["nope", "diskSizeGb"]


@pytest.mark.parametrize(
    ("stored", "path"),
    [
        (None, Path.home() / ".ssh" / "course-vm"),
        ("~/keys/course-vm", Path.home() / "keys" / "course-vm"),
        ("/srv/keys/course-vm", Path("/srv/keys/course-vm")),
        ("relative/key", None),
        ("a\nb", None),
    ],
)
def test_the_key_path_is_read_on_its_own(stored: str | None, path: Path | None) -> None:
    # Whatever else the config holds: `down` retires the keys of a stack whose roster is gone.
    broken = {"course-vm:students": "[", "course-vm:diskSizeGb": "tiny"}
    values = broken | ({"course-vm:sshKeyPath": stored} if stored is not None else {})
    assert StackConfig(values).key_path() == path


@pytest.mark.parametrize(
    ("stored", "cidrs"),
    [
        ('["203.0.113.7/32", "198.51.100.0/24"]', ["203.0.113.7/32", "198.51.100.0/24"]),
        ("203.0.113.7/32", ["203.0.113.7/32"]),
        ('"203.0.113.7/32"', ["203.0.113.7/32"]),
        ("", []),
        (None, []),
    ],
)
def test_the_stored_ranges_are_a_list_however_they_were_set(stored: str | None, cidrs: list[str]) -> None:
    values = {"course-vm:allowedSshCidrs": stored} if stored is not None else {}
    assert StackConfig(values).cidrs() == cidrs


def test_changes_set_full_keys_and_replace_own_lists() -> None:
    changed = StackConfig(dict(STACK_CONFIG)).with_changes(
        {"gcp:zone": "europe-west4-a"}, {"allowedSshCidrs": ["198.51.100.0/24", "192.0.2.0/24"]}
    )
    assert changed.values == {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west4-a",
        "course-vm:allowedSshCidrs": json.dumps(["198.51.100.0/24", "192.0.2.0/24"]),
    }
    assert changed.cidrs() == ["198.51.100.0/24", "192.0.2.0/24"]


def test_a_stack_file_gives_the_settings_pulumi_up_would(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text(
        "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
        "  course-vm:diskSizeGb: 50\n  course-vm:allowedSshCidrs:\n    - 203.0.113.7/32\n"
        "  aws:region: us-east-1\n"
    )
    s = StackConfig.from_stack_file(stack).settings()
    assert (s.project, s.disk_size_gb, s.allowed_ssh_cidrs) == ("course-project-1", 50, ("203.0.113.7/32",))


def test_stack_file_with_encrypted_setting_is_refused(tmp_path: Path) -> None:
    stack = tmp_path / "Pulumi.dev.yaml"
    stack.write_text("config:\n  course-vm:username:\n    secure: AAABAxyz\n")
    with pytest.raises(CourseVmError, match="username encrypted, but course-vm settings are not secrets"):
        StackConfig.from_stack_file(stack).settings()


def test_missing_stack_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(CourseVmError, match="Fix: `pulumi stack init dev`"):
        StackConfig.from_stack_file(tmp_path / "Pulumi.dev.yaml")
    with pytest.raises(CourseVmError, match="Fix: `pulumi stack init prod`"):
        StackConfig.from_stack_file(tmp_path / "Pulumi.prod.yaml")
