"""A class roster: student names from `students` or a CSV file, each a login of its own."""

from __future__ import annotations

import csv
import os
import re

from provisioner.paths import PROJECT_DIR
from provisioner.recipe.rules import PATH, Problems, Setting, as_list, set_command

MAX_STUDENTS = 200
# A student's name is their login and part of GCE resource names, which allow no `_`.
_STUDENT = re.compile(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?")
RESERVED_USERNAMES = frozenset(
    {
        # Debian's base-passwd: the accounts and groups every Debian and Ubuntu system has.
        *("root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy"),
        *("www-data", "backup", "list", "irc", "gnats", "nobody", "nogroup", "shadow", "utmp", "tty", "disk"),
        *("kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "audio", "dip", "operator", "src"),
        *("video", "plugdev", "input", "kvm", "render", "sgx", "netdev", "crontab", "rdma", "staff", "users"),
        # Added by the packages of Ubuntu's and Debian's cloud images (and the GCE guest environment).
        *("sshd", "messagebus", "syslog", "uuidd", "tcpdump", "tss", "polkitd", "landscape", "pollinate"),
        *("fwupd-refresh", "dnsmasq", "usbmux", "lxd", "dhcpcd", "chrony", "ntp", "statd", "snap_daemon"),
        *("google-sudoers", "ubuntu", "debian", "admin", "adm", "sudo", "wheel", "docker"),
    }
)
"""Logins that belong to the system or grant extra rights: no student, nor `username`, may have one."""
RESERVED_PREFIXES = ("_", "systemd-")
"""Debian names new system accounts so (`_apt`, `_chrony`; `systemd-network`, `systemd-timesync`)."""


def is_reserved(name: str) -> bool:
    """Whether NAME is, or is named like, a system account or a group that grants extra rights.

    Cloud-init gives an existing account the student's key and sudo, so a login that names one
    must never pass. (The recipe checks the account's UID on the VM as well.)
    """
    return name in RESERVED_USERNAMES or name.startswith(RESERVED_PREFIXES)


def listed(problems: Problems, setting: Setting, value: object) -> tuple[str, ...]:
    """The rule of `students`: a list of valid, distinct names (none when unset)."""
    if value in (None, "", []):
        return ()
    items = as_list(value)
    if items is None:
        fix = set_command(setting.key, ["alice"]) + " (one index per student)"
        problems.add(setting.key, value, "it must be a list of names", fix)
        return ()
    key = setting.key
    where = [(f"{key}[{i}]", f"pulumi config set --path '{key}[{i}]' alice") for i in range(len(items))]
    return _check_names(problems, key, items, where)


def from_csv(problems: Problems, setting: Setting, value: object) -> tuple[str, ...]:
    """The rule of `studentsCsv`: the valid, distinct names of a CSV file's `name` column (none when unset)."""
    if value in (None, ""):
        return ()
    key = setting.key
    fix = "a CSV file whose first line names the columns, one being `name`, then one student per line"
    if not isinstance(value, str) or not PATH.fullmatch(value):
        problems.add(key, value, "the path may hold only letters, digits, spaces and ._/~@+-", fix)
        return ()
    try:
        # A relative path is relative to the project directory, where Pulumi.yaml is.
        text = (PROJECT_DIR / os.path.expanduser(value)).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        fix_path = f"point it at the roster: {set_command(key, 'roster.csv')}"
        problems.add(key, value, f"it cannot be read ({reason})", fix_path)
        return ()
    rows = list(csv.DictReader(text.splitlines()))
    columns = {(c or "").strip().lower(): c for c in (rows[0].keys() if rows else [])}
    if "name" not in columns:
        problems.add(key, value, "it has no `name` column" if rows else "it lists no students", fix)
        return ()
    names: list[object] = []
    where: list[tuple[str, str]] = []
    for line, row in enumerate(rows, start=2):
        name = (row.get(columns["name"]) or "").strip()
        if name or any((v or "").strip() for v in row.values() if isinstance(v, str)):
            names.append(name)
            where.append((f"{key} {value} line {line}", f"correct that line of {value}"))
    if not names:
        problems.add(key, value, "it lists no students", fix)
    return _check_names(problems, key, names, where)


def _check_names(problems: Problems, key: str, names: list[object], where: list[tuple[str, str]]) -> tuple[str, ...]:
    """Each name of the roster KEY valid and reserved for no one else; WHERE gives each name's key and fix."""
    if len(names) > MAX_STUDENTS:
        problems.add(key, f"{len(names)} names", f"one stack holds at most {MAX_STUDENTS} VMs", "split the class")
        return ()
    valid: list[str] = []
    for name, (name_key, fix) in zip(names, where, strict=True):
        if not isinstance(name, str) or not _STUDENT.fullmatch(name):
            why = "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"
            problems.add(name_key, name, f"{why} (it becomes their login and part of the VM's name)", fix)
        elif is_reserved(name):
            problems.add(name_key, name, "that name belongs to the system or grants extra rights", fix)
        elif name in valid:
            problems.add(name_key, name, "that name is listed twice, and each student gets one VM", fix)
        else:
            valid.append(name)
    return tuple(valid)
