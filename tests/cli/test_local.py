"""`python -m provisioner local ...`: what is refused before anything boots (the VM itself: tests/local/), and
`local metadata-server` run as a user runs it."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from pathlib import Path

import pytest

from provisioner.cli.main import main
from provisioner.local import vm as local_vm
from tests.support.cli import started_cli
from tests.support.fixes import assert_fixes_are_valid


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "username"], "--set 'username': expected KEY=VALUE, e.g. --set username=alice"),
        (["--set", "username=root"], "username: got 'root'"),
        (["--set", "username=root"], "Fix: --set username=student\n"),
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


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--attributes {path}: cannot read it (No such file or directory)"),
        ("{not json", "--attributes {path}: not JSON (Expecting property name"),
        ('["user-data"]', "--attributes {path}: expected a JSON object of names and string values, got a list"),
        (
            '{"user-data": "#cloud-config", "port": 22, "enable-oslogin": false, "ssh-keys": null}',
            "--attributes {path}: every value must be a string, as in GCE's metadata: "
            "'port' is a number; 'enable-oslogin' is true/false; 'ssh-keys' is null. "
            'Fix: quote them, e.g. "enable-oslogin": "FALSE"',
        ),
    ],
)
def test_metadata_server_refuses_bad_attributes(
    content: str | None, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "attributes.json"
    if content is not None:
        path.write_text(content)
    assert main(["local", "metadata-server", "--attributes", str(path)]) == 2
    assert message.format(path=path) in capsys.readouterr().err


def test_metadata_server_serves_until_ctrl_c(tmp_path: Path) -> None:
    attributes = tmp_path / "attributes.json"
    attributes.write_text(json.dumps({"user-data": "#cloud-config\n", "enable-guest-attributes": "TRUE"}))
    process = started_cli("local", "metadata-server", "--attributes", str(attributes), env=os.environ)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url), url
        request = urllib.request.Request(  # noqa: S310 (http to the server under test)
            url + "/computeMetadata/v1/instance/attributes/user-data", headers={"Metadata-Flavor": "Google"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            assert response.read() == b"#cloud-config\n"
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, err
    assert out == ""
    assert "Traceback" not in err
    assert "GET /computeMetadata/v1/instance/attributes/user-data" in err


BAD_NAMES = ["/x", "..", "", ".", "a,b", "Alice", "a/b", "-a", "1a", "a" * 64, "a\nb"]


@pytest.fixture
def two_vms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A local VM directory and a directory beside the state that `local` must never touch."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    vm = tmp_path / "state" / "course-vm" / "local" / "other"
    vm.mkdir(parents=True)
    (vm / "vm.json").write_text("{}")
    sibling = tmp_path / "x"
    sibling.mkdir()
    (sibling / "work.txt").write_text("the student's work")
    return vm, sibling


@pytest.mark.parametrize("command", ["down", "up", "check", "ssh"])
@pytest.mark.parametrize("name", [*BAD_NAMES, "{sibling}"])
def test_a_bad_vm_name_is_refused_before_any_file_is_touched(
    command: str, name: str, two_vms: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    vm, sibling = two_vms
    name = name.format(sibling=sibling)
    status = main(["local", command, f"--name={name}"])
    assert (vm / "vm.json").is_file() and (sibling / "work.txt").read_text() == "the student's work"
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"course-vm: local VM name {name!r} " in err
    assert "Fix: " in err and "Traceback" not in err
    assert not (sibling.parent / "home").exists() and not (sibling.parent / "cache").exists()
    assert sorted(p.name for p in vm.parent.parent.iterdir()) == ["local"]


def test_local_list_shows_only_vms_with_a_good_name(
    two_vms: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    vm, _ = two_vms
    (vm.parent / "Bad,Name").mkdir()
    (vm.parent / "Bad,Name" / "vm.json").write_text("{}")
    assert local_vm.names() == ["other"]


def test_local_list_of_no_vms_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert main(["local", "list"]) == 0
    out, err = capsys.readouterr()
    assert (out, err) == ("no local VMs. Create one: course-vm local up\n", "")
    assert_fixes_are_valid(["local", "list"], out.replace("Create one:", "Fix:"))  # the command it names parses
    assert not (tmp_path / "state").exists(), "listing creates nothing"
