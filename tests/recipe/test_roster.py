"""The roster: names from `students` or a CSV file, and one exact message per kind of bad entry."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from provisioner.paths import project_dir
from provisioner.recipe.roster import delimiter, email_address
from provisioner.recipe.settings import parse_settings
from tests.support.settings_problems import GOOD, NAME_RULE, PROJECT, ZONE, problems
from tests.support.student_keys import ed25519_line, public_line


def test_a_roster_csv_gives_the_names_in_its_order(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    # As spreadsheets export it: a byte-order mark, CRLF, extra columns, a blank line, padded cells.
    roster.write_bytes(b"\xef\xbb\xbfEmail,Name,Group\r\nc@x.org, carol ,A\r\n\r\na@x.org,alice,B\r\n")
    s = parse_settings({**GOOD, "studentsCsv": str(roster)}, PROJECT, ZONE)
    assert s.students == ("carol", "alice")


def test_a_roster_saved_by_a_european_spreadsheet_is_read(tmp_path: Path) -> None:
    # Excel's "CSV UTF-8" where the list separator is `;`: a byte-order mark, CRLF, `;` between cells.
    key = ed25519_line()
    roster = tmp_path / "roster.csv"
    text = f"Name;sshPublicKey;Email;Groupe\r\nalice;{key} alice@laptop;Alice@Example.org;A, B\r\n;;;\r\nbob;;;B\r\n"
    roster.write_bytes(b"\xef\xbb\xbf" + text.encode())
    s = parse_settings({**GOOD, "studentsCsv": str(roster)}, PROJECT, ZONE)
    assert [(entry.name, entry.ssh_public_key, entry.email) for entry in s.roster] == [
        ("alice", key, "alice@example.org"),
        ("bob", "", ""),
    ]


def test_a_tab_separated_roster_is_read(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(b"group\temail\tname\r\nA, B\tc@x.org\tcarol\r\nA;B\t\talice\r\n")
    s = parse_settings({**GOOD, "studentsCsv": str(roster)}, PROJECT, ZONE)
    assert [(entry.name, entry.email) for entry in s.roster] == [("carol", "c@x.org"), ("alice", "")]


@pytest.mark.parametrize("line_end", ["\n", "\r\n", "\r"])
def test_a_one_column_roster_is_read(tmp_path: Path, line_end: str) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(line_end.join(["\ufeffName", "alice", "", "bob", ""]).encode())
    assert parse_settings({**GOOD, "studentsCsv": str(roster)}, PROJECT, ZONE).students == ("alice", "bob")


def test_a_delimiter_in_a_one_column_rosters_name_stays_in_the_name(tmp_path: Path) -> None:
    # No delimiter in the header: the file is read as comma-separated, so a `;` is part of the name, refused whole.
    roster = tmp_path / "roster.csv"
    roster.write_text("name\nalice;bob\n")
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv {roster} line 2: got 'alice;bob', but {NAME_RULE}. "
        f"Fix: correct that line of {roster}, e.g. to alice-bob"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name\nalice\n", ","),
        ("name\nalice;bob\talice\n", ","),
        ("name,email\n", ","),
        ("name;email\n", ";"),
        ("name\temail\n", "\t"),
        ('"Last, First";name\n', ";"),  # a header cell holding another delimiter
        ("name;Last, First, Middle\n", ";"),  # even more often than the delimiter itself
        ('\n;;\r\n\t\n"";""\nemail\tname\n', "\t"),  # blank lines and lines of empty cells before the header
        ("email;group;x,y\n", ";"),  # no `name`: the most frequent
        ("email\n", ","),
        ("", ","),
    ],
)
def test_the_delimiter_is_the_one_that_gives_the_header_a_name_column(text: str, expected: str) -> None:
    assert delimiter(text) == expected


def test_a_relative_roster_path_is_relative_to_the_project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "roster.csv").write_text("name\nalice\n")
    monkeypatch.setattr("provisioner.recipe.roster.project_dir", lambda: tmp_path)
    assert parse_settings({**GOOD, "studentsCsv": "roster.csv"}, PROJECT, ZONE).students == ("alice",)


def test_every_bad_roster_entry_is_reported_at_once_each_fix_naming_a_free_name() -> None:
    # Each suggested name is valid and on the roster nowhere else: following a fix makes no new problem.
    assert problems({"students": ["alice", "Bob Smith", "root", "alice", "x_y", "dave-", "alice-2"]}) == [
        f"students[1]: got 'Bob Smith', but {NAME_RULE}. Fix: pulumi config set --path 'students[1]' bob-smith",
        "students[2]: got 'root', but that name belongs to the system or grants extra rights. "
        "Fix: pulumi config set --path 'students[2]' student3",
        "students[3]: got 'alice', but that name is listed twice, and each student gets one VM. "
        "Fix: give this student another name: pulumi config set --path 'students[3]' alice-3",
        f"students[4]: got 'x_y', but {NAME_RULE}. Fix: pulumi config set --path 'students[4]' x-y",
        f"students[5]: got 'dave-', but {NAME_RULE}. Fix: pulumi config set --path 'students[5]' dave",
    ]


def test_following_every_fix_of_a_bad_roster_leaves_no_problem() -> None:
    roster = ["alice", "Bob Smith", "root", "alice", "x_y", "dave-", "alice-2", "student3", "", "1", "alice"]
    fixed = list(roster)
    for line in problems({"students": roster}):
        index, name = re.fullmatch(r"students\[(\d+)\]: .* 'students\[\d+\]' (\S+)", line).groups()  # type: ignore[union-attr]
        fixed[int(index)] = name
    assert parse_settings({**GOOD, "students": fixed}, PROJECT, ZONE).students == tuple(fixed)


def test_bad_csv_lines_are_reported_with_their_line_numbers(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,a@x.org\nAlice Smith,b@x.org\n,c@x.org\nalice,d@x.org\n")
    where = f"studentsCsv {roster}"
    fix = f"Fix: correct that line of {roster}, e.g. to"
    assert problems({"studentsCsv": str(roster)}) == [
        f"{where} line 3: got 'Alice Smith', but {NAME_RULE}. {fix} alice-smith",
        f"{where} line 4: got '', but {NAME_RULE}. {fix} student3",
        f"{where} line 5: got 'alice', but that name is listed twice, and each student gets one VM. "
        f"Fix: give this student another name: correct that line of {roster}, e.g. to alice-2",
    ]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("", "lists no students"),
        ("name,email\n\n,\n", "lists no students"),
        ("name;email\r\n;\r\n", "lists no students"),
        (None, "cannot be read (No such file or directory)"),
    ],
)
def test_an_unusable_roster_file_says_what_it_must_hold(tmp_path: Path, content: str | None, why: str) -> None:
    roster = tmp_path / "roster.csv"
    if content is not None:
        roster.write_text(content)
    [message] = problems({"studentsCsv": str(roster)})
    assert message.startswith(f"studentsCsv: got '{roster}', but {roster} {why}. Fix: ")


HEADER_FIX = (
    "Fix: make its first line name the columns, separated by commas, semicolons or tabs, one being `name` "
    "(e.g. `name` alone, or `name,sshPublicKey,email`), and save it as CSV UTF-8"
)


@pytest.mark.parametrize(
    ("content", "header"),
    [
        (b"email\na@x.org\n", "line 1), split at commas, holds the column 'email'"),
        # Another delimiter than the three: the header is one column, which shows it.
        (b"\xef\xbb\xbfEmail|Name\r\na@x.org|alice\r\n", "line 1), split at commas, holds the column 'Email|Name'"),
        (b"\r\n;;\r\nEmail;Nom\r\n", "line 3), split at semicolons, holds the columns 'Email', 'Nom'"),
        # A second byte-order mark (a file saved twice over) is not stripped as a space is: it shows, escaped.
        (b"\xef\xbb\xbf\xef\xbb\xbfname\nalice\n", "line 1), split at commas, holds the column '\\ufeffname'"),
        # Printable and short, however many and long the columns: each cut, and the rest counted.
        (b"\x1b[2Jx\t" + b"y" * 40 + b"\t" + b"\t".join(b"c%d" % i for i in range(9)) + b"\n",
         "line 1), split at tabs, holds the columns '\\x1b[2Jx', 'yyyyyyyyyyyyyyyyyyyyyyyy...', 'c0', 'c1', 'c2', "
         "'c3', 'c4', 'c5', and 3 more"),
    ],
)  # fmt: skip
def test_a_roster_without_a_name_column_shows_its_header_as_read(tmp_path: Path, content: bytes, header: str) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(content)
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv: got '{roster}', but {roster} has no `name` column: its header ({header}. {HEADER_FIX}"
    ]


def test_a_roster_in_another_encoding_than_utf8_says_so_and_where(tmp_path: Path) -> None:
    # What a spreadsheet's plain CSV saves in Western Europe (Windows-1252): here an accented letter on line 3.
    roster = tmp_path / "roster.csv"
    roster.write_bytes(b"name;full name\r\nalice;Alice\r\njose;Jos\xe9\r\n")
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv: got '{roster}', but {roster} is not UTF-8 text (byte 0xe9 on line 3). "
        "Fix: save it again as CSV UTF-8 (a spreadsheet's plain CSV may be in another encoding)"
    ]


@pytest.mark.parametrize("value", ["roster.csv", "~/roster.csv", "rosters/../roster.csv"])
def test_a_missing_roster_names_the_absolute_path_tried(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    project, home = tmp_path / "project", tmp_path / "home"
    monkeypatch.setattr("provisioner.recipe.roster.project_dir", lambda: project)
    monkeypatch.setenv("HOME", str(home))
    tried = (home if value.startswith("~") else project) / value.removeprefix("~/")
    assert problems({"studentsCsv": value}) == [
        f"studentsCsv: got {value!r}, but {tried} cannot be read (No such file or directory). "
        "Fix: point it at the roster: pulumi config set studentsCsv roster.csv "
        f"(a relative path: `up --set` keeps it as the working directory's; `pulumi config` reads it from {project})"
    ]


def test_a_relative_rosters_lines_are_named_by_the_absolute_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "roster.csv").write_text("name\nBob\n")
    monkeypatch.setattr("provisioner.recipe.roster.project_dir", lambda: tmp_path)
    roster = tmp_path / "roster.csv"
    assert problems({"studentsCsv": "roster.csv"}) == [
        f"studentsCsv {roster} line 2: got 'Bob', but {NAME_RULE}. Fix: correct that line of {roster}, e.g. to bob"
    ]


def test_a_roster_too_big_for_one_stack_names_its_key(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name\n" + "".join(f"s{i}\n" for i in range(201)))
    assert problems({"studentsCsv": str(roster)}) == [
        "studentsCsv: got 'more than 200 names', but one stack holds at most 200 VMs. Fix: split the class"
    ]
    assert problems({"students": [f"s{i}" for i in range(201)]}) == [
        "students: got '201 names', but one stack holds at most 200 VMs. Fix: split the class"
    ]


def test_reading_a_roster_stops_after_one_name_too_many(tmp_path: Path) -> None:
    # What follows the 201st name is never parsed: here a field the csv module refuses.
    roster = tmp_path / "roster.csv"
    roster.write_text("name\n" + "".join(f"s{i}\n" for i in range(201)) + "x" * 200_000 + "\n")
    assert problems({"studentsCsv": str(roster)}) == [
        "studentsCsv: got 'more than 200 names', but one stack holds at most 200 VMs. Fix: split the class"
    ]


def point_fix() -> str:
    return (
        "Fix: point it at the roster: pulumi config set studentsCsv roster.csv "
        "(a relative path: `up --set` keeps it as the working directory's; `pulumi config` reads it from "
        f"{project_dir()})"
    )


@pytest.mark.parametrize("path", ["/dev/zero", "/dev/null", "DIRECTORY"])
def test_a_roster_that_is_no_regular_file_is_refused_unread(tmp_path: Path, path: str) -> None:
    path = str(tmp_path) if path == "DIRECTORY" else path
    assert problems({"studentsCsv": path}) == [
        f"studentsCsv: got {path!r}, but {path} is not a regular file. {point_fix()}"
    ]


def test_a_roster_larger_than_a_class_needs_is_refused_unparsed(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(b"name\n" + b"a" * (1024 * 1024))
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv: got '{roster}', but {roster} is larger than 1 MiB, far more than a roster of 200 students. "
        + point_fix()
    ]


def test_a_field_too_large_for_the_csv_module_is_a_problem_with_its_line(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,notes\nalice,short\nbob," + "x" * 200_000 + "\n")
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv {roster} line 3: got 'field larger than field limit (131072)', but it is not valid CSV. "
        f"Fix: correct that line of {roster}"
    ]


@pytest.mark.parametrize("cell", ['"alice\nbob"', '"alice\r\nbob"', '"alice\rbob"'])
def test_a_line_break_inside_a_quoted_field_is_a_problem_not_a_joined_name(tmp_path: Path, cell: str) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_bytes(f"name,group\ncarol,A\n{cell},B\n".encode())
    value = cell.strip('"')
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv {roster} line 3: got {value!r}, but a field spans lines (a line break inside quotes), "
        f"which no name may hold. Fix: correct that line of {roster}"
    ]


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name\n\nalice\n\n\nBob\n")
    assert problems({"studentsCsv": str(roster)}) == [
        f"studentsCsv {roster} line 6: got 'Bob', but {NAME_RULE}. Fix: correct that line of {roster}, e.g. to bob"
    ]


# Students' own keys and Google accounts: the optional columns sshPublicKey and email.


def _roster(tmp_path: Path, text: str) -> str:
    roster = tmp_path / "roster.csv"
    roster.write_text(text)
    return str(roster)


def test_a_roster_carries_each_students_own_key_and_google_account(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    alice, bob = ed25519_line(), public_line(ec.generate_private_key(ec.SECP384R1()))
    dave = public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    # Header names in any case; a comment (even a hostile one) is dropped; an email is lowercased.
    roster = _roster(
        tmp_path,
        'Name,SSHPublicKey,EMAIL\nalice," ' + alice + ' alice@laptop ",Alice.Smith@Example.org\n'
        f'bob,"{bob} x"": y - z #{{{{ }}}} $(id)",\ncarol,,carol@example.org\ndave,{dave},\n',
    )
    s = parse_settings({**GOOD, "studentsCsv": roster, "sshKeyPath": "/keys/course"}, PROJECT, ZONE)
    assert s.students == ("alice", "bob", "carol", "dave")
    assert [(seat.name, seat.ssh_public_key, seat.email, seat.ssh_key_path) for seat in s.seats] == [
        # A student with their own key: course-vm logs in (verifies, helps) with the instructor's sshKeyPath.
        ("alice", alice, "alice.smith@example.org", Path("/keys/course")),
        ("bob", bob, "", Path("/keys/course")),
        ("carol", "", "carol@example.org", Path("/keys/course-carol")),
        ("dave", dave, "", Path("/keys/course")),
    ]


def test_a_listed_class_has_no_keys_or_accounts() -> None:
    s = parse_settings({**GOOD, "students": ["alice"]}, PROJECT, ZONE)
    [seat] = s.seats
    assert (seat.ssh_public_key, seat.email) == ("", "")


KEY_FIX = (
    "put one line of the student's .pub file (e.g. ~/.ssh/id_ed25519.pub) in its sshPublicKey cell, "
    "or leave the cell empty to have a key pair generated"
)


def test_every_bad_key_and_email_is_reported_at_once_with_its_line(tmp_path: Path) -> None:
    import base64

    from cryptography.hazmat.primitives.asymmetric import rsa

    good = ed25519_line()
    small_rsa = public_line(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 (refused)
    blob = good.split()[1]
    lying = "ssh-rsa " + blob  # an ed25519 key's data under another type's name
    dss = "ssh-dss " + base64.b64encode(b"\x00\x00\x00\x07ssh-dss" + b"\x00" * 40).decode()
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"
    rows = [
        f"alice,{good},alice@example.org",
        f"bob,{good},",  # alice's key again
        "carol,ssh-ed25519 not*base64,",
        f'dave,"command=""/bin/sh"" {good}",',
        f"erin,{small_rsa},",
        f"frank,{dss},",
        f"gina,{lying},",
        f'hal,"{private}",',
        f"ivan,{blob},",
        "judy,,judy smith@example.org",
        "kim,,kim@localhost",
        "lee,,alice@example.org",
        f'mia,"{good.split()[0]}\n{blob}",',
    ]
    roster = _roster(tmp_path, "name,sshPublicKey,email\n" + "\n".join(rows) + "\n")
    optioned = 'command="/bin/sh" ' + good
    split = good.split()[0] + "\n" + blob
    # hal's private key spans three lines, so ivan is on line 12.
    where = f"studentsCsv {roster} line"
    fix = f"Fix: in {roster}, {KEY_FIX}"
    email_fix = (
        f"Fix: in {roster}, put the student's Google account (like name@example.org) in its email cell, "
        "or leave the cell empty"
    )
    assert problems({"studentsCsv": roster}) == [
        f"{where} 3: got {good!r}, but alice (line 2) has that key too, and a key logs in as one student only. {fix}",
        f"{where} 4: got 'ssh-ed25519 not*base64', but its key data is not base64. {fix}",
        f"{where} 5: got {optioned!r}, but it has options before the key type, which course-vm does not carry. {fix}",
        f"{where} 6: got {small_rsa!r}, but it is a 1024-bit RSA key, and at least 2048 bits are needed. {fix}",
        f"{where} 7: got {dss!r}, but ssh-dss (DSA) keys are refused by OpenSSH: they are too weak. {fix}",
        f"{where} 8: got {lying!r}, but its key data is of type ssh-ed25519, not ssh-rsa. {fix}",
        f"{where} 9: got '(a private key, not shown)', but that is a private key: give the .pub file's line, "
        f"and keep the private key secret. Fix: in {roster}, replace it with the line of the student's .pub file; "
        "that private key is no longer secret, so the student makes a new pair (`ssh-keygen -t ed25519`)",
        f"{where} 12: got {blob!r}, but it does not start with a key type "
        "(ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521 or ssh-rsa). "
        f"{fix}",
        f"{where} 13: got 'judy smith@example.org', but it is not a plain email address "
        f"(letters, digits and ._%+- before the @, a domain with a dot after it). {email_fix}",
        f"{where} 14: got 'kim@localhost', but it is not a plain email address "
        f"(letters, digits and ._%+- before the @, a domain with a dot after it). {email_fix}",
        f"{where} 15: got 'alice@example.org', but alice (line 2) has that Google account too, "
        f"and each student reaches only their own VM. {email_fix}",
        f"{where} 16: got {split!r}, but a public key is one line. {fix}",
    ]


def test_a_one_line_private_key_is_never_echoed(tmp_path: Path) -> None:
    secret = "-----BEGIN RSA PRIVATE KEY----- MIIEowIBAAKCAQEA -----END RSA PRIVATE KEY-----"  # noqa: S105
    roster = _roster(tmp_path, f"name,sshPublicKey\nalice,{secret}\n")
    [message] = problems({"studentsCsv": roster})
    assert "MIIEowIBAAKCAQEA" not in message
    assert "that is a private key" in message


SECRET_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"  # noqa: S105
SECRET = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{SECRET_BODY}\n-----END OPENSSH PRIVATE KEY-----"


def test_a_private_key_in_any_column_is_never_echoed(tmp_path: Path) -> None:
    # Columns shifted in a spreadsheet: the private key lands in another cell than sshPublicKey.
    one_line = SECRET.replace("\n", " ")
    rows = [
        f'alice,,"{SECRET}",A',  # spans lines: the check of such cells would quote it
        f"bob,,{one_line},B",
        f"{one_line},,,C",  # in the name column: no name is made of it either
        f"carol,,,{SECRET_BODY}",  # its body alone, without the armour lines
        f"dave,{SECRET_BODY},,D",
    ]
    roster = _roster(tmp_path, "name,sshPublicKey,email,group\n" + "\n".join(rows) + "\n")
    where = f"studentsCsv {roster} line"
    fix = (
        f"Fix: in {roster}, delete it: that private key is no longer secret, so its owner makes a new pair "
        "(`ssh-keygen -t ed25519`) and gives the line of its .pub file in the sshPublicKey cell"
    )
    found = problems({"studentsCsv": roster})
    assert found == [
        f"{where} 2: got '(a private key, not shown)', but its email cell holds a private key. {fix}",
        f"{where} 5: got '(a private key, not shown)', but its email cell holds a private key. {fix}",
        f"{where} 6: got '(a private key, not shown)', but its name cell holds a private key. {fix}",
        f"{where} 7: got '(a private key, not shown)', but its group cell holds a private key. {fix}",
        f"{where} 8: got '(a private key, not shown)', but that is a private key: give the .pub file's line, "
        f"and keep the private key secret. Fix: in {roster}, replace it with the line of the student's .pub file; "
        "that private key is no longer secret, so the student makes a new pair (`ssh-keygen -t ed25519`)",
    ]
    assert not any(SECRET_BODY[:12] in line or "b3blbnnz" in line for line in found)


def test_a_private_key_given_as_a_students_name_is_never_echoed() -> None:
    found = problems({"students": ["alice", SECRET.replace("\n", " ")]})
    assert found == [
        "students[1]: got '(a private key, not shown)', but that is a private key, not a name. "
        "Fix: pulumi config set --path 'students[1]' student2"
    ]


@pytest.mark.parametrize("address", ["a,b@example.org", "a;b@example.org", "<a@example.org>", "a:b@example.org",
                                     "a b@example.org", "a@example.org,b@example.org", "a@exa_mple.org"])  # fmt: skip
def test_an_email_with_any_character_of_address_syntax_is_refused(address: str) -> None:
    # The address becomes the IAM member `user:ADDRESS`: a comma or a colon would make it another member, or two.
    with pytest.raises(ValueError, match="it is not a plain email address"):
        email_address(address)


@pytest.mark.parametrize("folder", ["José (class)", "C:"])
def test_any_printable_roster_path_is_read(tmp_path: Path, folder: str) -> None:
    # `up --set studentsCsv=roster.csv` keeps the working directory's absolute path, whatever its folders are
    # called (on Windows `C:/Users/...`): the path is only read, never written anywhere.
    roster = tmp_path / folder / "roster.csv"
    roster.parent.mkdir()
    roster.write_text("name\nana\n")
    assert parse_settings({**GOOD, "studentsCsv": str(roster)}, PROJECT, ZONE).students == ("ana",)
    [problem] = problems({"studentsCsv": "roster\n.csv"})
    assert "it must be a path: printable text" in problem
