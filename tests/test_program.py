"""The Pulumi program (__main__.py) under the SDK's mocks: every key of its namespace read, its problems handed over."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pulumi
import pytest

from provisioner.errors import SettingsError
from provisioner.recipe.problems import as_given, error_from_json, records_of
from provisioner.recipe.settings import settings_from_pulumi
from provisioner.stack import PROBLEMS_VARIABLE
from tests.support.pulumi_harness import run_program

CONFIG = {
    "gcp:project": "course-project-1",
    "gcp:zone": "europe-west1-b",
    "course-vm:allowedSshCidrs": '["203.0.113.7/32"]',
}


def test_a_misspelt_key_set_with_pulumi_config_is_refused_before_anything_is_created(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(pulumi.RunError) as raised:
        run_program({**CONFIG, "course-vm:machinetype": "n2-standard-8", "course-vm:verify": "maybe"})
    message = str(raised.value)
    assert message.startswith("course-vm settings: 2 problems, nothing was created:")
    assert "machinetype: got 'n2-standard-8', but course-vm has no such setting (did you mean machineType?)" in message
    assert "verify: got 'maybe'" in message


def test_keys_from_the_engines_environment_are_read_too(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    # The language host may hand the config over as the PULUMI_CONFIG bag instead of set_all_config.
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PULUMI_CONFIG", '{"course-vm:spot_instance": "true"}')
    with pytest.raises(pulumi.RunError, match=r"spot_instance: got 'true', but course-vm has no such setting"):
        run_program(CONFIG)


def test_the_settings_problems_are_handed_to_course_vm_as_records(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # course-vm names a file of its own (driver/session.py); it words the fixes itself, scraping nothing.
    monkeypatch.setenv("HOME", str(tmp_path))
    handed = tmp_path / "private" / "problems.json"
    handed.parent.mkdir()
    monkeypatch.setenv(PROBLEMS_VARIABLE, str(handed))
    bad = {**CONFIG, "course-vm:machinetype": "n2-standard-8", "course-vm:verify": "maybe"}
    with pytest.raises(pulumi.RunError) as raised:
        run_program(bad)
    taken = error_from_json(json.loads(handed.read_text()))
    assert taken.records and len(taken.records) == len(taken.problems) == 2
    assert str(raised.value) == str(taken), "the same problems the engine shows, as data"
    assert stat.S_IMODE(handed.stat().st_mode) == 0o600
    own = {"machinetype": "n2-standard-8", "verify": "maybe", "allowedSshCidrs": '["203.0.113.7/32"]'}
    with pytest.raises(SettingsError) as direct:
        settings_from_pulumi(own, {"project": "course-project-1", "zone": "europe-west1-b"}.get)
    assert as_given(taken) == records_of(direct.value)


@pytest.mark.parametrize("planted", ["file", "symlink"])
def test_a_name_already_there_is_never_written_through(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, planted: str
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    handed = tmp_path / "problems.json"
    if planted == "symlink":
        handed.symlink_to(victim)
    else:
        handed.write_text("precious\n")
    monkeypatch.setenv(PROBLEMS_VARIABLE, str(handed))
    with pytest.raises(pulumi.RunError, match="verify: got 'maybe'"):
        run_program({**CONFIG, "course-vm:verify": "maybe"})
    assert victim.read_text() == "precious\n"
    assert handed.read_text() == "precious\n"
