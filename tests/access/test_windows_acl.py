"""The Windows key rule, judged on recorded `icacls` listings, and the commands that fix or set an ACL."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import pytest

from provisioner.access.windows_acl import AclEntry, fix_command, key_problem, others, parse_icacls, restrict, run
from provisioner.errors import SshKeyError

SUMMARY = "Successfully processed 1 files; Failed processing 0 files"
SUMMARY_DE = "1 Dateien erfolgreich verarbeitet, bei 0 Dateien ist ein Verarbeitungsfehler aufgetreten."
SUMMARY_FR = "1 fichiers correctement traités ; échec du traitement de 0 fichiers"


def listing(path: str, *entries: str, summary: str = SUMMARY) -> str:
    """What `icacls PATH` prints (CRLF line ends, entries aligned under the first, a summary)."""
    pad = " " * (len(path) + 1)
    lines = [f"{path} {entries[0]}", *(pad + entry for entry in entries[1:]), "", summary, ""]
    return "\r\n".join(lines)


class Recorder:
    """A stand-in for running commands: answers `icacls PATH` and `whoami` from a recording."""

    def __init__(self, acl: str = "", user: str = "desktop-1\\alice") -> None:
        self.acl = acl
        self.user = user
        self.calls: list[list[str]] = []

    def __call__(self, command: Sequence[str]) -> str:
        self.calls.append(list(command))
        if list(command) == ["whoami"]:
            return self.user + "\r\n"
        if len(command) == 2 and command[0] == "icacls":
            return self.acl
        return "processed file: " + command[1] + "\r\n" + SUMMARY + "\r\n"


KEY = "C:\\Users\\alice\\.ssh\\course-vm"
SPACED = "C:\\Users\\Alice Smith\\.ssh\\course-vm"
COPIED = "C:\\keys\\course-vm"
SID = "S-1-5-21-1004336348-1177238915-682003330-1001"

# (path, icacls listing, whoami, the fix or None when the key is accepted)
TABLE = [
    pytest.param(
        KEY,
        listing(KEY, "NT AUTHORITY\\SYSTEM:(I)(F)", "BUILTIN\\Administrators:(I)(F)", "DESKTOP-1\\alice:(I)(F)"),
        "desktop-1\\alice",
        None,
        id="a key in the user's profile: inherited SYSTEM, Administrators and the user, as OpenSSH accepts",
    ),
    pytest.param(KEY, listing(KEY, "DESKTOP-1\\alice:(F)"), "desktop-1\\alice", None, id="as course-vm makes it"),
    pytest.param(KEY, listing(KEY, "DESKTOP-1\\alice:(R)"), "desktop-1\\alice", None, id="after the fix"),
    pytest.param(
        SPACED,
        listing(SPACED, "NT AUTHORITY\\SYSTEM:(F)", "DESKTOP-1\\Alice Smith:(R)"),
        "desktop-1\\alice smith",
        None,
        id="a user and a path with spaces",
    ),
    pytest.param(
        KEY, listing(KEY, "AzureAD\\AliceSmith:(F)"), "azuread\\alicesmith", None, id="an Entra ID (Azure AD) user"
    ),
    pytest.param(
        KEY,
        listing(KEY, "Everyone:(DENY)(R)", "DESKTOP-1\\alice:(R)"),
        "desktop-1\\alice",
        None,
        id="a deny entry takes away, it grants nothing",
    ),
    pytest.param(
        KEY,
        listing(KEY, "DESKTOP-1\\alice:(R)", summary=SUMMARY_DE),
        "desktop-1\\alice",
        None,
        id="a German summary line",
    ),
    pytest.param(
        KEY,
        listing(KEY, "*S-1-5-18:(F)", "DESKTOP-1\\alice:(R)", summary=SUMMARY_FR),
        "desktop-1\\alice",
        None,
        id="SYSTEM by SID, a French summary line",
    ),
    pytest.param(
        COPIED,
        listing(
            COPIED,
            "BUILTIN\\Administrators:(I)(F)",
            "NT AUTHORITY\\SYSTEM:(I)(F)",
            "BUILTIN\\Users:(I)(RX)",
            "NT AUTHORITY\\Authenticated Users:(I)(M)",
        ),
        "desktop-1\\alice",
        'icacls "C:\\keys\\course-vm" /inheritance:r /grant:r "desktop-1\\alice:R"',
        id="copied to C:\\keys: Users and Authenticated Users inherited from C:\\",
    ),
    pytest.param(
        KEY,
        listing(KEY, "Everyone:(R)", "NT AUTHORITY\\SYSTEM:(I)(F)", "DESKTOP-1\\alice:(I)(F)"),
        "desktop-1\\alice",
        'icacls "C:\\Users\\alice\\.ssh\\course-vm" /inheritance:r /remove "Everyone" /grant:r "desktop-1\\alice:R"',
        id="Everyone granted read explicitly",
    ),
    pytest.param(
        SPACED,
        listing(SPACED, "DESKTOP-1\\Alice Smith:(F)", "DESKTOP-1\\bob:(R)", "DESKTOP-1\\bob:(RX)"),
        "desktop-1\\alice smith",
        'icacls "C:\\Users\\Alice Smith\\.ssh\\course-vm" /inheritance:r /remove "DESKTOP-1\\bob" '
        '/grant:r "desktop-1\\alice smith:R"',
        id="another user, twice, beside a user with a space",
    ),
    pytest.param(
        KEY,
        listing(KEY, f"{SID}:(R)", "DESKTOP-1\\alice:(F)"),
        "desktop-1\\alice",
        f'icacls "C:\\Users\\alice\\.ssh\\course-vm" /inheritance:r /remove "*{SID}" /grant:r "desktop-1\\alice:R"',
        id="a deleted account icacls can only show by SID",
    ),
    pytest.param(
        KEY,
        listing(KEY, "NT-AUTORITÄT\\SYSTEM:(I)(F)", "VORDEFINIERT\\Administratoren:(I)(F)", "DESKTOP-1\\alice:(I)(F)"),
        "desktop-1\\alice",
        'icacls "C:\\Users\\alice\\.ssh\\course-vm" /inheritance:r /grant:r "desktop-1\\alice:R"',
        id="German names of SYSTEM and Administrators are not known: refused, and the fix leaves the user alone",
    ),
]


@pytest.mark.parametrize(("path", "acl", "user", "fix"), TABLE)
def test_the_key_rule_on_recorded_icacls_listings(path: str, acl: str, user: str, fix: str | None) -> None:
    recorder = Recorder(acl, user)
    problem = key_problem(path, recorder)
    assert recorder.calls == [["icacls", path], ["whoami"]]
    if fix is None:
        assert problem is None
    else:
        assert problem is not None
        assert problem.endswith(f". Fix: {fix}")


def test_a_refusal_names_what_is_granted_to_whom() -> None:
    acl = listing(COPIED, "NT AUTHORITY\\SYSTEM:(I)(F)", "BUILTIN\\Users:(I)(RX)", "Everyone:(R)")
    assert key_problem(COPIED, Recorder(acl)) == (
        "private key C:\\keys\\course-vm can be opened by others: its permissions grant BUILTIN\\Users:(I)(RX), "
        "Everyone:(R), and ssh refuses such a key ('UNPROTECTED PRIVATE KEY FILE'). "
        'Fix: icacls "C:\\keys\\course-vm" /inheritance:r /remove "Everyone" /grant:r "desktop-1\\alice:R"'
    )


def test_the_fixed_acl_is_accepted() -> None:
    """What the fix leaves (the user's read, nothing inherited) passes the rule: the fix converges."""
    assert key_problem(COPIED, Recorder(listing(COPIED, "desktop-1\\alice:(R)"))) is None


def test_parse_reads_principals_with_spaces_and_every_flag() -> None:
    acl = listing(
        SPACED,
        "NT AUTHORITY\\Authenticated Users:(I)(M)",
        "DESKTOP-1\\Alice Smith:(OI)(CI)(F)",
        "Everyone:(DENY)(W,Rc)",
        "CREATOR OWNER:(OI)(CI)(IO)(F)",
        "BUILTIN\\Guests:(N)",
    )
    entries = parse_icacls(acl, SPACED)
    assert entries == (
        AclEntry("NT AUTHORITY\\Authenticated Users", "(I)(M)"),
        AclEntry("DESKTOP-1\\Alice Smith", "(OI)(CI)(F)"),
        AclEntry("Everyone", "(DENY)(W,Rc)"),
        AclEntry("CREATOR OWNER", "(OI)(CI)(IO)(F)"),
        AclEntry("BUILTIN\\Guests", "(N)"),
    )
    assert [e.inherited for e in entries] == [True, False, False, False, False]
    assert [e.grants_access for e in entries] == [True, True, False, False, False]
    assert others(entries, "desktop-1\\alice smith") == entries[:1]


@pytest.mark.parametrize(
    "output",
    [
        "",
        "C:\\Users\\alice\\.ssh\\course-vm: The system cannot find the file specified.\r\n"
        "Successfully processed 0 files; Failed processing 1 files\r\n",
        "C:\\other\\file DESKTOP-1\\alice:(F)\r\n\r\n" + SUMMARY,
        listing(KEY, "DESKTOP-1\\alice:(F)", "a line icacls does not print"),
    ],
    ids=["nothing", "an error", "another file", "an unknown line"],
)
def test_a_listing_that_is_not_understood_is_an_error_not_a_verdict(output: str) -> None:
    with pytest.raises(SshKeyError, match=r"cannot read the permissions of C:\\Users\\alice\\.ssh\\course-vm"):
        parse_icacls(output, KEY)


def test_restrict_grants_the_user_alone() -> None:
    recorder = Recorder(user="desktop-1\\alice smith")
    restrict(SPACED, recorder)
    restrict("C:\\keys\\.tmp", recorder, inheritable=True)
    assert recorder.calls == [
        ["whoami"],
        ["icacls", SPACED, "/inheritance:r", "/grant:r", "desktop-1\\alice smith:F"],
        ["whoami"],
        ["icacls", "C:\\keys\\.tmp", "/inheritance:r", "/grant:r", "desktop-1\\alice smith:(OI)(CI)F"],
    ]


def test_fix_command_without_others_still_sets_the_user_alone() -> None:
    assert fix_command(KEY, "d\\a", []) == f'icacls "{KEY}" /inheritance:r /grant:r "d\\a:R"'


def test_run_returns_output_and_reports_failure_in_one_line() -> None:
    assert run([sys.executable, "-c", "print('desktop-1\\\\alice')"]) == "desktop-1\\alice\n"
    with pytest.raises(SshKeyError) as raised:
        run([sys.executable, "-c", "import sys; print('Access is denied.', file=sys.stderr); sys.exit(5)"])
    assert str(raised.value).endswith("failed (exit 5): Access is denied.")
    with pytest.raises(SshKeyError, match="cannot run no-such-icacls"):
        run(["no-such-icacls", "x"])
