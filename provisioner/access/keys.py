"""The student's SSH key pair: created once readable by its owner alone (mode 0400, or on Windows an ACL
with the owner alone), refused when others can read it."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import shlex
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from provisioner.access import windows_acl
from provisioner.access.windows_acl import Runner
from provisioner.errors import SettingsError, SshKeyError
from provisioner.files import locked
from provisioner.paths import ON_WINDOWS

# The public key as it may appear in metadata and authorized_keys: type and base64, no comment.
_PUBLIC_KEY = re.compile(
    r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+={0,3}"
)
MIN_RSA_BITS = 2048
_PRIVATE_KEY = re.compile(rb"^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", re.MULTILINE)
"""How a private key file ssh reads begins: OpenSSH's own format, or PEM (PKCS#1, PKCS#8, SEC1)."""
_PUBLIC_KEY_FILE = re.compile(
    rb"\A\s*(?:(?:ssh|ecdsa|sk)-[-\w@.]+ AAAA|---- BEGIN SSH2 PUBLIC KEY ----|-----BEGIN [A-Z0-9 ]*PUBLIC KEY-----)"
)
"""How a public key file begins: an OpenSSH line (`TYPE AAAA…`, as a .pub holds it), RFC 4716, or PEM."""
_PUTTY_KEY = re.compile(rb"\A\s*PuTTY-User-Key-File-\d+:")
_HEAD_BYTES = 16384
"""How much of a key file tells what it is: the whole of any private key ssh takes but a huge RSA key's start."""


@dataclass(frozen=True)
class KeyOption:
    """Where the user named a private key file, so that an error about it names the fix there."""

    name: str
    """How a message names the path: `sshKeyPath`, `--identity`."""
    set_to: str
    """How to give another path, `{}` standing for it: `course-vm up --set sshKeyPath={}`."""
    otherwise: str
    """The fix when there is no path to suggest."""

    def fix(self, path: Path | str) -> str:
        return self.set_to.format(shlex.quote(str(path)))


SSH_KEY_PATH = KeyOption(
    "sshKeyPath",
    "course-vm up --set sshKeyPath={}",
    "set sshKeyPath to a private key such as ~/.ssh/id_ed25519, or remove the setting to have one made",
)
"""The stack's setting (`up`, `render`, the Pulumi program)."""


@dataclass(frozen=True)
class SshKey:
    """A usable private key file and its public half."""

    private_key_path: Path
    public_key: str
    """`TYPE BASE64`, without a comment, so no user text reaches metadata."""


def check_private_key_file(
    path: Path, *, option: KeyOption = SSH_KEY_PATH, windows: bool = ON_WINDOWS, run: Runner = windows_acl.run
) -> None:
    """Refuse a private key file OpenSSH would refuse: missing, not a file, no private key, or readable by others.

    What the file holds is told first: a public key (or any other file) needs another path, not
    another mode. Its content is never quoted. Readable by others means group or other mode bits on
    Linux and macOS, and on Windows (where Python reports every file as 0666 or 0444) an ACL entry
    for anyone but the user, SYSTEM and Administrators, read with RUN (`icacls`). Raises
    SshKeyError naming the fix: another path as OPTION takes it, the exact `chmod 400 PATH`, or the
    `icacls` command.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SshKeyError(
            f"private key {path} does not exist. Fix: set sshKeyPath to your key, "
            "or remove the setting to have one generated"
        ) from None
    except OSError as error:
        raise SshKeyError(f"cannot read private key {path}: {error.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise SshKeyError(f"private key {path} is not a regular file. Fix: set sshKeyPath to a key file")
    if problem := _content_problem(path, option):
        raise SshKeyError(problem)
    if windows:
        if problem := windows_acl.key_problem(str(path), run):
            raise SshKeyError(problem)
    elif info.st_mode & 0o077:
        raise SshKeyError(
            f"private key {path} has mode {stat.S_IMODE(info.st_mode):04o}: group or others can read it, "
            f"and ssh refuses such a key ('UNPROTECTED PRIVATE KEY FILE'). Fix: chmod 400 {shlex.quote(str(path))}"
        )


def _content_problem(path: Path, option: KeyOption) -> str | None:
    """Why the file PATH (given as OPTION) holds no private key ssh could read, or None when it may.

    Raises SshKeyError when it cannot be read.
    """
    try:
        with path.open("rb") as file:
            head = file.read(_HEAD_BYTES)
    except OSError as error:
        raise SshKeyError(f"cannot read private key {path}: {error.strerror}") from None
    if _PRIVATE_KEY.search(head):
        return None
    given = f"{option.name} {path}"
    if _PUBLIC_KEY_FILE.match(head):
        private = path.with_suffix("") if path.suffix == ".pub" else None
        if private is not None and private.is_file():
            return f"{given} is a public key; ssh logs in with the private key beside it. Fix: {option.fix(private)}"
        pair = "its pair's file without .pub" if private is not None else "not a .pub file"
        return f"{given} is a public key; ssh logs in with a private key ({pair}). Fix: {option.otherwise}"
    if _PUTTY_KEY.match(head):
        return (
            f"{given} is a PuTTY key, which ssh cannot read. Fix: in PuTTYgen, load it and use Conversions > Export "
            f"OpenSSH key; then {option.fix('THAT_FILE')}"
        )
    return f"{given} is not an OpenSSH private key (no -----BEGIN … PRIVATE KEY----- line). Fix: {option.otherwise}"


def ensure_key_pair(
    path: Path,
    comment: str,
    *,
    option: KeyOption = SSH_KEY_PATH,
    windows: bool = ON_WINDOWS,
    run: Runner = windows_acl.run,
) -> SshKey:
    """Return the key pair at PATH, generating an ed25519 pair there first if PATH does not exist.

    A new private key is written atomically with mode 0400 (on Windows: an ACL granting the user
    alone, set with RUN) and its public half to PATH.pub (mode 0644). Existing files are never
    modified. Raises SshKeyError when the key cannot be used, saying what to do where OPTION named it.
    """
    if not path.exists() and not path.is_symlink():
        _generate(path, comment, windows, run)
    check_private_key_file(path, option=option, windows=windows, run=run)
    return SshKey(private_key_path=path, public_key=_public_key_of(path))


def _generate(path: Path, comment: str, windows: bool, run: Runner) -> None:
    public_path = _public_path(path)
    if public_path.exists():
        raise SshKeyError(
            f"{public_path} exists but its private key {path} does not; course-vm will not overwrite it. "
            f"Fix: set sshKeyPath to the private key of that pair, or move {public_path} away"
        )
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise SshKeyError(
            f"cannot create {path.parent} for the new key: {error.strerror}. Fix: set sshKeyPath to a writable place"
        ) from None
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if windows:
        _write_new_windows(path, private, run)
    else:
        _write_new(path, private, 0o400)
    _write_new(public_path, public + b" " + comment.encode() + b"\n", 0o644, windows=windows)


def _write_new_windows(path: Path, data: bytes, run: Runner) -> None:
    """Create PATH with DATA readable by the user alone, with no moment at which anyone else could open it.

    Windows checks access when a file is opened, so a file made with the folder's inherited ACL
    and restricted afterwards could be opened by others in between, and read once written. So the
    key is written inside a new folder that is restricted first (its files inherit the user
    alone), linked to PATH, and then given that ACL as its own (no longer inherited).
    """
    private_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".course-vm.tmp", dir=path.parent))
    try:
        windows_acl.restrict(str(private_dir), run, inheritable=True)
        _write_new(path, data, 0o600, windows=True, temporary=private_dir / path.name)
        windows_acl.restrict(str(path), run)
    finally:
        private_dir.rmdir()


def _write_new(path: Path, data: bytes, mode: int, *, windows: bool = False, temporary: Path | None = None) -> None:
    """Create PATH with DATA and MODE atomically: readers see no file or the whole file, never a
    partial one, and an existing PATH is never replaced. The data is written to TEMPORARY (by
    default a new name beside PATH) and linked to PATH.

    On Windows the mode is not set: it would only mark the file read-only (which Python cannot
    delete), Python before 3.13 has no os.fchmod there, and the ACL is what protects the file.
    """
    temporary = temporary or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if windows else mode)
    try:
        if not windows:
            os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise SshKeyError(f"{path} appeared while course-vm was creating it; run the command again") from None
    except OSError as error:
        raise SshKeyError(f"cannot create {path}: {error.strerror}. Fix: set sshKeyPath to a writable place") from None
    finally:
        temporary.unlink()


def _public_path(path: Path) -> Path:
    return path.with_name(path.name + ".pub")


def _public_key_of(path: Path) -> str:
    """The public key of the private key at PATH, or of PATH.pub when the private key is encrypted."""
    data = path.read_bytes()
    key: PrivateKeyTypes
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # encrypted: the passphrase is the user's, so use the .pub beside it
        return _public_key_from_file(path)
    except (ValueError, UnsupportedAlgorithm):
        raise SshKeyError(
            f"{path} is not an OpenSSH or PEM private key. "
            "Fix: set sshKeyPath to a private key such as ~/.ssh/id_ed25519"
        ) from None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        raise SshKeyError(
            f"{path} is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits are needed. "
            "Fix: use an ed25519 key (`ssh-keygen -t ed25519`)"
        )
    if not isinstance(key, (ed25519.Ed25519PrivateKey, rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SshKeyError(
            f"{path} holds a key type ssh no longer accepts. Fix: use an ed25519 key (`ssh-keygen -t ed25519`)"
        )
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return _normalized(public.decode(), path)


def _public_key_from_file(path: Path) -> str:
    public_path = _public_path(path)
    try:
        text = public_path.read_text()
    except OSError:
        raise SshKeyError(
            f"{path} is passphrase-protected and {public_path} is missing. Fix: ssh-keygen -y -f {path} > {public_path}"
        ) from None
    return _normalized(text, public_path)


def _normalized(text: str, source: Path) -> str:
    fields = text.split()
    candidate = " ".join(fields[:2])
    if len(fields) < 2 or not _PUBLIC_KEY.fullmatch(candidate):
        raise SshKeyError(
            f"{source} does not hold an ed25519, RSA or ECDSA public key. "
            "Fix: set sshKeyPath to a key made by `ssh-keygen -t ed25519`"
        )
    return candidate


# A student's generated key logs in to their VM, and goes to them in their hand-out. A class's keys are
# named `sshKeyPath-NAME` without the stack (renaming them would replace every VM), so two stacks with
# the same sshKeyPath and a student of the same name would share one: each would log in to both VMs.
# So each stack claims its students' keys in `KEY.stacks` (a line `STACK STUDENT`), and a key another
# stack claims is refused. `down` takes the stack's claims away (release_claims).
CLAIMS_SUFFIX = ".stacks"
CLAIMS_LOCK = ".course-vm-claims.lock"


def claims_path(key: Path) -> Path:
    """The file that names the stacks whose student's key KEY is."""
    return key.with_name(key.name + CLAIMS_SUFFIX)


def key_claims(key: Path) -> list[tuple[str, str]]:
    """The (stack, student) pairs whose key KEY is, as KEY.stacks names them; [] when none does.

    Raises SshKeyError when the file exists but cannot be read: a claim that cannot be read is no
    proof that there is none.
    """
    path = claims_path(key)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise SshKeyError(
            f"cannot read {path} ({reason}), which names the stacks whose student's key {key.name} is. "
            f"Fix: make it a readable text file, one line `STACK STUDENT` per stack"
        ) from None
    claims = []
    for line in text.splitlines():
        stack, _, student = line.strip().partition(" ")
        if stack:
            claims.append((stack, student.strip()))
    return claims


def claim_keys(stack: str, students: Sequence[tuple[str, Path]], instructor_key: Path) -> None:
    """Claim STUDENTS' generated keys ((name, key) pairs) for STACK, once every check has passed.

    INSTRUCTOR_KEY (sshKeyPath: the key of a stack's one VM and of students who brought their own)
    is no student's and is not claimed; it must not be another stack's student's key either.
    Raises SettingsError naming every key another stack claims (then nothing is claimed), and
    SshKeyError when a claim cannot be read or written.
    """
    if not students:  # one VM, or every student brought a key: nothing to claim, no lock file made
        _claim_keys(stack, students, instructor_key)
        return
    with _claims_locked(instructor_key):
        _claim_keys(stack, students, instructor_key)


def _claim_keys(stack: str, students: Sequence[tuple[str, Path]], instructor_key: Path) -> None:
    fix = f"Fix: pulumi config set sshKeyPath ~/.ssh/course-vm-{stack} (a path of this stack's own)"
    problems = []
    for name, key in students:
        for other, _ in key_claims(key):
            if other != stack:
                problems.append(
                    f"{key} is student {name}'s key of stack {other}; two stacks must not share a student's key. {fix}"
                )
                break
    for other, student in key_claims(instructor_key)[:1]:
        problems.append(
            f"{instructor_key} is student {student}'s key of stack {other}; the instructor's key (sshKeyPath) must be "
            f"no student's. {fix}"
        )
    if problems:
        raise SettingsError(problems)
    for name, key in students:
        if (stack, name) not in key_claims(key):
            _append(claims_path(key), f"{stack} {name}\n")


def release_claims(stack: str, instructor_key: Path, *, now: str | None = None) -> list[Path]:
    """Take STACK's claims off the students' keys made from INSTRUCTOR_KEY (`KEY-NAME`): once its VMs
    are gone, another stack may use those names. A claims file no stack is left in is removed, and
    its key pair retired: renamed `KEY.retired-NOW` (UTC, e.g. 20261127T180000Z), never deleted, so
    that a later class's student of the same name gets a new key, not the one a former student
    still holds. Returns the retired keys' new paths.
    """
    stamp = now or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    retired = []
    pattern = glob.escape(instructor_key.name) + "-*" + CLAIMS_SUFFIX
    if not any(instructor_key.parent.glob(pattern)):
        return []  # no student's key was ever claimed here: no lock file made
    with _claims_locked(instructor_key):
        for path in sorted(instructor_key.parent.glob(pattern)):
            key = path.with_name(path.name[: -len(CLAIMS_SUFFIX)])
            claims = key_claims(key)
            kept = [f"{other} {student}\n" for other, student in claims if other != stack]
            if kept:
                if len(kept) < len(claims):
                    path.write_text("".join(kept), encoding="utf-8")
                continue
            # Retired first, then unclaimed: a key that could not be renamed keeps its claim.
            if key.exists():
                retired.append(_retire(key, stamp))
            path.unlink(missing_ok=True)
    return retired


def _retire(key: Path, stamp: str) -> Path:
    """Rename KEY and its .pub to `KEY.retired-STAMP`; the new path. Raises SshKeyError when it cannot."""
    new = key.with_name(f"{key.name}.retired-{stamp}")
    try:
        key.rename(new)
        public = key.with_name(key.name + ".pub")
        if public.exists():
            public.rename(new.with_name(new.name + ".pub"))
    except OSError as error:
        raise SshKeyError(
            f"cannot retire {key} ({error.strerror or error}); it stays claimed. Fix: make its folder writable, "
            "then run `course-vm down` again"
        ) from None
    return new


@contextlib.contextmanager
def _claims_locked(instructor_key: Path) -> Iterator[None]:
    """One stack at a time claims or releases the students' keys in INSTRUCTOR_KEY's folder: the claims
    are checked, then written, under one lock there (`.course-vm-claims.lock`). One per folder, not per
    key: `K` with student `ta-anna` and `K-ta` with student `anna` both name `K-ta-anna`."""
    lock = instructor_key.parent / CLAIMS_LOCK
    try:
        with locked(lock):
            yield
    except OSError as error:
        if error.filename != str(lock):
            raise
        raise SshKeyError(
            f"cannot lock {lock} ({error.strerror or error}), which keeps two stacks from claiming one student's key "
            "at once. Fix: set sshKeyPath to a writable place"
        ) from None


def _append(path: Path, line: str) -> None:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as file:
            file.write(line)
    except OSError as error:
        raise SshKeyError(
            f"cannot write {path} ({error.strerror or error}), which claims a student's key for this stack. "
            "Fix: set sshKeyPath to a writable place"
        ) from None
