"""A student's hand-out: its files and modes, what OpenSSH makes of its config, and its README's commands."""

from __future__ import annotations

import os
import pwd
import re
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioner.access.handout import (
    README,
    Handout,
    HandoutError,
    build_handout,
    fingerprint,
    own_out_folder,
    write_handout,
)
from provisioner.stack import VmOutputs
from tests.conftest import require_tool
from tests.support.openssh import resolved_by
from tests.support.outputs import HOST_KEY, IAP, vm_outputs

ALIAS = "course-vm-alice"
OWN_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKeyOfTheStudentAAAAAAAAAAAAAAAAAAAAAAAAA"


def alices_vm(**changes: Any) -> VmOutputs:
    """Alice's VM as the stack's outputs describe it (at 34.78.1.2, her key in the instructor's
    /home/instructor/.ssh), CHANGES to the output builder's on top."""
    return VmOutputs.parse(vm_outputs("alice", **{"ip": "34.78.1.2", "keys": "/home/instructor/.ssh", **changes}))


VM = alices_vm()
OWNS_HER_KEY = alices_vm(studentPublicKey=OWN_KEY)


def private_key() -> bytes:
    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )


def generated(tmp_path: Path) -> tuple[Path, bytes]:
    key = private_key()
    folder = tmp_path / "out" / "alice"
    write_handout(folder, build_handout("alice", ALIAS, VM, key), windows=False)
    return folder, key


def own(tmp_path: Path) -> Path:
    folder = tmp_path / "out" / "alice"
    write_handout(folder, build_handout("alice", ALIAS, OWNS_HER_KEY, None), windows=False)
    return folder


def modes(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


def students_home() -> str:
    # ssh expands `~` to the passwd entry's home, not $HOME.
    return pwd.getpwuid(os.getuid()).pw_dir


def test_a_generated_keys_folder_holds_the_key_the_pins_the_entry_and_a_readme(tmp_path: Path) -> None:
    folder, key = generated(tmp_path)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert modes(folder) == {
        ALIAS: 0o400,
        f"{ALIAS}.pub": 0o644,
        f"{ALIAS}.config": 0o644,
        f"{ALIAS}.known_hosts": 0o644,
        README: 0o644,
    }
    assert (folder / ALIAS).read_bytes() == key
    derived = subprocess.run(
        [require_tool("ssh-keygen"), "-y", "-f", str(folder / ALIAS)], capture_output=True, text=True, check=True
    ).stdout
    assert (folder / f"{ALIAS}.pub").read_text().split()[:2] == derived.split()[:2]
    assert (folder / f"{ALIAS}.known_hosts").read_text() == f"34.78.1.2 {HOST_KEY}\n"
    # Nothing of the instructor's machine: no path of theirs in any file.
    assert not any(b"/home/instructor" in p.read_bytes() for p in folder.iterdir())


def test_openssh_resolves_a_generated_keys_entry_to_the_files_in_the_students_ssh_folder(tmp_path: Path) -> None:
    folder, _ = generated(tmp_path)
    options = resolved_by(folder / f"{ALIAS}.config", ALIAS)
    assert (options["hostname"], options["user"], options["port"]) == ("34.78.1.2", "alice", "22")
    assert options["identityfile"] == f"~/.ssh/{ALIAS}"
    assert options["identitiesonly"] == "yes"
    assert options["userknownhostsfile"] == f"{students_home()}/.ssh/{ALIAS}.known_hosts"
    assert options["stricthostkeychecking"] == "true"


def test_a_student_with_their_own_key_gets_no_key_and_an_entry_that_offers_their_own(tmp_path: Path) -> None:
    folder = own(tmp_path)
    assert modes(folder) == {f"{ALIAS}.config": 0o644, f"{ALIAS}.known_hosts": 0o644, README: 0o644}
    options = resolved_by(folder / f"{ALIAS}.config", ALIAS)
    assert (options["hostname"], options["user"]) == ("34.78.1.2", "alice")
    # OpenSSH's own defaults (~/.ssh/id_ed25519 and the others), no key of course-vm's.
    assert f"~/.ssh/{ALIAS}" not in options["identityfile"] and "~/.ssh/id_ed25519" in options["identityfile"]
    assert options["identitiesonly"] == "no"
    assert options["userknownhostsfile"] == f"{students_home()}/.ssh/{ALIAS}.known_hosts"
    assert options["stricthostkeychecking"] == "true"
    assert fingerprint(OWN_KEY) in (folder / README).read_text()
    assert "/home/instructor" not in "".join(p.read_text() for p in folder.iterdir())


def posix_commands(readme: str) -> list[str]:
    section = readme.split("Linux and macOS: in a terminal, in this folder, run:\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


@pytest.mark.parametrize("kind", ["generated", "own"])
def test_the_readmes_commands_put_every_file_where_the_entry_looks_for_it(tmp_path: Path, kind: str) -> None:
    folder = generated(tmp_path)[0] if kind == "generated" else own(tmp_path)
    config = (folder / f"{ALIAS}.config").read_text()
    commands = posix_commands((folder / README).read_text())
    assert commands[-1] == f"ssh -F ~/.ssh/{ALIAS}.config {ALIAS}"
    home = tmp_path / "student's home"
    home.mkdir()
    # As a student runs them, twice (the second time over the first copy), all but the ssh itself.
    for _ in range(2):
        script = " && ".join(commands[:-1])
        done = subprocess.run(
            [require_tool("bash"), "-c", script], cwd=folder, env={**os.environ, "HOME": str(home)}, check=False
        )
        assert done.returncode == 0
    named = re.findall(r"~/\.ssh/\S+", config)
    assert named and all((home / ".ssh" / path.removeprefix("~/.ssh/")).is_file() for path in named)
    assert stat.S_IMODE((home / ".ssh").stat().st_mode) == 0o700
    if kind == "generated":
        assert stat.S_IMODE((home / ".ssh" / ALIAS).stat().st_mode) == 0o600


def test_the_readme_says_how_to_connect_from_windows(tmp_path: Path) -> None:
    readme = (generated(tmp_path)[0] / README).read_text()
    assert f'Copy-Item -Force {ALIAS}.config, {ALIAS}.known_hosts, {ALIAS}, {ALIAS}.pub "$HOME\\.ssh\\"' in readme
    assert f'icacls "$HOME\\.ssh\\{ALIAS}" /inheritance:r /grant:r "${{env:USERDOMAIN}}\\${{env:USERNAME}}:F"' in readme
    assert f'ssh -F "$HOME\\.ssh\\{ALIAS}.config" {ALIAS}' in readme
    assert f"Include {ALIAS}.config" in readme


@pytest.mark.parametrize(
    ("vm", "message"),
    [
        (alices_vm(host_keys=None), "alice: the stack has no pinned host keys for course-vm-alice (verify=false"),
        (alices_vm(knownHosts=f"10.0.0.9 {HOST_KEY}"), "is for '10.0.0.9', not the VM's address '34.78.1.2'"),
        (alices_vm(knownHosts="34.78.1.2 ssh-ed25519 AAAA\nMatch exec id"), "is not one: malformed host key"),
    ],
    ids=["verify=false", "another host's key", "not a key"],
)
def test_a_vm_without_good_pins_gets_no_handout(vm: VmOutputs, message: str) -> None:
    with pytest.raises(HandoutError, match=re.escape(message)):
        build_handout("alice", ALIAS, vm, private_key())


def test_a_bad_value_from_the_stack_cannot_reach_the_entry() -> None:
    with pytest.raises(Exception, match="cannot write an ssh Host block: user 'alice\\\\nMatch exec id'"):
        build_handout("alice", ALIAS, alices_vm(username="alice\nMatch exec id"), private_key())


def test_replacing_a_folder_leaves_nothing_of_the_old_one(tmp_path: Path) -> None:
    folder, _ = generated(tmp_path)
    (folder / "stale").write_text("x")
    # The student brought their own key since: the generated private key must not linger.
    write_handout(folder, build_handout("alice", ALIAS, OWNS_HER_KEY, None), windows=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{ALIAS}.config", f"{ALIAS}.known_hosts", README])
    assert [p.name for p in folder.parent.iterdir()] == ["alice"], "no temporary folder is left"


class Icacls:
    """Records what would run on Windows; `whoami` answers as the instructor."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, command: Sequence[str]) -> str:
        target = Path(command[1]) if len(command) > 1 else None
        held = sorted(p.name for p in target.iterdir()) if target and target.is_dir() else []
        self.calls.append((list(command), held))
        return "desktop-1\\teacher\r\n" if list(command) == ["whoami"] else "processed\r\n"


def test_on_windows_the_folder_is_owner_only_before_any_file_and_the_key_has_its_own_acl(tmp_path: Path) -> None:
    runner = Icacls()
    folder = tmp_path / "out" / "alice"
    handout: Handout = build_handout("alice", ALIAS, VM, private_key())
    write_handout(folder, handout, windows=True, run=runner)
    icacls = [(command, held) for command, held in runner.calls if command[0] == "icacls"]
    staging, held = icacls[0]
    assert staging[2:] == ["/inheritance:r", "/grant:r", "desktop-1\\teacher:(OI)(CI)F"]
    assert held == [], "restricted before a file is written into it"
    assert Path(staging[1]).parent == folder.parent
    key = str(Path(staging[1]) / ALIAS)
    assert icacls[1][0] == ["icacls", key, "/inheritance:r", "/grant:r", "desktop-1\\teacher:F"]
    assert len(icacls) == 2
    assert (folder / ALIAS).is_file()


# sshAccess iap: the entry reaches the VM by its instance name through gcloud's IAP tunnel.

IAP_VM = alices_vm(iap=True)
"""Alice's VM under iap: its `ip` output is its internal address (10.42.0.2), its name course-vm-alice-vm-1a2b3c."""


def test_an_iap_vms_entry_goes_through_the_tunnel_to_its_instance_name(tmp_path: Path) -> None:
    folder = tmp_path / "out" / "alice"
    write_handout(folder, build_handout("alice", ALIAS, IAP_VM, private_key()), windows=False)
    options = resolved_by(folder / f"{ALIAS}.config", ALIAS)
    assert (options["hostname"], options["user"]) == ("course-vm-alice-vm-1a2b3c", "alice")
    assert options["proxycommand"] == IAP
    assert options["stricthostkeychecking"] == "true"
    # ssh looks the pins up under the name it was given: the instance name.
    assert (folder / f"{ALIAS}.known_hosts").read_text() == f"course-vm-alice-vm-1a2b3c {HOST_KEY}\n"
    readme = (folder / README).read_text()
    assert "gcloud auth login" in readme and "https://cloud.google.com/sdk/docs/install" in readme
    assert "10.42.0.2" not in readme, "the internal address reaches nothing from the student's machine"
    assert "write gcloud.cmd for gcloud" in readme.split("Windows (PowerShell", 1)[1]


def test_an_iap_vms_pins_must_be_for_its_instance_name() -> None:
    with pytest.raises(HandoutError, match="not the VM's name 'course-vm-alice-vm-1a2b3c'"):
        build_handout("alice", ALIAS, alices_vm(iap=True, knownHosts=f"10.42.0.2 {HOST_KEY}"), private_key())


@pytest.mark.parametrize("student", ["..", "alice/..", "bob"])
def test_a_folder_that_is_not_the_students_own_child_of_out_is_never_written(tmp_path: Path, student: str) -> None:
    # `..` would make the folder --out's parent, which replacing it would delete.
    out = tmp_path / "home" / "out"
    out.mkdir(parents=True)
    (tmp_path / "home" / "work.txt").write_text("kept")
    folder = out / student if student != "bob" else out / "alice"
    with pytest.raises(HandoutError, match=f"{re.escape(student)}: .* is not a folder of its own directly in {out}"):
        write_handout(folder, build_handout(student, ALIAS, VM, private_key()), windows=False)
    assert (tmp_path / "home" / "work.txt").read_text() == "kept"
    assert list(out.iterdir()) == []


def test_a_folder_the_system_refuses_is_that_students_handout_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    folder = tmp_path / "afile" / "out" / "alice"
    with pytest.raises(HandoutError) as raised:
        write_handout(folder, build_handout("alice", ALIAS, VM, private_key()), windows=False)
    assert str(raised.value) == (
        f"alice: cannot write {folder} (Not a directory). Fix: make --out a folder you can write to (not under "
        "a file; on Windows, close what holds a file of it open), then run `course-vm handout` again"
    )


def test_a_replacement_that_fails_leaves_the_old_folder_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _ = generated(tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_replace = os.replace

    def failing(source: Path, target: Path) -> None:
        if str(source).endswith(".course-vm.tmp"):
            raise PermissionError(13, "Permission denied", str(source))
        real_replace(source, target)

    monkeypatch.setattr("provisioner.access.handout.os.replace", failing)
    with pytest.raises(HandoutError, match=r"alice: cannot write .* \(Permission denied\)"):
        write_handout(folder, build_handout("alice", ALIAS, OWNS_HER_KEY, None), windows=False)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in folder.parent.iterdir()] == ["alice"], "no temporary folder is left"


def test_the_entry_forwards_the_vms_ports_and_the_readme_names_each(tmp_path: Path) -> None:
    vm = alices_vm(forwards=["8888", "5001:5000"], forward_agent=True)
    folder = tmp_path / "out" / "alice"
    write_handout(folder, build_handout("alice", ALIAS, vm, private_key()), windows=False)
    config = (folder / f"{ALIAS}.config").read_text()
    assert "    LocalForward localhost:8888 localhost:8888\n    LocalForward localhost:5001 localhost:5000\n" in config
    assert "    ForwardAgent yes\n" in config
    readme = (folder / README).read_text()
    assert "  VM port 8888: http://localhost:8888\n  VM port 5000: http://localhost:5001\n" in readme


def _sticky_shared(tmp_path: Path) -> Path:
    """A folder every user may write in, as /tmp is (mode 1777)."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def _nobody() -> tuple[int, int]:
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")
def test_an_out_folder_through_another_users_symlink_is_refused(tmp_path: Path) -> None:
    # /tmp/handouts planted by another user as a symlink to a folder of theirs: they could read or
    # swap the students' private keys once written there.
    shared = _sticky_shared(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, *_nobody())
    planted = shared / "handouts"
    planted.symlink_to(theirs)
    os.lchown(planted, *_nobody())
    with pytest.raises(HandoutError, match=rf"--out {planted} goes through {planted}, a symlink of another user"):
        own_out_folder(planted)
    os.lchown(planted, os.geteuid(), os.getegid())  # our own symlink, to their folder
    with pytest.raises(HandoutError, match=rf"--out {planted} is {theirs}, a folder of another user"):
        own_out_folder(planted)


def test_an_out_folder_of_ones_own_is_taken_resolved(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert own_out_folder(tmp_path / "link") == tmp_path / "real"
    assert own_out_folder(tmp_path / "new" / "folder") == tmp_path / "new" / "folder"


@pytest.mark.skipif(os.geteuid() != 0, reason="making another user's files needs root")
def test_an_out_folder_another_user_made_after_the_first_check_is_refused_before_writing(tmp_path: Path) -> None:
    shared = _sticky_shared(tmp_path)
    out = shared / "handouts"
    assert own_out_folder(out) == out and not out.exists(), "checked, not made, before the prompt"
    out.mkdir()  # another user's, made while the prompt waited
    os.chown(out, *_nobody())
    with pytest.raises(HandoutError, match="a folder of another user"):
        own_out_folder(out, create=True)
    os.chown(out, 0, 0)
    out.rmdir()
    assert own_out_folder(out, create=True) == out
    assert out.is_dir() and stat.S_IMODE(out.stat().st_mode) == 0o700
