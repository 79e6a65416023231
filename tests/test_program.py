"""The Pulumi program (__main__.py) under the SDK's mocks: it reads every key of its config namespace."""

from __future__ import annotations

import pulumi
import pytest

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
