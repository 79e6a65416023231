"""`python -m provisioner local ...`: what is refused before anything boots (the VM itself: tests/local/)."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.cli.main import main


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
