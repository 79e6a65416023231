"""A class roster: student names from `students` or a CSV file, each a login of its own, and from the
CSV each student's own public key and Google account when it gives them."""

from __future__ import annotations

import csv
import io
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from provisioner.paths import project_dir
from provisioner.recipe.names import NOT_A_NAME, SYSTEM_NAME, as_name, student_name_problem
from provisioner.recipe.problems import Fix, set_key
from provisioner.recipe.public_keys import (
    LINE_BREAKS,
    NOT_SHOWN,
    PRIVATE_KEY_WHY,
    PrivateKeyError,
    holds_private_key,
    public_key,
)
from provisioner.recipe.rules import Problems, Setting, as_list

MAX_STUDENTS = 200


def listed(problems: Problems, setting: Setting, value: object) -> tuple[str, ...]:
    """The rule of `students`: a list of valid, distinct names (none when unset)."""
    if value in (None, "", []):
        return ()
    items = as_list(value)
    if items is None:
        fix = set_key(setting.key, ["alice"]) + " (one index per student)"
        problems.add(setting.key, value, "it must be a list of names", fix)
        return ()
    key = setting.key
    where = [(f"{key}[{i}]", _set_at(key, i)) for i in range(len(items))]
    return _check_names(problems, key, items, where)


def _set_at(key: str, index: int) -> Callable[[str], Fix | str]:
    return lambda name: set_key(key, [name], at=index)


MAX_CSV_BYTES = 1024 * 1024
"""Far more than a roster of MAX_STUDENTS needs: a file that big is not a roster, and is not parsed."""
DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}
"""The delimiters a roster's cells may be separated by, each with its name in a message."""
ROSTER_FIX = "a CSV file whose first line names the columns, one being `name`, then one student per line"
HEADER_FIX = (
    "make its first line name the columns, separated by commas, semicolons or tabs, one being `name` "
    "(e.g. `name` alone, or `name,sshPublicKey,email`), and save it as CSV UTF-8"
)
SHOWN_COLUMNS, SHOWN_CHARACTERS = 8, 24
"""How much of a header without a `name` column its problem shows: at most this many columns, each cut to this
many characters."""


@dataclass(frozen=True)
class RosterEntry:
    """One student of a roster CSV: their name, and what its optional columns give them."""

    name: str
    ssh_public_key: str = ""
    """`TYPE BASE64` of their own key (column sshPublicKey, comment dropped); "" to have a pair generated."""
    email: str = ""
    """Their Google account, lowercased (column email); "" for none."""


KEY_COLUMN, EMAIL_COLUMN = "sshpublickey", "email"
# A plain address: it becomes the IAM member `user:EMAIL`, so no space, quote, comma or other syntax.
_EMAIL = re.compile(r"[a-z0-9._%+-]{1,64}@[a-z0-9-]+(\.[a-z0-9-]+)+")


def email_address(text: str) -> str:
    """TEXT as a plain, lowercased email address. Raises ValueError when it is not one."""
    address = text.strip().lower()
    if len(address) > 254 or not _EMAIL.fullmatch(address):
        raise ValueError(
            "it is not a plain email address (letters, digits and ._%+- before the @, a domain with a dot after it)"
        )
    return address


def from_csv(problems: Problems, setting: Setting, value: object) -> tuple[RosterEntry, ...]:
    """The rule of `studentsCsv`: the valid, distinct students of a CSV file's `name` column (none when
    unset), with their own key and Google account from the optional columns sshPublicKey and email.

    The file is read only if it is a regular file of at most MAX_CSV_BYTES, and parsed only up to
    one name more than a stack holds; a line the csv module cannot read is a problem of that line.
    It is UTF-8, with or without a byte-order mark, its lines ending in LF, CRLF or CR, and its cells
    separated as `delimiter` says: what a spreadsheet's "CSV UTF-8" saves, in any locale. Every
    problem names the file by the absolute path that was read.
    """
    if value in (None, ""):
        return ()
    key = setting.key
    # Only read here, never written anywhere: any printable path (`/home/José (class)/roster.csv`, `C:/...`).
    if not isinstance(value, str) or not value.isprintable() or len(value) > MAX_PATH:
        why = f"it must be a path: printable text of at most {MAX_PATH} characters"
        problems.add(key, value, why, "point it at the roster: " + set_key(key, "roster.csv"))
        return ()
    path = roster_path(value)
    text = _read(problems, key, value, path)
    if text is None:
        return ()
    return _roster_entries(problems, key, value, _shown(path), text)


MAX_PATH = 4096
RELATIVE_NOTE = (
    " (a relative path: `up --set` keeps it as the working directory's; `pulumi config` reads it from {project})"
)


def roster_path(value: str) -> Path:
    """The file the roster path VALUE names: `~` expanded, a relative path relative to the project folder (where
    Pulumi.yaml is; `up --set` and `render --set` store a relative path as its absolute one)."""
    return (project_dir() / os.path.expanduser(value)).absolute()


def _shown(path: Path) -> str:
    """PATH as a message shows it: as it is, or quoted with its unprintable characters escaped."""
    return str(path) if str(path).isprintable() else repr(str(path))


def _read(problems: Problems, key: str, value: str, path: Path) -> str | None:
    """The text of the roster file PATH (the value VALUE of KEY), or None after a problem that names PATH."""
    shown = _shown(path)
    fix = "point it at the roster: " + set_key(key, "roster.csv") + RELATIVE_NOTE.format(project=project_dir())
    try:
        # stat first: opening a FIFO would block, and /dev/zero never ends.
        if not stat.S_ISREG(path.stat().st_mode):
            problems.add(key, value, f"{shown} is not a regular file", fix)
            return None
        with path.open("rb") as file:
            data = file.read(MAX_CSV_BYTES + 1)
    except OSError as error:
        problems.add(key, value, f"{shown} cannot be read ({error.strerror or error})", fix)
        return None
    if len(data) > MAX_CSV_BYTES:
        why = f"{shown} is larger than 1 MiB, far more than a roster of {MAX_STUDENTS} students"
        problems.add(key, value, why, fix)
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = error.object[: error.start].count(b"\n") + 1
        why = f"{shown} is not UTF-8 text (byte {error.object[error.start]:#04x} on line {line})"
        resave = "save it again as CSV UTF-8 (a spreadsheet's plain CSV may be in another encoding)"
        problems.add(key, value, why, resave)
        return None


def delimiter(text: str) -> str:
    """The delimiter of the roster TEXT, one of DELIMITERS: the one under which its header line (its first line
    holding anything but delimiters, quotes and spaces) has a `name` column; among several, or none, the one
    the header line holds most often; on a tie, the first of `,`, `;` and tab.

    So a roster whose header is `name` alone is read as comma-separated, whatever its names hold, and a header
    cell holding another delimiter (`name;Last, First`) does not mislead it.
    """
    header = next((line for line in io.StringIO(text, newline=None) if line.strip(' \t\n,;"')), "")
    return max(DELIMITERS, key=lambda candidate: ("name" in _columns(header, candidate), header.count(candidate)))


def _columns(line: str, delimiter: str) -> list[str]:
    """The cells of LINE, separated by DELIMITER, each stripped and lowercased (none when it is no CSV)."""
    try:
        return [cell.strip().lower() for cell in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error:
        return []


def _roster_entries(problems: Problems, key: str, value: str, file: str, text: str) -> tuple[RosterEntry, ...]:
    """The students of the CSV TEXT, read from FILE (the value VALUE of KEY), each cell checked with its line."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter(text))
    header: list[str] | None = None
    names: list[object] = []
    where: list[tuple[str, Callable[[str], Fix | str]]] = []
    fix_line = f"correct that line of {file}"
    cells = _OptionalCells(problems, file)
    refused = False

    def fix_name(name: str) -> str:
        return f"{fix_line}, e.g. to {name}"

    while len(names) <= MAX_STUDENTS:
        first_line = reader.line_num + 1
        try:
            row = next(reader, None)
        except csv.Error as error:
            problems.add(f"{key} {file} line {reader.line_num}", str(error), "it is not valid CSV", fix_line)
            return ()
        if row is None:
            break
        if not any(cell.strip() for cell in row):
            continue  # a blank line, or a line of empty cells
        at = f"{key} {file} line {first_line}"
        # Before any cell is quoted: a private key pasted into a cell is never shown, whatever its column.
        secret = next((i for i, cell in enumerate(row) if holds_private_key(cell)), None)
        if secret is not None:
            cells.private(at, header, secret)
            refused = True
            continue
        # A key's cell is checked by its own rule, which says what a line break there means.
        keys_at = header.index(KEY_COLUMN) if header and KEY_COLUMN in header else -1
        broken = next((c for i, c in enumerate(row) if LINE_BREAKS.intersection(c) and i != keys_at), None)
        if broken is not None:
            # The csv module joins a quoted field's lines; a name that spans lines is a mistake, never a name.
            why = "a field spans lines (a line break inside quotes), which no name may hold"
            problems.add(at, broken, why, fix_line)
            return ()
        if header is None:
            header = [cell.strip().lower() for cell in row]
            if "name" not in header:
                problems.add(key, value, _no_name_column(file, row, first_line, reader.dialect.delimiter), HEADER_FIX)
                return ()
            continue
        column = header.index("name")
        names.append(row[column].strip() if column < len(row) else "")
        where.append((at, fix_name))
        cells.check(at, first_line, names[-1], dict(zip(header, row, strict=False)))
    if len(names) > MAX_STUDENTS:
        problems.add(
            key, f"more than {MAX_STUDENTS} names", f"one stack holds at most {MAX_STUDENTS} VMs", "split the class"
        )
        return ()
    if not names and not refused:
        problems.add(key, value, f"{file} lists no students", ROSTER_FIX)
    valid = _check_names(problems, key, names, where)
    return tuple(cells.entries.get(name, RosterEntry(name)) for name in valid)


def _no_name_column(file: str, row: list[str], line: int, delimiter: str) -> str:
    """Why FILE, whose header ROW on LINE has no `name` column, is refused: the header's columns as read, each
    printable (quoted, unprintable characters escaped) and cut, so that a wrong delimiter or a stray mark shows."""
    cut = [cell.strip() for cell in row[:SHOWN_COLUMNS]]
    shown = [repr(cell[:SHOWN_CHARACTERS] + ("..." if len(cell) > SHOWN_CHARACTERS else "")) for cell in cut]
    if len(row) > SHOWN_COLUMNS:
        shown.append(f"and {len(row) - SHOWN_COLUMNS} more")
    columns = f"the column {shown[0]}" if len(row) == 1 else f"the columns {', '.join(shown)}"
    return f"{file} has no `name` column: its header (line {line}), split at {DELIMITERS[delimiter]}, holds {columns}"


class _OptionalCells:
    """The sshPublicKey and email cells of a roster's lines: each checked, and none shared by two students."""

    def __init__(self, problems: Problems, value: str) -> None:
        self.problems = problems
        self.key_fix = (
            f"in {value}, put one line of the student's .pub file (e.g. ~/.ssh/id_ed25519.pub) in its sshPublicKey "
            "cell, or leave the cell empty to have a key pair generated"
        )
        self.private_fix = (
            f"in {value}, replace it with the line of the student's .pub file; that private key is no longer "
            "secret, so the student makes a new pair (`ssh-keygen -t ed25519`)"
        )
        self.email_fix = (
            f"in {value}, put the student's Google account (like name@example.org) in its email cell, "
            "or leave the cell empty"
        )
        self.secret_fix = (
            f"in {value}, delete it: that private key is no longer secret, so its owner makes a new pair "
            "(`ssh-keygen -t ed25519`) and gives the line of its .pub file in the sshPublicKey cell"
        )
        self.entries: dict[object, RosterEntry] = {}
        """Each name's entry, from the first line that names it."""
        self.keys: dict[str, tuple[object, int]] = {}
        self.emails: dict[str, tuple[object, int]] = {}

    def check(self, where: str, line: int, name: object, row: dict[str, str]) -> None:
        ssh_key = self._key(where, line, name, row.get(KEY_COLUMN, "").strip())
        email = self._email(where, line, name, row.get(EMAIL_COLUMN, "").strip())
        self.entries.setdefault(name, RosterEntry(str(name), ssh_key, email))

    def private(self, where: str, header: list[str] | None, column: int) -> None:
        """The problem of a line whose cell COLUMN holds a private key: the line is checked no further."""
        name = header[column] if header and column < len(header) and header[column] else f"column {column + 1}"
        if name == KEY_COLUMN:
            self.problems.add(where, NOT_SHOWN, PRIVATE_KEY_WHY, self.private_fix)
        else:
            self.problems.add(where, NOT_SHOWN, f"its {name} cell holds a private key", self.secret_fix)

    def _key(self, where: str, line: int, name: object, text: str) -> str:
        if not text:
            return ""
        try:
            ssh_key = public_key(text)
        except PrivateKeyError as error:
            self.problems.add(where, NOT_SHOWN, str(error), self.private_fix)
            return ""
        except ValueError as error:
            self.problems.add(where, text, str(error), self.key_fix)
            return ""
        if ssh_key in self.keys:
            other, other_line = self.keys[ssh_key]
            why = f"{other} (line {other_line}) has that key too, and a key logs in as one student only"
            self.problems.add(where, text, why, self.key_fix)
            return ""
        self.keys[ssh_key] = (name, line)
        return ssh_key

    def _email(self, where: str, line: int, name: object, text: str) -> str:
        if not text:
            return ""
        try:
            email = email_address(text)
        except ValueError as error:
            self.problems.add(where, text, str(error), self.email_fix)
            return ""
        if email in self.emails:
            other, other_line = self.emails[email]
            why = f"{other} (line {other_line}) has that Google account too, and each student reaches only their own VM"
            self.problems.add(where, text, why, self.email_fix)
            return ""
        self.emails[email] = (name, line)
        return email


def _check_names(
    problems: Problems, key: str, names: list[object], where: list[tuple[str, Callable[[str], Fix | str]]]
) -> tuple[str, ...]:
    """Each name of the roster KEY valid and reserved for no one else; WHERE gives each name's key, and
    its fix given a name to use instead (one that is valid and on the roster nowhere else)."""
    if len(names) > MAX_STUDENTS:
        problems.add(key, f"{len(names)} names", f"one stack holds at most {MAX_STUDENTS} VMs", "split the class")
        return ()
    valid: list[str] = []
    taken = {name for name in names if isinstance(name, str)}
    for index, (name, (name_key, fix)) in enumerate(zip(names, where, strict=True)):
        why = student_name_problem(name)
        if holds_private_key(name):
            problems.add(name_key, NOT_SHOWN, "that is a private key, not a name", fix(_free_name("", index, taken)))
        elif why == NOT_A_NAME or not isinstance(name, str):
            instead = _free_name(as_name(name), index, taken)
            problems.add(name_key, name, f"{why} (it becomes their login and part of the VM's name)", fix(instead))
        elif why == SYSTEM_NAME:
            problems.add(name_key, name, why, fix(_free_name("", index, taken)))
        elif why:
            problems.add(name_key, name, why, fix(_free_name(name, index, taken)))
        elif name in valid:
            why = "that name is listed twice, and each student gets one VM"
            problems.add(name_key, name, why, "give this student another name: " + fix(_free_name(name, index, taken)))
        else:
            valid.append(name)
    return tuple(valid)


def _free_name(base: str, index: int, taken: set[str]) -> str:
    """BASE if no student has it, else BASE-2, BASE-3, ... (no BASE: student<INDEX+1>): a name a fix can
    suggest without making a new problem. It is then taken, so no two fixes suggest the same name."""
    first = base or f"student{index + 1}"
    candidates = [first, *(f"{first[:28].rstrip('-')}-{n}" for n in range(2, MAX_STUDENTS + 3))]
    name = next(candidate for candidate in candidates if candidate not in taken)
    taken.add(name)
    return name
