"""A student's hand-out: the files that let them reach their course VM from their own machine, and nothing else."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner.access import windows_acl
from provisioner.access.host_keys import parse_host_key
from provisioner.access.ssh_config import ssh_config_block
from provisioner.access.windows_acl import Runner
from provisioner.errors import CourseVmError, SshKeyError
from provisioner.files import foreign_symlink
from provisioner.paths import ON_WINDOWS
from provisioner.recipe.ports import parse_forward
from provisioner.stack import VmOutputs

README = "README.txt"
PRIVATE_MODE = 0o400
PUBLIC_MODE = 0o644


class HandoutError(CourseVmError):
    """One student's hand-out cannot be made from what the stack holds; the others still can."""


@dataclass(frozen=True)
class HandoutFile:
    """One file of a hand-out: its name in the folder, its bytes and its mode."""

    name: str
    content: bytes
    mode: int = PUBLIC_MODE

    @property
    def private(self) -> bool:
        return self.mode == PRIVATE_MODE


@dataclass(frozen=True)
class Handout:
    """What one student gets: the files of their folder, all named after their VM's `Host` alias."""

    student: str
    alias: str
    files: tuple[HandoutFile, ...]


def on_students_machine(alias: str, suffix: str = "") -> str:
    """Where a file of the hand-out is once the student has copied it into their ~/.ssh, as their ssh
    config names it: `~` is their home on Linux, macOS and Windows alike (never the instructor's path)."""
    return f"~/.ssh/{alias}{suffix}"


def build_handout(student: str, alias: str, vm: VmOutputs, private_key: bytes | None) -> Handout:
    """STUDENT's hand-out from their VM's stack outputs VM (ip, username, knownHosts; instanceName and
    proxyCommand under sshAccess iap; studentPublicKey
    when they brought their own key) and, when course-vm generated their key, its PRIVATE_KEY bytes.

    Files: `ALIAS.config` (their `Host` block, reading the files below from ~/.ssh), `ALIAS.known_hosts`
    (the pinned host keys: ssh connects to that VM only), `ALIAS` and `ALIAS.pub` (a generated key
    only), and README.txt (how to connect from Linux, macOS and Windows).
    Raises HandoutError when the VM has no pinned host keys or the outputs do not fit together.
    """
    own_key = vm.student_public_key
    if bool(own_key) == (private_key is not None):
        raise HandoutError(
            f"{student}: course-vm {'did not generate' if own_key else 'generated'} this student's key, but "
            f"{'a private key was given' if own_key else 'no private key was given'}. This is a bug in course-vm"
        )
    user = vm.username
    # sshAccess iap: ssh reaches the VM by its instance name through the tunnel, and looks the pins up under it.
    proxy = vm.proxy_command or None
    host = vm.ssh_host
    known_hosts = _pinned_lines(student, alias, host, vm.known_hosts, "name" if proxy else "address")
    # windows=False: the paths are written with `/`, which OpenSSH reads on every system.
    identity = "" if own_key else on_students_machine(alias)
    pins = on_students_machine(alias, ".known_hosts")
    block = ssh_config_block(
        alias, host, user, identity, pins, windows=False, default_keys=bool(own_key), proxy_command=proxy,
        forwards=vm.forward_ports, forward_agent=vm.forward_agent,
    )  # fmt: skip
    config = f"# course-vm: {student}'s course VM. Connect: ssh -F {on_students_machine(alias, '.config')} {alias}\n"
    files = [
        HandoutFile(f"{alias}.config", (config + block).encode()),
        HandoutFile(f"{alias}.known_hosts", "".join(line + "\n" for line in known_hosts).encode()),
    ]
    if private_key is not None:
        public = _public_key_of(student, private_key)
        files += [
            HandoutFile(alias, private_key, PRIVATE_MODE),
            HandoutFile(f"{alias}.pub", f"{public} {user}@course-vm\n".encode()),
        ]
    names = [f.name for f in files]
    readme = readme_text(student, alias, user, host, own_key, names, iap=bool(proxy), forwards=vm.forward_ports)
    files.append(HandoutFile(README, readme.encode()))
    return Handout(student, alias, tuple(files))


def _pinned_lines(student: str, alias: str, host: object, text: object, what: str) -> list[str]:
    """The known_hosts lines of the VM HOST (its address, or under iap its instance name: WHAT), each a
    host key of a known type for HOST itself, or HandoutError."""
    if not text:
        raise HandoutError(
            f"{student}: the stack has no pinned host keys for {alias} (verify=false, or `pulumi up` could not "
            "verify the VM), and a hand-out without them would have the student trust whatever answers. "
            "Fix: `pulumi config set verify true` if it is off, run `course-vm up` until the VM is verified, then "
            "`course-vm handout` again"
        )
    lines = []
    for line in str(text).splitlines():
        name, _, key = line.partition(" ")
        try:
            host_key = parse_host_key(key)
        except SshKeyError as error:
            raise HandoutError(f"{student}: a pinned host key in the stack's outputs is not one: {error}") from None
        if name != host:
            raise HandoutError(
                f"{student}: a pinned host key in the stack's outputs is for {name!r}, not the VM's {what} {host!r}. "
                "Fix: run `course-vm up` again, and check who else can change that stack"
            )
        lines.append(host_key.known_hosts_line(str(host)))
    return lines


def _public_key_of(student: str, private_key: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_ssh_private_key(private_key, password=None)
    except (ValueError, TypeError) as error:
        raise HandoutError(
            f"{student}: their private key cannot be read ({error}). Fix: restore it from a backup, or take the "
            "student off the roster and on again to generate a new pair (`course-vm up`)"
        ) from None
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def fingerprint(public_key: str) -> str:
    """OpenSSH's `SHA256:...` fingerprint of `TYPE BASE64`, as `ssh-keygen -lf` prints it ("" if malformed)."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, binascii.Error):
        return ""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def readme_text(
    student: str, alias: str, user: str, host: str, own_key: str, names: list[str], *, iap: bool = False,
    forwards: Sequence[str] = ("8888",),
) -> str:  # fmt: skip
    """How STUDENT puts the files NAMES into their ~/.ssh and connects, on Linux and macOS and on Windows.

    HOST is the VM's address, or with IAP its instance name (its internal address reaches nothing);
    FORWARDS the VM's ports the entry forwards (`PORT` or `LOCAL:REMOTE`, checked when the entry was written)."""
    private = [] if own_key else [alias]
    where = f"instance {host}, through Google's Identity-Aware Proxy" if iap else host
    tunnel = (
        [
            "Your VM has no public address: ssh reaches it through Google's Identity-Aware Proxy. Once, install",
            "the Google Cloud CLI (https://cloud.google.com/sdk/docs/install) and run `gcloud auth login` with",
            "the Google account your instructor put on the roster; ssh then starts the tunnel itself.",
            "",
        ]
        if iap
        else []
    )
    # Windows' OpenSSH starts a ProxyCommand without a shell, and gcloud is a .cmd script there.
    windows_tunnel = (
        [f"  (If ssh says `CreateProcessW failed`, write gcloud.cmd for gcloud in {alias}.config's ProxyCommand.)"]
        if iap
        else []
    )
    return "\n".join(
        [
            f"Your course VM: {alias} (student {student}: login {user} at {where})",
            "",
            *tunnel,
            *_key_lines(alias, own_key),
            f"{alias}.known_hosts holds your VM's host keys: ssh connects to your VM and nothing else.",
            f"{alias}.config is its ssh entry.",
            "",
            "Linux and macOS: in a terminal, in this folder, run:",
            *(f"  {line}" for line in _posix_commands(alias, names, private)),
            "",
            "Windows (PowerShell, with the OpenSSH client that Windows 10 and 11 include): in this folder, run:",
            *(f"  {line}" for line in _powershell_commands(alias, names, private)),
            *windows_tunnel,
            "",
            "Later on, only the last line (the ssh command) is needed.",
            f"To type just `ssh {alias}`, and to pick {alias} in VS Code Remote-SSH, add this line at the very",
            "top of ~/.ssh/config (Windows: %USERPROFILE%\\.ssh\\config):",
            f"  Include {alias}.config",
            "",
            *_port_lines(forwards),
            "",
        ]
    )


def _key_lines(alias: str, own_key: str) -> list[str]:
    """Which key logs in: the student's OWN_KEY, or the private key ALIAS of the hand-out."""
    if own_key:
        return [
            "You log in with your own SSH key, the one whose public half you gave your instructor",
            f"({fingerprint(own_key)}). ssh offers your default keys (~/.ssh/id_ed25519, id_ecdsa,",
            "id_rsa) and those in your ssh-agent; if yours is elsewhere, add `-i PATH-TO-YOUR-PRIVATE-KEY`",
            "to the ssh command.",
        ]
    return [
        f"{alias} is your private key: it logs in to your VM, so keep it secret and share it with no one.",
        f"{alias}.pub is its public half.",
    ]


def _posix_commands(alias: str, names: list[str], private: list[str]) -> list[str]:
    """A shell's commands that copy NAMES into ~/.ssh, make the PRIVATE ones the user's alone, and log in."""
    listed = " ".join(names)
    posix = ["mkdir -p -m 700 ~/.ssh", f"cp -f {listed} ~/.ssh/"]
    posix += [f"chmod 600 ~/.ssh/{name}" for name in private]
    posix.append(f"ssh -F ~/.ssh/{alias}.config {alias}")
    return posix


def _powershell_commands(alias: str, names: list[str], private: list[str]) -> list[str]:
    """PowerShell's commands that copy NAMES into ~/.ssh, make the PRIVATE ones the user's alone, and log in."""
    powershell = [
        'New-Item -ItemType Directory -Force "$HOME\\.ssh" | Out-Null',
        f'Copy-Item -Force {", ".join(names)} "$HOME\\.ssh\\"',
    ]
    powershell += [
        f'icacls "$HOME\\.ssh\\{name}" /inheritance:r /grant:r "${{env:USERDOMAIN}}\\${{env:USERNAME}}:F"'
        for name in private
    ]
    powershell.append(f'ssh -F "$HOME\\.ssh\\{alias}.config" {alias}')
    return powershell


def cannot_write(student: str, folder: Path, error: OSError) -> HandoutError:
    """The error for STUDENT's FOLDER that the system refused to read or write (ERROR)."""
    return HandoutError(
        f"{student}: cannot write {folder} ({error.strerror or error}). Fix: make --out a folder you can write to "
        "(not under a file; on Windows, close what holds a file of it open), then run `course-vm handout` again"
    )


def own_out_folder(out: Path, *, create: bool = False) -> Path:
    """The folder --out OUT names, resolved, when no other user can steer it there.

    A symlink on the way that another user made (say /tmp/handouts, planted), or a folder of another
    user at its end, would let them read or swap the students' private keys. Root's and this user's
    own symlinks and folders are followed. On Windows folders are guarded by their ACLs instead.
    Raises HandoutError.
    """
    out = out.expanduser().absolute()
    if not hasattr(os, "geteuid"):
        return out.resolve()
    trusted = {os.geteuid(), 0}
    fix = "Fix: pass a folder of your own as --out"
    planted = foreign_symlink(out, trusted)
    if planted:
        raise HandoutError(
            f"--out {out} goes through {planted[0]}, a symlink of another user (uid {planted[1]}), who could then "
            f"read or swap the students' keys. {fix}"
        )
    real = out.resolve()
    if create:
        # Made as this user's and checked again: between the first check and the writing (after a
        # prompt) another user could have made it, in /tmp say, to have the students' folders go in theirs.
        with contextlib.suppress(OSError):  # one that cannot be made: each student's folder then says why
            real.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = next(p for p in [real, *real.parents] if p.exists())
    info = existing.lstat()
    if info.st_uid not in trusted or stat.S_ISLNK(info.st_mode):
        raise HandoutError(
            f"--out {out} is {real}, a folder of another user (uid {info.st_uid}), who could then read or swap "
            f"the students' keys. {fix}"
        )
    return real


def write_handout(folder: Path, handout: Handout, *, windows: bool = ON_WINDOWS, run: Runner = windows_acl.run) -> None:
    """Write HANDOUT as FOLDER, replacing what was there: readers see the old folder or the new one.

    FOLDER must be the student's own folder directly in its (resolved) parent, named after them:
    a name such as `..` from a changed stack must never make it the parent, which would be replaced.
    The folder is readable by its owner alone (0700; on Windows an ACL with the owner alone, set
    before any file is written) and the private key is 0400 (on Windows its own owner-only ACL).
    Raises HandoutError when FOLDER is not such a folder, is a symlink, or cannot be written.
    """
    try:
        out = folder.parent.resolve()
        if folder.name != handout.student or (out / folder.name).resolve().parent != out:
            raise HandoutError(
                f"{handout.student}: {folder} is not a folder of its own directly in {out}, so nothing is written "
                "there. Fix: check who else can write to the stack's Pulumi backend, then run `course-vm up`"
            )
        folder = out / folder.name
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            raise HandoutError(f"{folder} is not a folder course-vm wrote. Fix: move it away, or pass another --out")
        out.mkdir(mode=0o700, parents=True, exist_ok=True)
        _replace(folder, handout, windows, run)
    except OSError as error:
        raise cannot_write(handout.student, folder, error) from None


def _replace(folder: Path, handout: Handout, windows: bool, run: Runner) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".course-vm.tmp", dir=folder.parent))
    try:
        if windows:
            windows_acl.restrict(str(staging), run, inheritable=True)
        for file in handout.files:
            path = staging / file.name
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if windows else file.mode)
            try:
                data = memoryview(file.content)
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
            if windows and file.private:
                windows_acl.restrict(str(path), run)
        if not folder.exists():
            os.replace(staging, folder)
            return
        # The old folder is moved aside whole first: on Windows a file of it held open fails that
        # move, and leaves the old folder as it was, where deleting it would stop half-way.
        old = staging.with_name(staging.name + ".old")
        os.replace(folder, old)
        try:
            os.replace(staging, folder)
        except BaseException:
            os.replace(old, folder)
            raise
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _port_lines(forwards: Sequence[str]) -> list[str]:
    """What the student opens on their machine for each of the VM's forwarded ports, while connected."""
    known = [forward for forward in map(parse_forward, forwards) if forward is not None]
    if not known:
        return []
    lines = ["While you are connected, your machine reaches these ports of the VM (Jupyter is 8888, MLflow 5000):"]
    lines += [f"  VM port {forward.remote}: http://localhost:{forward.local}" for forward in known]
    return lines
