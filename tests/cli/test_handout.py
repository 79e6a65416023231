"""`course-vm handout`: a folder per student from a class stack's outputs, and one clear error for bad input."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioner.errors import ExitStatus
from tests.conftest import require_tool, wait_for_port
from tests.support.cli import in_this_process, run_cli
from tests.support.iap_relay import real_gcloud_tunnels
from tests.support.openssh import resolved_by
from tests.support.outputs import PROJECT, ZONE, class_outputs, one_vm, vm_outputs
from tests.support.pulumi_state import exported_deployment
from tests.support.sshd import Sshd, as_user, local_user
from tests.support.stand_in_pulumi import stand_in_pulumi


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


HOST_KEYS = {"alice": public_key(), "bob": public_key()}
BOBS_OWN_KEY = public_key()
IPS = {"alice": "34.78.1.2", "bob": "34.78.9.9"}


def two_students(keys: Path, **changes: Mapping[str, Any]) -> dict[str, Any]:
    """A class stack's outputs: alice's key was generated (KEYS/course-vm-alice), bob brought his own;
    CHANGES: a student's changes to what the output builder (vm_outputs) makes of their VM."""
    private = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    keys.mkdir(exist_ok=True)
    (keys / "course-vm-alice").write_bytes(private)
    (keys / "course-vm-alice").chmod(0o400)
    (keys / "course-vm-alice.stacks").write_text("dev alice\n")  # as `up` of stack dev claimed it
    (keys / "course-vm").write_text("the instructor's private key\n")
    own: dict[str, dict[str, Any]] = {
        "alice": {},
        "bob": {"identityFile": str(keys / "course-vm"), "studentPublicKey": BOBS_OWN_KEY},
    }
    vms = {
        name: vm_outputs(name, **{"ip": IPS[name], "keys": keys, "host_keys": (HOST_KEYS[name],), **own[name],
                                  **changes.get(name, {})})
        for name in ("alice", "bob")
    }  # fmt: skip
    return class_outputs(vms=vms)


def handout(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli("handout", *args, env=env)


def dev_stack(tmp_path: Path, outputs: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of a stand-in Pulumi CLI whose stack dev has OUTPUTS (default: two_students')."""
    stack = two_students(tmp_path / "keys") if outputs is None else outputs
    return stand_in_pulumi(tmp_path, {"dev": stack}).environment


def test_each_student_gets_a_folder_with_their_own_things_only(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    out = tmp_path / "handouts"
    result = handout("--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        f"alice: {out}/alice (README.txt: `ssh -F ~/.ssh/course-vm-alice.config course-vm-alice`)\n"
        f"bob: {out}/bob (README.txt: `ssh -F ~/.ssh/course-vm-bob.config course-vm-bob`)\n"
    )
    assert sorted(p.name for p in (out / "alice").iterdir()) == [
        "README.txt",
        "course-vm-alice",
        "course-vm-alice.config",
        "course-vm-alice.known_hosts",
        "course-vm-alice.pub",
    ]
    assert (out / "alice" / "course-vm-alice").read_bytes() == (tmp_path / "keys" / "course-vm-alice").read_bytes()
    assert stat.S_IMODE((out / "alice" / "course-vm-alice").stat().st_mode) == 0o400
    # Bob brought his own key: the instructor's key, which logs in to his VM too, is never handed out.
    assert sorted(p.name for p in (out / "bob").iterdir()) == [
        "README.txt",
        "course-vm-bob.config",
        "course-vm-bob.known_hosts",
    ]
    for me, other in (("alice", "bob"), ("bob", "alice")):
        text = b"".join(p.read_bytes() for p in (out / me).iterdir())
        for theirs in (other, IPS[other], HOST_KEYS[other].split()[1], "the instructor's private key", str(tmp_path)):
            assert theirs.encode() not in text, f"{me}'s folder holds {theirs!r}"
        options = resolved_by(out / me / f"course-vm-{me}.config", f"course-vm-{me}")
        assert (options["hostname"], options["user"]) == (IPS[me], me)
        assert options["userknownhostsfile"].endswith(f"/.ssh/course-vm-{me}.known_hosts")
        assert (options["identityfile"] == "~/.ssh/course-vm-alice") == (me == "alice")


@pytest.mark.integration
def test_a_student_who_follows_the_readme_logs_in_through_the_iap_tunnel_with_openssh(
    tmp_path: Path, sshd: Sshd
) -> None:
    """alice's hand-out of an iap VM, put where its README says and used as it says by a student: a throwaway local
    user (OpenSSH expands `~` from the passwd entry, never $HOME) running the real ssh, with Google's real gcloud as
    its ProxyCommand, through the IAP relay stand-in to the tests' sshd as the VM; `ssh -F`, then the Include line."""
    iap = {"iap": True, "username": sshd.user, "host_keys": (str(sshd.host_key),)}
    instance = vm_outputs("alice", iap=True)["instanceName"]
    env = dev_stack(tmp_path, two_students(tmp_path / "keys", alice=iap))
    result = handout("--out", str(tmp_path / "out"), "--student", "alice", env=env)
    assert result.returncode == 0, result.stderr
    given = tmp_path / "out" / "alice"
    (sshd.base / "authorized_keys").write_bytes((given / "course-vm-alice.pub").read_bytes())  # as `up` did
    sshd.start()
    wait_for_port(sshd.port)
    readme = (given / "README.txt").read_text()
    posix = readme.split("Linux and macOS: in a terminal, in this folder, run:\n", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in posix.splitlines()]
    include = "Include course-vm-alice.config"
    assert f"\n  {include}\n" in readme
    base = Path(tempfile.mkdtemp(prefix="course-vm-student-"))
    base.chmod(0o755)  # the student goes through it to their home and to the gcloud wrapper
    try:
        with real_gcloud_tunnels(base / "iap", sshd.port) as tunnels, local_user(base / "home") as student:
            home = Path(student.pw_dir)
            shutil.copytree(given, home / "alice")  # as the student got it
            subprocess.run(["chown", "-R", f"{student.pw_uid}:{student.pw_gid}", str(home)], check=True)
            pids = tunnels.gcloud.bin / "pids"
            pids.touch()
            os.chown(pids, student.pw_uid, student.pw_gid)  # the wrapper records each run, as the student
            # The student's own gcloud settings (~/.config/gcloud), its login stood in for by the token.
            env = {**tunnels.environment("/usr/local/bin:/usr/bin:/bin"), "HOME": str(home), "USER": student.pw_name}
            del env["CLOUDSDK_CONFIG"]
            login, included = f"{commands[-1]} id -un", f"echo '{include}' > ~/.ssh/config && ssh course-vm-alice id"
            script = " && ".join([*commands[:-1], login, included])
            done = subprocess.run(
                [require_tool("bash"), "-c", script], cwd=home / "alice", env=env, stdin=subprocess.DEVNULL,
                capture_output=True, text=True, timeout=120, check=False, **as_user(student),
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            assert done.stdout.splitlines()[0] == sshd.user and f"({sshd.user})" in done.stdout, done.stdout
            assert (home / ".config" / "gcloud").is_dir(), "gcloud ran as the student, with their own settings"
            assert len(tunnels.gcloud.pids()) == 2
            assert [connect.query for connect in tunnels.relay.connects] == 2 * [
                {"project": PROJECT, "zone": ZONE, "instance": instance, "interface": "nic0", "port": "22",
                 "newWebsocket": "True"}
            ]  # fmt: skip
            tunnels.check()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_only_the_named_students(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    result = handout("--out", str(tmp_path / "out"), "--student", "bob", env=env)
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bob"]


def test_an_unknown_student_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    result = handout("--out", str(tmp_path / "out"), "--student", "carol", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("course-vm: no student carol among the stack's VMs. Fix: one of alice, bob (")
    assert not (tmp_path / "out").exists()


def test_a_stack_that_does_not_exist_is_an_error_not_a_new_stack(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    result = handout("--stack", "prod", "--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: there is no stack prod (the stacks that exist: dev); nothing was created or deleted. "
        "Fix: name one of them with --stack\n"
    )
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def test_a_stack_that_is_no_class_gets_no_handout(tmp_path: Path) -> None:
    result = handout("--out", str(tmp_path / "out"), env=dev_stack(tmp_path, one_vm()))
    assert result.returncode == 2
    assert result.stderr.startswith("course-vm: stack dev is not a class (it has no `students`)")


def test_an_existing_folder_is_replaced_only_after_a_yes(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    out = tmp_path / "out"
    (out / "alice").mkdir(parents=True)
    (out / "alice" / "notes.txt").write_text("the instructor's notes")
    result = handout("--out", str(out), env=env)
    assert result.returncode == ExitStatus.DECLINED
    assert result.stdout == f"These folders exist and would be replaced: {out}/alice\n"
    assert result.stderr == (
        "course-vm: nothing was changed: this needs a yes, and there is no terminal to ask on. "
        "Fix: run it again with --yes once the preview above is what you want\n"
    )
    assert [p.name for p in out.iterdir()] == ["alice"]
    assert [p.name for p in (out / "alice").iterdir()] == ["notes.txt"]
    result = handout("--out", str(out), "--yes", env=env)
    assert result.returncode == 0, result.stderr
    assert not (out / "alice" / "notes.txt").exists() and (out / "alice" / "course-vm-alice").exists()


def test_a_vm_without_pinned_host_keys_is_one_line_and_the_others_get_their_folders(tmp_path: Path) -> None:
    outputs = two_students(tmp_path / "keys", alice={"host_keys": None})
    result = handout("--out", str(tmp_path / "out"), env=dev_stack(tmp_path, outputs))
    assert result.returncode == 2
    assert result.stderr.startswith(
        "course-vm: 1 of 2 folders not written:\n"
        "alice: the stack has no pinned host keys for course-vm-alice (verify=false, or `pulumi up` could not "
        "verify the VM)"
    )
    assert result.stderr.count("\n") == 2 and "Traceback" not in result.stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bob"]


def test_a_key_named_like_the_students_that_up_never_claimed_is_never_handed_out(tmp_path: Path) -> None:
    # Tampered state: alice's identityFile names another key of the right shape, ~/.ssh/work-alice.
    keys = tmp_path / "keys"
    (tmp_path / "ssh").mkdir()
    (tmp_path / "ssh" / "work-alice").write_text("the instructor's private key for work\n")
    outputs = two_students(keys, alice={"identityFile": str(tmp_path / "ssh" / "work-alice")})
    result = handout("--out", str(tmp_path / "out"), env=dev_stack(tmp_path, outputs))
    assert result.returncode == 2
    assert f"alice: {tmp_path}/ssh/work-alice is not a key `course-vm up` made for student alice of stack dev" in (
        result.stderr
    )
    assert all(b"for work" not in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_a_key_course_vm_did_not_generate_for_the_student_is_never_handed_out(tmp_path: Path) -> None:
    # An old stack's outputs, or tampered ones: alice's identityFile is the instructor's own key.
    keys = tmp_path / "keys"
    outputs = two_students(keys, alice={"identityFile": str(keys / "course-vm")})
    result = handout("--out", str(tmp_path / "out"), env=dev_stack(tmp_path, outputs))
    assert result.returncode == 2
    assert f"alice: the stack's key for this student ('{keys}/course-vm') is not one course-vm generated" in (
        result.stderr
    )
    assert not (tmp_path / "out" / "alice").exists()
    assert all(
        b"the instructor's private key" not in p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()
    )


def test_a_missing_generated_key_is_that_students_error(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    outputs = two_students(keys)
    os.remove(keys / "course-vm-alice")
    result = handout("--out", str(tmp_path / "out"), env=dev_stack(tmp_path, outputs))
    assert result.returncode == 2
    assert f"alice: cannot read their private key {keys}/course-vm-alice (No such file or directory)" in result.stderr


def test_a_file_where_a_students_folder_goes_is_that_students_error(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "alice").write_text("not a folder")
    result = handout("--out", str(out), env=env)
    assert result.returncode == 2
    assert f"alice: {out}/alice is not a folder. Fix: move it away, or pass another --out" in result.stderr
    assert (out / "alice").read_text() == "not a folder" and (out / "bob").is_dir()


def test_answering_no_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioner.cli import handout as command
    from provisioner.cli.main import main

    in_this_process(monkeypatch, dev_stack(tmp_path))
    asked: list[str] = []

    def say_no(question: str, *, assume_yes: bool) -> bool:
        asked.append(question)
        return assume_yes

    monkeypatch.setattr(command, "confirm", say_no)
    out = tmp_path / "out"
    (out / "bob").mkdir(parents=True)
    (out / "bob" / "notes.txt").write_text("kept")
    assert main(["handout", "--out", str(out)]) == ExitStatus.DECLINED
    assert asked == ["Replace them?"]
    assert capsys.readouterr().err == (
        "course-vm: not confirmed: no folder was written or replaced. "
        "Fix: run it again and answer y, or add --yes, or pass another --out\n"
    )
    assert [p.name for p in out.iterdir()] == ["bob"] and [p.name for p in (out / "bob").iterdir()] == ["notes.txt"]


def test_after_an_up_that_failed_for_one_student_the_others_get_their_folders(tmp_path: Path) -> None:
    # A first `up` whose update failed at carol's verification: Pulumi kept no stack outputs, and its
    # state holds alice's and bob's VMs as they registered them.
    state = exported_deployment("dev", two_students(tmp_path / "keys"), root={}, unfinished=("carol",))
    env = stand_in_pulumi(tmp_path, {"dev": {}}, deployments={"dev": state}).environment
    out = tmp_path / "handouts"
    result = handout("--stack", "dev", "--out", str(out), env=env)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["alice", "bob"]
    options = resolved_by(out / "alice" / "course-vm-alice.config", "course-vm-alice")
    assert options["hostname"] == IPS["alice"]


def test_a_student_named_dot_dot_in_the_outputs_replaces_nothing_above_out(tmp_path: Path) -> None:
    # Someone who can write the stack's state names a student `..`: its folder would be --out's parent.
    home = tmp_path / "instructor-home"
    out = home / "handouts"
    out.mkdir(parents=True)
    (home / "work.txt").write_text("the instructor's work\n")
    outputs = two_students(tmp_path / "keys")
    outputs["students"][".."] = outputs["students"].pop("bob")
    result = handout("--out", str(out), "--yes", env=dev_stack(tmp_path, outputs))
    assert result.returncode == 2
    assert result.stderr.startswith("course-vm: the stack's outputs name a student '..', which is no student's name")
    assert result.stderr.count("\n") == 1
    assert (home / "work.txt").read_text() == "the instructor's work\n"
    assert list(out.iterdir()) == []


def test_an_out_under_a_file_is_one_line_per_student_not_a_traceback(tmp_path: Path) -> None:
    env = dev_stack(tmp_path)
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "handouts"
    result = handout("--out", str(out), env=env)
    assert result.returncode == 2
    fix = (
        "Fix: make --out a folder you can write to (not under a file; on Windows, close what holds a file of "
        "it open), then run `course-vm handout` again"
    )
    assert result.stderr == (
        "course-vm: 2 of 2 folders not written:\n"
        f"alice: cannot write {out}/alice (Not a directory). {fix}\n"
        f"bob: cannot write {out}/bob (Not a directory). {fix}\n"
    )


def test_a_folder_that_cannot_be_written_keeps_no_other_student_from_theirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As on Windows when a file of alice's old folder is open in another program: replacing it fails.
    from provisioner.cli.main import main

    in_this_process(monkeypatch, dev_stack(tmp_path))
    real_replace = os.replace

    def held(source: Path, target: Path) -> None:
        if Path(source).name == "alice":
            raise PermissionError(13, "Permission denied", str(source))
        real_replace(source, target)

    monkeypatch.setattr("provisioner.access.handout.os.replace", held)
    out = tmp_path / "out"
    (out / "alice").mkdir(parents=True)
    (out / "alice" / "course-vm-alice.config").write_text("old")
    assert main(["handout", "--out", str(out), "--yes"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith(
        f"course-vm: 1 of 2 folders not written:\nalice: cannot write {out}/alice (Permission denied). Fix: "
    )
    assert "bob: " in captured.out and (out / "bob" / "course-vm-bob.config").is_file()
    assert (out / "alice" / "course-vm-alice.config").read_text() == "old"
    assert sorted(p.name for p in out.iterdir()) == ["alice", "bob"], "no temporary folder is left"


def test_a_generated_key_another_stack_claims_too_is_never_handed_out(tmp_path: Path) -> None:
    # Two stacks, one alex each, one key between them (made before course-vm refused that): the key
    # would log in to both VMs, so neither alex gets it.
    keys = tmp_path / "keys"
    env = dev_stack(tmp_path)
    (keys / "course-vm-alice.stacks").write_text("dev alice\nsection-b alice\n")
    result = handout("--out", str(tmp_path / "out"), env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "course-vm: 1 of 2 folders not written:\n"
        f"alice: {keys}/course-vm-alice is student alice's key of stack section-b too, and one key would log in "
        "to both stacks' VMs, so it is not handed out. Fix: pulumi config set --stack dev sshKeyPath "
        "~/.ssh/course-vm-dev (a path of this stack's own; it replaces the VMs), run `course-vm up --stack dev`, "
        "then hand out again\n"
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["bob"]
    (keys / "course-vm-alice.stacks").write_text("dev alice\n")
    assert handout("--out", str(tmp_path / "out"), "--yes", env=env).returncode == 0


def test_handout_of_a_class_whose_first_up_finished_for_no_student_says_there_is_nothing_yet(tmp_path: Path) -> None:
    # The StudentVms are in the state, without outputs: no VM finished, so there is nothing to hand out.
    state = exported_deployment("dev", {"project": PROJECT}, root={}, unfinished=("alice", "bob"))
    pulumi = stand_in_pulumi(tmp_path, {"dev": {}}, deployments={"dev": state})
    result = run_cli("handout", "--out", str(tmp_path / "out"), env=pulumi.environment)
    assert result.returncode == 2, result.stdout
    assert result.stderr == (
        "course-vm: the stack has no ip, username, identityFile output. Fix: `course-vm up --stack dev` first\n"
    )
