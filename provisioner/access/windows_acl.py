"""Windows' form of `chmod 400`: read a key file's ACL with `icacls`, judge it as OpenSSH does, and restrict it."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from provisioner.errors import SshKeyError

Runner = Callable[[Sequence[str]], str]
"""Runs a command and returns its standard output; raises SshKeyError when it cannot or it fails.
The seam of this module: tests hand in recorded `icacls` and `whoami` outputs."""

# `PRINCIPAL:(flags)(rights)`; a principal may hold spaces and a backslash, never `:(`.
_ENTRY = re.compile(r"(?P<principal>\S.*?):(?P<rights>(?:\([A-Za-z,]+\))+)\s*")
# Inheritance flags of an entry, as opposed to the rights it grants.
_FLAGS = frozenset({"I", "OI", "CI", "IO", "NP", "DENY"})
# The principals OpenSSH for Windows (check_secure_file_permission) lets hold a key besides its
# user: the local SYSTEM account and the Administrators group, by English name or by SID (icacls
# prints a SID it cannot name). On a non-English Windows these names are translated; there the
# refusal's fix removes them, and the key it leaves (the user alone) is accepted in any language.
_TRUSTED = frozenset({"nt authority\\system", "s-1-5-18", "builtin\\administrators", "s-1-5-32-544"})


@dataclass(frozen=True)
class AclEntry:
    """One line of `icacls PATH`: who, and the parenthesised flags and rights, e.g. `(I)(RX)`."""

    principal: str
    rights: str

    @property
    def _parts(self) -> list[str]:
        return re.findall(r"\(([^)]*)\)", self.rights)

    @property
    def inherited(self) -> bool:
        return "I" in self._parts

    @property
    def grants_access(self) -> bool:
        """Whether this entry lets its principal open the file: an allow entry granting anything but N."""
        parts = self._parts
        if "DENY" in parts or "IO" in parts:  # a deny entry takes away; inherit-only applies to children
            return False
        return any(part not in _FLAGS and part != "N" for part in parts)

    def __str__(self) -> str:
        return f"{self.principal}:{self.rights}"


def parse_icacls(output: str, path: str) -> tuple[AclEntry, ...]:
    """The entries of `icacls PATH`'s OUTPUT.

    icacls prints PATH, a space and the first entry on one line, one entry per line under it, then
    a blank line and a summary in the system's language; the summary is not read. Raises
    SshKeyError when OUTPUT does not start with PATH or holds no entry, for then it is not a
    listing this parser knows and no judgement may rest on it.
    """
    lines = output.replace("\r\n", "\n").split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    if not lines or not lines[0].startswith(path + " "):
        raise SshKeyError(f"cannot read the permissions of {path}: icacls printed {output[:200]!r}")
    lines[0] = lines[0][len(path) :]
    entries = []
    for line in lines:
        if not line.strip():
            break  # the summary follows the first blank line
        match = _ENTRY.fullmatch(line.strip())
        if not match:
            raise SshKeyError(f"cannot read the permissions of {path}: icacls printed {line.strip()!r}")
        entries.append(AclEntry(match.group("principal"), match.group("rights")))
    if not entries:
        raise SshKeyError(f"cannot read the permissions of {path}: icacls listed no entry")
    return tuple(entries)


def others(entries: Sequence[AclEntry], user: str) -> tuple[AclEntry, ...]:
    """The ENTRIES that let someone other than USER, SYSTEM or Administrators open the file.

    An entry's inheritance does not matter to OpenSSH, only whom it grants: a key in the user's
    profile normally inherits SYSTEM, Administrators and the user, and is accepted.
    """
    trusted = _TRUSTED | {user.lower()}
    return tuple(e for e in entries if e.grants_access and e.principal.lower().lstrip("*") not in trusted)


def fix_command(path: str, user: str, entries: Sequence[AclEntry]) -> str:
    """One `icacls` command that leaves USER alone able to read PATH, whatever else ENTRIES grant.

    `/inheritance:r` drops inherited entries, `/remove` each other principal's own entries (which
    `/inheritance:r` keeps), and `/grant:r` replaces the user's with read: `chmod 400`. One
    command, for cmd and PowerShell chain commands differently.
    """
    removals = []
    for entry in others(entries, user):
        # icacls prints an account it cannot name (a deleted one) as its SID, and takes one as `*SID`.
        principal = "*" + entry.principal if re.fullmatch(r"S-1-[0-9-]+", entry.principal) else entry.principal
        removal = f'/remove "{principal}"'
        if not entry.inherited and removal not in removals:
            removals.append(removal)
    return " ".join([f'icacls "{path}" /inheritance:r', *removals, f'/grant:r "{user}:R"'])


def key_problem(path: str, run: Runner) -> str | None:
    """Why OpenSSH for Windows would refuse the private key at PATH, ending in its `Fix:`; None if it would not.

    Raises SshKeyError when icacls or whoami cannot be run or print what this module cannot read.
    """
    entries = parse_icacls(run(["icacls", path]), path)
    user = current_user(run)
    refused = others(entries, user)
    if not refused:
        return None
    listed = ", ".join(map(str, refused))
    return (
        f"private key {path} can be opened by others: its permissions grant {listed}, and ssh refuses such a key "
        f"('UNPROTECTED PRIVATE KEY FILE'). Fix: {fix_command(path, user, entries)}"
    )


def restrict(path: str, run: Runner, *, inheritable: bool = False) -> None:
    """Give the current user alone full control of PATH: no inherited entries, no one else.

    With INHERITABLE (for a directory), files created in PATH afterwards get that same ACL.
    Raises SshKeyError when icacls fails.
    """
    rights = "(OI)(CI)F" if inheritable else "F"
    run(["icacls", path, "/inheritance:r", "/grant:r", f"{current_user(run)}:{rights}"])


def current_user(run: Runner) -> str:
    """`DOMAIN\\name` of the user running course-vm, as `whoami` prints it."""
    user = run(["whoami"]).strip()
    if not user:
        raise SshKeyError("cannot tell who is logged in: `whoami` printed nothing")
    return user


def run(command: Sequence[str]) -> str:
    """Run COMMAND (icacls or whoami) and return what it printed.

    Both print in the console's OEM code page, so that is how the output is read on Windows.
    Raises SshKeyError naming the command and its last output line when it is missing or fails.
    """
    encoding = "oem" if os.name == "nt" else None
    try:
        done = subprocess.run(
            list(command), capture_output=True, encoding=encoding, errors="replace", check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SshKeyError(
            f"cannot run {command[0]}: {error}. Fix: check that C:\\Windows\\System32 is on PATH"
        ) from None
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise SshKeyError(f"`{' '.join(command)}` failed (exit {done.returncode}): {said[-1] if said else 'no output'}")
    return done.stdout
