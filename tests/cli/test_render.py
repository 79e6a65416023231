"""`python -m provisioner render`: the user-data for a stack (its stack file in the project folder, which the
`project_folder` fixture makes the test's own), or one clear error and exit 2; no Pulumi CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import main
from provisioner.paths import project_dir
from tests.conftest import validate_cloud_config
from tests.support.cli import run_cli


def write_stack(directory: Path, name: str = "dev", extra: str = "") -> None:
    project = project_dir()
    project.mkdir(parents=True, exist_ok=True)
    (project / f"Pulumi.{name}.yaml").write_text(
        "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
        f"  course-vm:sshKeyPath: {directory / 'key'}\n"
        "  course-vm:allowedSshCidrs:\n    - 203.0.113.7/32\n" + extra
    )


@pytest.mark.integration
def test_render_prints_valid_user_data_for_stack_dev(tmp_path: Path) -> None:
    write_stack(tmp_path, extra="  course-vm:username: alice\n")
    result = run_cli("render")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#cloud-config\n")
    assert '  - name: "alice"\n' in result.stdout
    public = " ".join((tmp_path / "key.pub").read_text().split()[:2])
    assert public in result.stdout
    validate_cloud_config(result.stdout, tmp_path)


def test_render_of_a_class_needs_the_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:students:\n    - alice\n    - bob\n")
    assert main(["render"]) == 2
    assert "the stack is a class: pass --student NAME (one of alice, bob)" in capsys.readouterr().err
    assert main(["render", "--student", "carol"]) == 2
    assert "--student carol: not on the stack's roster. Fix: one of alice, bob" in capsys.readouterr().err
    assert main(["render", "--student", "bob"]) == 0
    [user] = yaml.safe_load(capsys.readouterr().out)["users"]
    assert user["name"] == "bob"
    assert user["ssh_authorized_keys"] == [" ".join((tmp_path / "key-bob.pub").read_text().split()[:2])]


def test_render_picks_the_named_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev", extra="  course-vm:username: alice\n")
    write_stack(tmp_path, "prod", extra="  course-vm:username: bob\n")
    assert main(["render", "--stack", "prod"]) == 0
    assert '  - name: "bob"\n' in capsys.readouterr().out


def test_render_without_a_stack_renders_the_defaults_and_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["render", "--set", "username=carol", "--set", "sshKeyPath=keys/k"]) == 0
    captured = capsys.readouterr()
    assert '  - name: "carol"\n' in captured.out
    assert f"stack dev has no settings in {project_dir()} yet" in captured.err
    # A relative path is the working directory's.
    assert " ".join((tmp_path / "keys" / "k.pub").read_text().split()[:2]) in captured.out


def test_render_without_stack_renders_dev_as_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev", extra="  course-vm:username: alice\n")
    write_stack(tmp_path, "prod", extra="  course-vm:username: bob\n")
    assert main(["render"]) == 0
    assert '  - name: "alice"\n' in capsys.readouterr().out


def test_render_set_goes_over_the_stack_and_its_problems_are_set_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stack(tmp_path, extra="  course-vm:username: alice\n")
    assert main(["render", "--set", "username=bob"]) == 0
    assert '  - name: "bob"\n' in capsys.readouterr().out
    assert main(["render", "--set", "diskSizeGb=5", "--set", "nosuch=1"]) == 2
    err = capsys.readouterr().err
    assert "diskSizeGb: got '5', but" in err
    assert "Fix: `course-vm up --set diskSizeGb=30`" in err  # the stack's settings are fixed with `up`
    assert "nosuch: got '1', but course-vm has no such setting" in err


def test_render_reports_every_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:diskSizeGb: 5\n  course-vm:username: root\n")
    assert main(["render"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("course-vm settings: 2 problems, nothing was created:\n")
    assert "  - diskSizeGb: got 5," in err
    assert "  - username: got 'root'," in err
    assert not (tmp_path / "key").exists()


def test_render_of_a_student_with_their_own_key_authorises_it_and_the_instructors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
    (tmp_path / "roster.csv").write_text(f"name,sshPublicKey\nalice,{own} alice@laptop\n")
    write_stack(tmp_path, extra=f"  course-vm:studentsCsv: {tmp_path / 'roster.csv'}\n")
    assert main(["render", "--student", "alice"]) == 0
    [user] = yaml.safe_load(capsys.readouterr().out)["users"]
    # No pair is generated for alice: the instructor's own sshKeyPath logs in beside her key.
    assert not (tmp_path / "key-alice").exists()
    assert user["ssh_authorized_keys"] == [own, " ".join((tmp_path / "key.pub").read_text().split()[:2])]
    assert (tmp_path / "key.pub").read_text().endswith(" instructor@course-vm\n")


def test_render_set_with_nothing_after_the_equals_sign_renders_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_stack(tmp_path, extra="  course-vm:username: alice\n")
    assert main(["render", "--set", "username="]) == 0  # as `up --set username=` would leave the stack
    assert '  - name: "student"\n' in capsys.readouterr().out
