"""`python -m provisioner render`: the user-data for a stack, or one clear error and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import main
from tests.conftest import validate_cloud_config
from tests.support.cli import run_cli


def write_stack(directory: Path, name: str = "dev", extra: str = "") -> None:
    (directory / f"Pulumi.{name}.yaml").write_text(
        "config:\n  gcp:project: course-project-1\n  gcp:zone: europe-west1-b\n"
        f"  course-vm:sshKeyPath: {directory / 'key'}\n"
        "  course-vm:allowedSshCidrs:\n    - 203.0.113.7/32\n" + extra
    )


@pytest.mark.integration
def test_render_prints_valid_user_data_for_the_only_stack(tmp_path: Path) -> None:
    write_stack(tmp_path, extra="  course-vm:username: alice\n")
    result = run_cli("render", "--project-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("#cloud-config\n")
    assert '  - name: "alice"\n' in result.stdout
    public = " ".join((tmp_path / "key.pub").read_text().split()[:2])
    assert public in result.stdout
    validate_cloud_config(result.stdout, tmp_path)


def test_render_of_a_class_needs_the_student(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:students:\n    - alice\n    - bob\n")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert "the stack is a class: pass --student NAME (one of alice, bob)" in capsys.readouterr().err
    assert main(["render", "--project-dir", str(tmp_path), "--student", "carol"]) == 2
    assert "--student carol: not on the stack's roster. Fix: one of alice, bob" in capsys.readouterr().err
    assert main(["render", "--project-dir", str(tmp_path), "--student", "bob"]) == 0
    [user] = yaml.safe_load(capsys.readouterr().out)["users"]
    assert user["name"] == "bob"
    assert user["ssh_authorized_keys"] == [" ".join((tmp_path / "key-bob.pub").read_text().split()[:2])]


def test_render_picks_the_named_stack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev", extra="  course-vm:username: alice\n")
    write_stack(tmp_path, "prod", extra="  course-vm:username: bob\n")
    assert main(["render", "--project-dir", str(tmp_path), "--stack", "prod"]) == 0
    assert '  - name: "bob"\n' in capsys.readouterr().out


def test_render_with_several_stacks_asks_which(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, "dev")
    write_stack(tmp_path, "prod")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "course-vm: several stacks (Pulumi.dev.yaml, Pulumi.prod.yaml) and no --stack. Fix: pass --stack NAME\n"
    )


def test_render_without_a_stack_says_how_to_make_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
    assert "Fix: `pulumi stack init dev`" in capsys.readouterr().err


def test_render_reports_every_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_stack(tmp_path, extra="  course-vm:diskSizeGb: 5\n  course-vm:username: root\n")
    assert main(["render", "--project-dir", str(tmp_path)]) == 2
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
    assert main(["render", "--project-dir", str(tmp_path), "--student", "alice"]) == 0
    [user] = yaml.safe_load(capsys.readouterr().out)["users"]
    # No pair is generated for alice: the instructor's own sshKeyPath logs in beside her key.
    assert not (tmp_path / "key-alice").exists()
    assert user["ssh_authorized_keys"] == [own, " ".join((tmp_path / "key.pub").read_text().split()[:2])]
    assert (tmp_path / "key.pub").read_text().endswith(" instructor@course-vm\n")
