"""The SSH key pair: generated once with mode 0400, existing keys used as they are or refused."""

from __future__ import annotations

import multiprocessing
import os
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from provisioner.access.keys import (
    KeyOption,
    check_private_key_file,
    claim_keys,
    ensure_key_pair,
    key_claims,
    release_claims,
)
from provisioner.errors import SettingsError, SshKeyError
from tests.conftest import require_tool


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def keygen(path: Path, *args: str) -> None:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-f", str(path), "-C", "me@laptop", *args], check=True)


def test_generates_ed25519_pair_with_0400_private_key(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "course-vm"
    key = ensure_key_pair(path, comment="student@course-vm")
    assert mode(path) == 0o400
    assert mode(path.with_name("course-vm.pub")) == 0o644
    assert mode(path.parent) == 0o700
    assert key.public_key.startswith("ssh-ed25519 ")
    assert path.with_name("course-vm.pub").read_text() == key.public_key + " student@course-vm\n"
    # OpenSSH itself reads the new private key and derives the same public key.
    derived = subprocess.run(
        [require_tool("ssh-keygen"), "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == key.public_key.split()
    assert sorted(p.name for p in path.parent.iterdir()) == ["course-vm", "course-vm.pub"]


def test_second_call_reuses_the_key_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "course-vm"
    first = ensure_key_pair(path, comment="a")
    before = (path.read_bytes(), path.stat().st_mtime_ns, path.with_name("course-vm.pub").read_bytes())
    second = ensure_key_pair(path, comment="b")
    assert first == second
    assert before == (path.read_bytes(), path.stat().st_mtime_ns, path.with_name("course-vm.pub").read_bytes())


@pytest.mark.parametrize("key_type", [["-t", "ed25519"], ["-t", "rsa", "-b", "3072"], ["-t", "ecdsa"]])
def test_existing_user_keys_are_used_untouched(tmp_path: Path, key_type: list[str]) -> None:
    path = tmp_path / "id_key"
    keygen(path, "-N", "", *key_type)
    os.chmod(path, 0o600)
    content = path.read_bytes()
    key = ensure_key_pair(path, comment="ignored")
    assert key.public_key == " ".join(path.with_name("id_key.pub").read_text().split()[:2])
    assert path.read_bytes() == content
    assert mode(path) == 0o600


@pytest.mark.parametrize("bad_mode", [0o644, 0o640, 0o604, 0o440])
def test_key_readable_by_others_is_refused_with_the_chmod_fix(tmp_path: Path, bad_mode: int) -> None:
    path = tmp_path / "course-vm"
    ensure_key_pair(path, comment="x")
    os.chmod(path, bad_mode)
    with pytest.raises(SshKeyError) as raised:
        ensure_key_pair(path, comment="x")
    assert str(raised.value) == (
        f"private key {path} has mode {bad_mode:04o}: group or others can read it, and ssh refuses such a key "
        f"('UNPROTECTED PRIVATE KEY FILE'). Fix: chmod 400 {path}"
    )
    assert mode(path) == bad_mode, "course-vm must not change the user's file itself"


def test_public_key_without_private_key_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "course-vm"
    path.with_name("course-vm.pub").write_text("ssh-ed25519 AAAAC3Nza mine\n")
    with pytest.raises(SshKeyError, match="will not overwrite it"):
        ensure_key_pair(path, comment="x")
    assert path.with_name("course-vm.pub").read_text() == "ssh-ed25519 AAAAC3Nza mine\n"
    assert not path.exists()


def test_passphrase_protected_key_uses_its_pub_file(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    keygen(path, "-t", "ed25519", "-N", "a passphrase")
    key = ensure_key_pair(path, comment="x")
    assert key.public_key == " ".join(path.with_name("id_ed25519.pub").read_text().split()[:2])


def test_passphrase_protected_key_without_pub_file_says_how_to_make_it(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    keygen(path, "-t", "ed25519", "-N", "a passphrase")
    path.with_name("id_ed25519.pub").unlink()
    with pytest.raises(SshKeyError, match=rf"Fix: ssh-keygen -y -f {path} > {path}.pub"):
        ensure_key_pair(path, comment="x")


def test_short_rsa_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weak"
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 (the weak key under test)
    path.write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    os.chmod(path, 0o400)
    with pytest.raises(SshKeyError, match="1024-bit RSA key; at least 2048 bits"):
        ensure_key_pair(path, comment="x")


def test_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello\n")
    os.chmod(path, 0o600)
    with pytest.raises(SshKeyError, match=r"^sshKeyPath \S+notes.txt is not an OpenSSH private key \(no -----BEGIN"):
        ensure_key_pair(path, comment="x")


def test_a_file_with_a_private_key_header_but_no_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "broken"
    path.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64\n-----END OPENSSH PRIVATE KEY-----\n")
    os.chmod(path, 0o600)
    with pytest.raises(SshKeyError, match="is not an OpenSSH or PEM private key"):
        ensure_key_pair(path, comment="x")


IDENTITY = KeyOption("--identity", "--identity {}", "pass --identity the private key file")


@pytest.mark.parametrize("public_mode", [0o644, 0o400])
def test_a_public_key_is_named_so_before_its_mode_and_its_private_key_suggested(
    tmp_path: Path, public_mode: int
) -> None:
    path = tmp_path / "my keys" / "course-vm"
    ensure_key_pair(path, comment="x")
    public = path.with_name("course-vm.pub")
    os.chmod(public, public_mode)
    with pytest.raises(SshKeyError) as raised:
        check_private_key_file(public, option=IDENTITY)
    assert str(raised.value) == (
        f"--identity {public} is a public key; ssh logs in with the private key beside it. Fix: --identity '{path}'"
    )
    with pytest.raises(SshKeyError) as raised:
        ensure_key_pair(public, comment="x")
    assert str(raised.value).endswith(f"Fix: course-vm up --set sshKeyPath='{path}'")
    assert mode(public) == public_mode, "course-vm must not change the user's file itself"


def test_a_public_key_without_its_private_key_gets_the_options_own_fix(tmp_path: Path) -> None:
    ensure_key_pair(tmp_path / "course-vm", comment="x")
    alone = tmp_path / "laptop.pub"
    alone.write_bytes(tmp_path.joinpath("course-vm.pub").read_bytes())
    with pytest.raises(SshKeyError) as raised:
        check_private_key_file(alone, option=IDENTITY)
    assert str(raised.value) == (
        f"--identity {alone} is a public key; ssh logs in with a private key (its pair's file without .pub). "
        "Fix: pass --identity the private key file"
    )


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ("root:x:0:0:root:/root:/bin/bash\nsecret-word: hunter2\n", "is not an OpenSSH private key"),
        ("\x00\x01binary", "is not an OpenSSH private key"),
        ("ssh-rsa AAAAB3NzaC1yc2E hunter2@laptop\n", "is a public key"),
        ("---- BEGIN SSH2 PUBLIC KEY ----\nComment: hunter2\n", "is a public key"),
        ("-----BEGIN PUBLIC KEY-----\nhunter2\n", "is a public key"),
        ("PuTTY-User-Key-File-3: ssh-ed25519\nComment: hunter2\n", "is a PuTTY key, which ssh cannot read"),
    ],
)
def test_what_a_file_holds_is_told_before_its_mode_and_never_quoted(tmp_path: Path, content: str, what: str) -> None:
    path = tmp_path / "passwd"
    path.write_text(content)
    os.chmod(path, 0o644)
    with pytest.raises(SshKeyError) as raised:
        check_private_key_file(path, option=IDENTITY)
    assert str(raised.value).startswith(f"--identity {path} {what}")
    assert "chmod" not in str(raised.value) and "hunter2" not in str(raised.value)


def test_tampered_pub_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    keygen(path, "-t", "ed25519", "-N", "pass")
    path.with_name("id_ed25519.pub").write_text("ssh-ed25519 AAAA$(reboot) x\n")
    with pytest.raises(SshKeyError, match="does not hold an ed25519, RSA or ECDSA public key"):
        ensure_key_pair(path, comment="x")


def test_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(SshKeyError, match="is not a regular file"):
        check_private_key_file(tmp_path)


class WindowsStandIn:
    """Stands in for `whoami` and `icacls` on Windows: records each call, what the folder held when it
    ran, and answers `icacls PATH` with a recorded listing of the ACL course-vm sets."""

    def __init__(self, acl_of_key: str = "DESKTOP-1\\alice:(F)") -> None:
        self.acl_of_key = acl_of_key
        self.calls: list[tuple[list[str], list[str]]] = []

    def __call__(self, command: Sequence[str]) -> str:
        target = Path(command[1]) if len(command) > 1 else None
        held = sorted(p.name for p in target.iterdir()) if target and target.is_dir() else []
        self.calls.append((list(command), held))
        if list(command) == ["whoami"]:
            return "desktop-1\\alice\r\n"
        if len(command) == 2:
            pad = " " * (len(command[1]) + 1)
            entries = self.acl_of_key.split("\n")
            return "\r\n".join(
                [
                    f"{command[1]} {entries[0]}",
                    *(pad + e for e in entries[1:]),
                    "",
                    "Successfully processed 1 files; Failed processing 0 files",
                    "",
                ]
            )
        return f"processed file: {command[1]}\r\nSuccessfully processed 1 files; Failed processing 0 files\r\n"


def test_on_windows_a_new_key_is_written_where_only_its_user_can_open_it(tmp_path: Path) -> None:
    path = tmp_path / "Alice Smith" / "course-vm"
    windows = WindowsStandIn()
    key = ensure_key_pair(path, comment="student@course-vm", windows=True, run=windows)
    commands = [command for command, _ in windows.calls]
    assert commands[1][:2] == ["icacls", commands[1][1]]
    private_dir = commands[1][1]
    assert Path(private_dir).parent == path.parent
    assert commands == [
        ["whoami"],
        ["icacls", private_dir, "/inheritance:r", "/grant:r", "desktop-1\\alice:(OI)(CI)F"],
        ["whoami"],
        ["icacls", str(path), "/inheritance:r", "/grant:r", "desktop-1\\alice:F"],
        ["icacls", str(path)],
        ["whoami"],
    ]
    assert windows.calls[1][1] == [], "the folder is restricted before the key is written into it"
    assert sorted(p.name for p in path.parent.iterdir()) == ["course-vm", "course-vm.pub"]
    derived = subprocess.run(
        [require_tool("ssh-keygen"), "-y", "-f", str(path)], capture_output=True, text=True, check=True
    ).stdout
    assert derived.split()[:2] == key.public_key.split()


def test_on_windows_the_mode_bits_do_not_matter_but_the_acl_does(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    keygen(path, "-N", "", "-t", "ed25519")
    os.chmod(path, 0o666)  # noqa: S103 (what Python reports for every writable file on Windows)
    key = ensure_key_pair(path, comment="x", windows=True, run=WindowsStandIn("DESKTOP-1\\alice:(R)"))
    assert key.public_key == " ".join(path.with_name("id_ed25519.pub").read_text().split()[:2])
    everyone = WindowsStandIn("Everyone:(R)\nNT AUTHORITY\\SYSTEM:(I)(F)\nDESKTOP-1\\alice:(I)(F)")
    with pytest.raises(SshKeyError) as raised:
        ensure_key_pair(path, comment="x", windows=True, run=everyone)
    assert str(raised.value) == (
        f"private key {path} can be opened by others: its permissions grant Everyone:(R), and ssh refuses such a "
        f'key (\'UNPROTECTED PRIVATE KEY FILE\'). Fix: icacls "{path}" /inheritance:r /remove "Everyone" '
        '/grant:r "desktop-1\\alice:R"'
    )
    assert [command for command, _ in everyone.calls] == [["icacls", str(path)], ["whoami"]], "nothing changed"


def test_the_chmod_fix_quotes_a_path_with_a_space(tmp_path: Path) -> None:
    path = tmp_path / "Alice Smith" / "course-vm"
    ensure_key_pair(path, comment="x")
    os.chmod(path, 0o644)
    with pytest.raises(SshKeyError) as raised:
        check_private_key_file(path)
    assert str(raised.value).endswith(f"Fix: chmod 400 '{path}'")


def test_a_students_key_another_stack_claims_is_refused_and_nothing_is_claimed(tmp_path: Path) -> None:
    # Two sections each with an alex: one key would log in to both VMs, and be handed out twice.
    instructor = tmp_path / "course-vm"
    claim_keys("section-a", [("alex", tmp_path / "course-vm-alex")], instructor)
    with pytest.raises(SettingsError) as raised:
        claim_keys(
            "section-b", [("bob", tmp_path / "course-vm-bob"), ("alex", tmp_path / "course-vm-alex")], instructor
        )
    assert raised.value.problems == (
        f"{tmp_path}/course-vm-alex is student alex's key of stack section-a; two stacks must not share a student's "
        "key. Fix: pulumi config set sshKeyPath ~/.ssh/course-vm-section-b (a path of this stack's own)",
    )
    assert key_claims(tmp_path / "course-vm-alex") == [("section-a", "alex")]
    assert key_claims(tmp_path / "course-vm-bob") == [], "nothing is claimed when anything is refused"


def test_a_stack_claims_its_students_keys_once_however_often_it_runs(tmp_path: Path) -> None:
    for _ in range(3):
        claim_keys("section-a", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")
    assert (tmp_path / "course-vm-alex.stacks").read_text() == "section-a alex\n"
    assert not (tmp_path / "course-vm.stacks").exists(), "the instructor's own key is never claimed"


def test_a_students_key_is_never_another_stacks_instructor_key(tmp_path: Path) -> None:
    claim_keys("section-a", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")
    with pytest.raises(SettingsError) as raised:
        claim_keys("solo", [], tmp_path / "course-vm-alex")
    assert raised.value.problems == (
        f"{tmp_path}/course-vm-alex is student alex's key of stack section-a; the instructor's key (sshKeyPath) "
        "must be no student's. Fix: pulumi config set sshKeyPath ~/.ssh/course-vm-solo (a path of this stack's own)",
    )


def test_releasing_a_stacks_claims_leaves_the_other_stacks_claims(tmp_path: Path) -> None:
    claim_keys(
        "section-a", [("alex", tmp_path / "course-vm-alex"), ("bo", tmp_path / "course-vm-bo")], tmp_path / "course-vm"
    )
    claim_keys("other", [("x", tmp_path / "elsewhere-x")], tmp_path / "elsewhere")
    (tmp_path / "course-vm-bo.stacks").write_text("section-a bo\nlegacy bo\n")
    release_claims("section-a", tmp_path / "course-vm")
    assert not (tmp_path / "course-vm-alex.stacks").exists()
    assert (tmp_path / "course-vm-bo.stacks").read_text() == "legacy bo\n"
    assert key_claims(tmp_path / "elsewhere-x") == [("other", "x")]
    claim_keys("section-b", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")


def test_a_claims_file_that_cannot_be_read_is_an_error_not_no_claim(tmp_path: Path) -> None:
    (tmp_path / "course-vm-alex.stacks").mkdir()
    with pytest.raises(SshKeyError, match=r"cannot read .*course-vm-alex.stacks"):
        claim_keys("section-a", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")


def test_a_students_key_no_stack_claims_any_more_is_retired_never_handed_to_the_next_class(tmp_path: Path) -> None:
    # A later class's `alex` must not get the key a former `alex` still has from their hand-out.
    for name in ("alex", "bo"):
        (tmp_path / f"course-vm-{name}").write_text("private")
        (tmp_path / f"course-vm-{name}.pub").write_text("public")
    claim_keys(
        "spring", [("alex", tmp_path / "course-vm-alex"), ("bo", tmp_path / "course-vm-bo")], tmp_path / "course-vm"
    )
    (tmp_path / "course-vm-bo.stacks").write_text("spring bo\nlegacy bo\n")
    retired = release_claims("spring", tmp_path / "course-vm", now="20261127T180000Z")
    assert retired == [tmp_path / "course-vm-alex.retired-20261127T180000Z"]
    assert not (tmp_path / "course-vm-alex").exists() and not (tmp_path / "course-vm-alex.pub").exists()
    assert (tmp_path / "course-vm-alex.retired-20261127T180000Z").read_text() == "private"
    assert (tmp_path / "course-vm-alex.retired-20261127T180000Z.pub").read_text() == "public"
    assert (tmp_path / "course-vm-bo").read_text() == "private", "still claimed by another stack"


def _claim_at_once(folder: str, stack: str, start: Any, results: Any) -> None:
    """One `up` of STACK claiming student alex's key, started with the other (a multiprocessing child)."""
    start.wait()
    try:
        claim_keys(stack, [("alex", Path(folder) / "course-vm-alex")], Path(folder) / "course-vm")
        results.put(stack)
    except SettingsError:
        results.put("refused")


def test_two_stacks_claiming_one_key_at_once_never_both_get_it(tmp_path: Path) -> None:
    # Two `up`s at the same moment, of two stacks with the same sshKeyPath and a student of the same
    # name: check-then-append without a lock let both claim the key in 86 of 100 runs.
    context = multiprocessing.get_context("fork")
    for round_ in range(25):
        folder = tmp_path / str(round_)
        folder.mkdir()
        start, results = context.Barrier(2), context.Queue()
        workers = [
            context.Process(target=_claim_at_once, args=(str(folder), stack, start, results)) for stack in ("a", "b")
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(30)
        outcomes = sorted(results.get(timeout=5) for _ in workers)
        assert outcomes in (["a", "refused"], ["b", "refused"]), f"round {round_}: {outcomes}"
        assert len(key_claims(folder / "course-vm-alex")) == 1


def test_a_key_that_cannot_be_retired_keeps_its_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Renamed first, then unclaimed: a failed rename must not leave a key neither claimed nor retired.
    (tmp_path / "course-vm-alex").write_text("private")
    claim_keys("spring", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")

    def refused(self: Path, target: Path) -> Path:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "rename", refused)
    with pytest.raises(SshKeyError, match=r"cannot retire .*course-vm-alex \(Permission denied\)"):
        release_claims("spring", tmp_path / "course-vm", now="20261127T180000Z")
    assert key_claims(tmp_path / "course-vm-alex") == [("spring", "alex")]
    assert (tmp_path / "course-vm-alex").read_text() == "private"


def test_a_symlink_planted_as_the_claims_lock_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "someone-elses-file"
    target.write_text("theirs")
    (tmp_path / ".course-vm-claims.lock").symlink_to(target)
    with pytest.raises(SshKeyError, match=r"cannot lock .*\.course-vm-claims\.lock"):
        claim_keys("spring", [("alex", tmp_path / "course-vm-alex")], tmp_path / "course-vm")
    assert target.read_text() == "theirs" and key_claims(tmp_path / "course-vm-alex") == []
