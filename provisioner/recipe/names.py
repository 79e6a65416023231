"""The student name policy: which names may be a student's login, and making a text into one."""

from __future__ import annotations

import re

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


WINDOWS_DEVICE_NAMES = frozenset(
    {"con", "prn", "aux", "nul", *(f"com{n}" for n in range(10)), *(f"lpt{n}" for n in range(10))}
)
"""Names Windows gives its devices, which no file or folder can have there (Microsoft's "Naming Files,
Paths, and Namespaces"): a student's hand-out is a folder named after them, written on the instructor's machine."""
NOT_A_NAME = "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"
SYSTEM_NAME = "that name belongs to the system or grants extra rights"
DEVICE_NAME = "that name cannot be a folder's name on Windows (it names a device there), and each hand-out is one"


def student_name_problem(name: object) -> str:
    """Why NAME cannot be a student's name ("" when it can): the rule every roster's names pass, and
    so every name read back from a stack's outputs or state must pass too."""
    if not isinstance(name, str) or not _STUDENT.fullmatch(name):
        return NOT_A_NAME
    if is_reserved(name):
        return SYSTEM_NAME
    if name in WINDOWS_DEVICE_NAMES:
        return DEVICE_NAME
    return ""


def as_name(text: object) -> str:
    """TEXT made into a student name as far as that goes (`Bob Smith` -> `bob-smith`), or ""."""
    name = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:32].rstrip("-")
    return "" if student_name_problem(name) else name
