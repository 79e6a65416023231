"""The settings table (each key's type, default, description and rule), and the frozen record it yields."""

from __future__ import annotations

import difflib
import ipaddress
import ntpath
import os
import posixpath
import re
import urllib.parse
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import yaml

from provisioner.errors import CourseVmError, SettingsError
from provisioner.paths import ON_WINDOWS
from provisioner.recipe import roster
from provisioner.recipe.problems import Problems, remove_key, set_key
from provisioner.recipe.roster import RosterEntry, is_reserved
from provisioner.recipe.rules import PATH, Rule, Setting, as_list, boolean, check_text, text, whole_number

PROJECT = "course-vm"
"""The Pulumi project name, and so the namespace of every course-vm config key."""
DEFAULT_STACK = "dev"
"""The stack `course-vm up` uses unless told otherwise."""


def command(verb: str, stack: str) -> str:
    """`course-vm VERB` for STACK, as a Fix line suggests it: `--stack` only when it is not the default."""
    return f"course-vm {verb}" + ("" if stack == DEFAULT_STACK else f" --stack {stack}")


ANACONDA_DEFAULT_SHA256 = "a7c0afe862f6ea19a596801fc138bde0463abcbce1b753e8d5c474b506a2db2d"
COMPOSE_DEFAULT_SHA256 = "ed79398562f3a80a5d8c068fde14b0b12101e80b494aabb2b3533eaa10599e0f"

# Ubuntu's image is 10 GB; Anaconda (installer plus install) and Docker need about 8 GB more.
MIN_DISK_GB = 20
MAX_DISK_GB = 65536
MAX_IDLE_MINUTES = 7 * 24 * 60
MIN_HOME_DISK_GB = 10  # GCE's smallest pd-balanced disk
# Shared-core machines have too little memory: Anaconda plus Docker get sshd killed by the OOM killer.
TOO_SMALL_MACHINE_TYPES = frozenset({"f1-micro", "g1-small", "e2-micro", "e2-small", "e2-medium"})

# Every value ends up in YAML, shell or an API call, so each rule admits only what a pattern allows:
# no value can carry a newline, a quote or a shell metacharacter. Patterns two rows share:
_SHA256 = r"[0-9a-fA-F]{64}"
_HTTPS_URL = r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/%+-]*"
_MIRROR_URL_OR_EMPTY = r"|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+-]*)?"
EMAIL = r"[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
"""A Google account's address as IAM takes it after `user:`: no quote, space or shell character."""
IAP_RANGE = "35.235.240.0/20"
"""Where Google's Identity-Aware Proxy connects from: the only source the firewall admits under iap."""


# PATH, or after a drive letter (C:/keys/course-vm), which only Windows reads as one.
_KEY_PATH = re.compile(f"([A-Za-z]:)?(?:{PATH.pattern})")
# On Windows a backslash separates too (C:\Users\Alice Smith\.ssh\course-vm); no other character is
# added, so the path still cannot carry a quote, `%` or `$` (which cmd, PowerShell and ssh expand).
_WINDOWS_KEY_PATH = re.compile(r"([A-Za-z]:)?[A-Za-z0-9_./\\~@+-][A-Za-z0-9_./\\~@+ -]*")


def is_absolute(path: str, *, windows: bool = ON_WINDOWS) -> bool:
    """Whether PATH (after `~` expansion) names the same file whatever the current directory.

    On Windows that takes a drive and a root (`C:\\keys`, `C:/keys`): `\\keys` is relative to
    the current drive and `C:keys` to drive C's current directory.
    """
    if windows:
        windows_path = PureWindowsPath(path)
        return bool(windows_path.drive and windows_path.root)
    return PurePosixPath(path).is_absolute()


def key_path_rule(*, windows: bool) -> Rule:
    """The rule of `sshKeyPath` on Windows or on Linux and macOS: a safe absolute (or `~/`) path, and
    not the `.pub` half of the pair."""
    pattern = _WINDOWS_KEY_PATH if windows else _KEY_PATH
    why = (
        "the path may hold only a drive letter (C:), letters, digits, spaces and ._/\\~@+-"
        if windows
        else "the path may hold only letters, digits, spaces and ._/~@+-"
    )
    expanduser = ntpath.expanduser if windows else posixpath.expanduser

    def rule(problems: Problems, setting: Setting, value: object) -> Path:
        path = check_text(problems, setting.key, value, pattern, why, setting.default)
        expanded = expanduser(path)
        if path.endswith(".pub"):
            private = path[: -len(".pub")]
            # Quoted, for the fix is typed into a shell: a space would split the path in two.
            fix = set_key(setting.key, f'"{private}"' if " " in private else private)
            problems.add(setting.key, path, "it names a public key; the setting is the private key", fix)
        elif path and not is_absolute(expanded, windows=windows):
            # `pulumi up` runs the program in the project directory, which .gitignore does not cover.
            why_relative = (
                "it is a relative path, so the private key would land in whatever directory the command runs in "
                "(under `pulumi up`, the project directory)"
            )
            problems.add(setting.key, path, why_relative, set_key(setting.key, setting.default))
        return Path(expanded)

    return rule


def plain_http_allowed(host: str) -> bool:
    """Whether HOST is this machine or link-local, where plain http crosses no network that others share.

    127.0.0.0/8, ::1 and `localhost` never leave the machine; 169.254.0.0/16 and fe80::/10 never
    leave the link (the local GCE twin serves its mirrors at 169.254.2.2).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_link_local


def _mirror(why: str, http_why: str, example: str, *, then: Callable[[str], str] = str) -> Rule:
    """A mirror's URL (or none): the URL pattern, and https unless the host is local (see plain_http_allowed)."""
    pattern = re.compile(_MIRROR_URL_OR_EMPTY)

    def rule(problems: Problems, setting: Setting, value: object) -> str:
        url = check_text(problems, setting.key, value, pattern, why, example)
        host = urllib.parse.urlsplit(url).hostname or ""
        if url.startswith("http://") and not plain_http_allowed(host):
            why_http = (
                "plain http:// is allowed only to this machine or a link-local address "
                f"(127.0.0.0/8, localhost, 169.254.0.0/16): {http_why}"
            )
            problems.add(setting.key, url, why_http, set_key(setting.key, "https://" + url[len("http://") :]))
            return ""
        return then(url) if url else url

    return rule


def _ssh_ranges(problems: Problems, setting: Setting, value: object) -> tuple[str, ...]:
    """The rule of `allowedSshCidrs`: at least one IPv4 range, each written as its network."""
    key = setting.key
    items = as_list(value)
    if items is None:
        fix = set_key(key, ["203.0.113.7/32"]) + " (one index per range)"
        problems.add(key, value, "it must be a list of IPv4 ranges", fix)
        return ()
    if not items:
        own = set_key(key, ["YOUR.PUBLIC.IP/32"])
        fix = "allow your own address: " + own + " (0.0.0.0/0 allows the whole internet)"
        problems.add(key, value, "the firewall would let nobody reach SSH", fix)
        return ()
    cidrs: list[str] = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        fix = set_key(key, ["203.0.113.7/32"], at=index)
        if not isinstance(item, str) or not re.fullmatch(r"[0-9./]{7,18}", item):
            problems.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        try:
            network = ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            problems.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        if str(network) != item and f"{network.network_address}" != item:
            fix = set_key(key, [str(network)], at=index)
            problems.add(where, item, f"it has host bits set (the range is {network})", fix)
            continue
        cidrs.append(str(network))
    return tuple(cidrs)


def _known_time_zone(name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}", name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _time_zone(problems: Problems, setting: Setting, value: object) -> str:
    """The rule of `timeZone`: a zone the IANA database (and so the VM) knows."""
    if isinstance(value, str) and _known_time_zone(value):
        return value
    fix = set_key(setting.key, "Europe/Berlin") + " (`timedatectl list-timezones` lists them)"
    problems.add(setting.key, value, "it is not an IANA time zone name", fix)
    return ""


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "machineType",
        "string",
        "e2-standard-4",
        "GCE machine type; the course needs 4 vCPU / 16 GB (e2-standard-4).",
        rule=text(
            r"[a-z][a-z0-9-]{0,62}",
            "it is not a GCE machine type name",
            refused=TOO_SMALL_MACHINE_TYPES.__contains__,
            refused_why="it has too little memory for Anaconda and Docker (sshd gets killed when memory runs out)",
        ),
    ),
    Setting(
        "diskSizeGb",
        "integer",
        30,
        f"Boot disk size in GB ({MIN_DISK_GB} or more).",
        rule=whole_number(
            MIN_DISK_GB,
            MAX_DISK_GB,
            f"the disk must be a whole number of GB from {MIN_DISK_GB} to {MAX_DISK_GB} "
            "(Ubuntu needs 10 GB, Anaconda and Docker about 8 GB more)",
        ),
    ),
    Setting(
        "image",
        "string",
        "ubuntu-os-cloud/ubuntu-2404-lts-amd64",
        "Boot image or image family, PROJECT/FAMILY; it must run cloud-init (Ubuntu images do).",
        rule=text(
            r"[a-z][a-z0-9-]{0,62}/[a-z][a-z0-9-]{0,62}"
            r"|projects/[a-z][a-z0-9-]{0,62}/global/images/(family/)?[a-z][a-z0-9-]{0,62}",
            "it is not PROJECT/FAMILY or projects/P/global/images/NAME",
        ),
    ),
    Setting(
        "username",
        "string",
        "student",
        "Linux login of the student on the VM (not root).",
        rule=text(
            r"[a-z_][a-z0-9_-]{0,31}",
            "a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter or _",
            refused=is_reserved,
            refused_why="that name belongs to the system or grants extra rights",
        ),
    ),
    Setting(
        "sshKeyPath",
        "string",
        "~/.ssh/course-vm",
        "Private key to log in with; an ed25519 key is generated there (mode 0400) if missing.",
        rule=key_path_rule(windows=ON_WINDOWS),
    ),
    # At most one of the two is set: see _one_roster.
    Setting(
        "students",
        "array",
        [],
        "A class: one VM per student name (their Linux login), each with its own key, IP and ssh Host entry.",
        rule=roster.listed,
    ),
    Setting(
        "studentsCsv",
        "string",
        "",
        "A class from a roster: a CSV file with a `name` column (instead of `students`), and optionally "
        "`sshPublicKey` (the student's own public key: no key pair is generated for them) and `email` "
        "(their Google account).",
        rule=roster.from_csv,
    ),
    # The three are checked together: see _access_rows.
    Setting(
        "sshAccess",
        "string",
        "firewall",
        "How students reach SSH: firewall (a static external IP, SSH from allowedSshCidrs) or iap "
        "(Identity-Aware Proxy through gcloud: no external address, each student's Google account granted).",
        rule=text(
            "firewall|iap",
            "it must be firewall (SSH from allowedSshCidrs) or iap (Identity-Aware Proxy: no external address)",
            "iap",
        ),
        only_for_gcp=True,
    ),
    Setting(
        "allowedSshCidrs",
        "array",
        [],
        "IPv4 ranges allowed to reach SSH (tcp/22), e.g. your address as 203.0.113.7/32 (sshAccess firewall only).",
        rule=_ssh_ranges,
        only_for_gcp=True,
    ),
    Setting(
        "studentEmail",
        "string",
        "",
        "sshAccess iap, one VM: the student's Google account, granted IAP access to this VM only "
        "(empty: only the project's owners reach it).",
        rule=text(f"|{EMAIL}", "it is not an email address like student@example.edu", "student@example.edu"),
        only_for_gcp=True,
    ),
    Setting(
        "verify",
        "boolean",
        True,
        "Log in after creation and check that docker hello-world works before `pulumi up` succeeds.",
        rule=boolean,
    ),
    Setting(
        "verifyTimeoutSeconds",
        "integer",
        1800,
        "How long `pulumi up` waits for the VM and its setup before the check fails.",
        rule=whole_number(
            60, 7200, "it must be a whole number of seconds from 60 to 7200 (the setup alone takes minutes)"
        ),
    ),
    Setting(
        "spot",
        "boolean",
        False,
        "Run as a Spot VM (much cheaper; GCE may stop it at any time, and it is stopped, not deleted).",
        rule=boolean,
    ),
    Setting(
        "homeDiskSizeGb",
        "integer",
        0,
        "Keep /home on its own persistent disk of this many GB, so that a new VM (a changed recipe) "
        "keeps the student's work (0: /home on the boot disk).",
        rule=whole_number(
            MIN_HOME_DISK_GB,
            MAX_DISK_GB,
            f"it must be a whole number of GB from {MIN_HOME_DISK_GB} to {MAX_DISK_GB}, or 0 for no home disk",
            20,
            or_zero=True,
        ),
    ),
    Setting(
        "autoStopIdleMinutes",
        "integer",
        60,
        "Power the VM off after this many minutes with no SSH connection and no CPU use (0: never).",
        rule=whole_number(
            0,
            MAX_IDLE_MINUTES,
            f"it must be a whole number of minutes from 1 to {MAX_IDLE_MINUTES}, or 0 to never stop",
        ),
    ),
    Setting(
        "nightlyStopTime",
        "string",
        "",
        "Stop the VM every day at this time, HH:MM in timeZone, e.g. 22:00 (empty: no schedule).",
        rule=text(
            r"|([01][0-9]|2[0-3]):[0-5][0-9]",
            "it must be a time of day as HH:MM (24-hour clock), or empty for no schedule",
            "22:00",
        ),
    ),
    Setting(
        "timeZone",
        "string",
        "UTC",
        "IANA time zone of nightlyStopTime, e.g. Europe/Berlin.",
        rule=_time_zone,
    ),
    # Each artifact's version, URL and checksum are checked together: see _artifact_rows.
    Setting(
        "anacondaVersion",
        "string",
        "2022.05",
        "Anaconda release to install; set anacondaSha256 with it.",
        rule=text(r"[0-9]{4}\.[0-9]{2}(-[0-9]+)?", "it is not a release version"),
    ),
    Setting(
        "anacondaUrl",
        "string",
        "https://repo.anaconda.com/archive/Anaconda3-{version}-Linux-x86_64.sh",
        "Where the VM downloads the Anaconda installer; {version} is replaced by anacondaVersion.",
        rule=text(_HTTPS_URL, "the URL must be https:// with no quotes, spaces, query or shell characters"),
    ),
    Setting(
        "anacondaSha256",
        "string",
        ANACONDA_DEFAULT_SHA256,
        "sha256 of the Anaconda installer; the VM refuses any other file.",
        rule=text(
            _SHA256,
            "a sha256 is 64 hexadecimal characters",
            "the sha256 of the Anaconda installer (`sha256sum FILE`)",
            then=str.lower,
        ),
    ),
    Setting(
        "dockerComposeVersion",
        "string",
        "v2.6.1",
        "docker-compose release to install into ~/soft; set dockerComposeSha256 with it.",
        # Releases are tagged vX.Y.Z, and the tag is part of the download URL.
        rule=text(
            r"v?[0-9]+\.[0-9]+\.[0-9]+",
            "it is not a release version",
            then=lambda version: version if version.startswith("v") else "v" + version,
        ),
    ),
    Setting(
        "dockerComposeUrl",
        "string",
        "https://github.com/docker/compose/releases/download/{version}/docker-compose-linux-x86_64",
        "Where the VM downloads docker-compose; {version} is replaced by dockerComposeVersion.",
        rule=text(_HTTPS_URL, "the URL must be https:// with no quotes, spaces, query or shell characters"),
    ),
    Setting(
        "dockerComposeSha256",
        "string",
        COMPOSE_DEFAULT_SHA256,
        "sha256 of the docker-compose binary; the VM refuses any other file.",
        rule=text(
            _SHA256,
            "a sha256 is 64 hexadecimal characters",
            "the sha256 of docker-compose (`sha256sum FILE`)",
            then=str.lower,
        ),
    ),
    Setting(
        "artifactMirrorUrl",
        "string",
        "",
        "Mirror serving the Anaconda installer and docker-compose by file name (checksums are still "
        "verified); https://, or http:// to a loopback or link-local host such as http://169.254.2.2:8000.",
        rule=_mirror(
            "a mirror is an https:// URL with no quotes, spaces, query or shell characters",
            "anyone on the network path could serve other files (the checksums would refuse them, "
            "and the setup would fail)",
            "https://mirror.example.org/course-vm",
        ),
    ),
    Setting(
        "dockerRegistryMirror",
        "string",
        "",
        "Docker registry mirror for image pulls (registry-mirrors); https://, or http:// to a loopback or "
        "link-local host such as http://169.254.2.2:5000. Docker trusts what it serves for a pull by tag.",
        rule=_mirror(
            "a registry mirror is an https:// URL like https://registry.example.org:5000",
            "anyone on the network path could serve other images, and Docker trusts what a mirror serves "
            "for a pull by tag",
            "https://registry.example.org:5000",
            then=lambda url: url.rstrip("/"),
        ),
    ),
)
"""Every course-vm config key, in Pulumi.yaml's order (tests/test_pulumi_yaml.py keeps the two in step)."""

DEFAULTS: Mapping[str, Any] = {s.key: s.default for s in SETTINGS}
_ROW: Mapping[str, Setting] = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class Artifact:
    """A file the VM downloads: it is used only if its sha256 matches."""

    name: str
    version: str
    url: str
    sha256: str


@dataclass(frozen=True)
class Seat:
    """One VM of the stack: whose it is, the login on it, and the key that logs in."""

    name: str
    """The student's name from the roster; "" for the one VM of a stack without `students`."""
    username: str
    ssh_key_path: Path
    """The private key course-vm logs in with: the seat's own generated key, or for a student who brought
    their own key the instructor's (`sshKeyPath`), which verifies the VM and lets the instructor help."""
    ssh_public_key: str = ""
    """`TYPE BASE64` of the student's own key (roster column sshPublicKey); "" when course-vm generates their pair."""
    email: str = ""
    """The student's Google account (roster column email, or studentEmail for one VM): under sshAccess iap
    granted IAP access to this VM only; "" for none."""

    @property
    def key_comment(self) -> str:
        """The comment of the key pair course-vm generates at `ssh_key_path` if it is missing."""
        return "instructor@course-vm" if self.ssh_public_key else f"{self.username}@course-vm"

    @property
    def files_path(self) -> Path:
        """What this seat's own files (its pinned host keys) are named after: its key, or in a class, for
        a student who brought their own key, the path a generated key would have (`sshKeyPath-NAME`):
        the instructor's key they log in with is shared by every such student."""
        if self.ssh_public_key and self.name:
            return Path(f"{self.ssh_key_path}-{self.name}")
        return self.ssh_key_path


@dataclass(frozen=True)
class Settings:
    """Every validated setting of one course VM; built only by `parse_settings`."""

    project: str
    zone: str
    machine_type: str
    disk_size_gb: int
    image: str
    username: str
    ssh_key_path: Path
    allowed_ssh_cidrs: tuple[str, ...]
    verify: bool
    verify_timeout_seconds: int
    spot: bool
    home_disk_size_gb: int
    """0: no home disk; else the size of the disk that holds /home and outlives the VM."""
    auto_stop_idle_minutes: int
    """0: never; else the VM powers itself off after that many idle minutes."""
    nightly_stop_time: str
    """"" for none; else HH:MM in `time_zone`, when GCE stops the VM every day."""
    time_zone: str
    anaconda: Artifact
    docker_compose: Artifact
    docker_registry_mirror: str
    """`""` for none; else the URL Docker pulls images through."""
    students: tuple[str, ...] = ()
    """The class roster; empty for one student's own VM."""
    roster: tuple[RosterEntry, ...] = ()
    """Each student of `students`, with their own key and Google account when the roster CSV gives them."""
    ssh_access: str = "firewall"
    """`firewall` (static external IP, SSH from allowed_ssh_cidrs) or `iap` (no external IP, IAP TCP forwarding)."""
    student_email: str = ""
    """sshAccess iap, one VM: the Google account granted access to it ("" for none)."""

    @property
    def iap(self) -> bool:
        """Whether the VMs are reached through Identity-Aware Proxy (no external address)."""
        return self.ssh_access == "iap"

    @property
    def seats(self) -> tuple[Seat, ...]:
        """One VM per student, or the one VM of `username`.

        A student's key is `sshKeyPath-NAME` (with `NAME.known_hosts` beside it), so that each
        student gets their own and the instructor keeps them all in one place. A student who brought
        their own key (roster column sshPublicKey) gets no generated pair: course-vm logs in to their
        VM with `sshKeyPath` itself, authorised beside the student's key.
        """
        if not self.students:
            return (Seat("", self.username, self.ssh_key_path, email=self.student_email),)
        entries = {entry.name: entry for entry in self.roster}
        seats = []
        for name in self.students:
            entry = entries.get(name, RosterEntry(name))
            key_path = self.ssh_key_path if entry.ssh_public_key else Path(f"{self.ssh_key_path}-{name}")
            seats.append(Seat(name, name, key_path, entry.ssh_public_key, entry.email))
        return tuple(seats)

    @property
    def region(self) -> str:
        """The region of `zone`, where the static IP and subnet live."""
        return self.zone.rsplit("-", 1)[0]

    @property
    def ssh_open_to_internet(self) -> bool:
        """True when a firewall range covers every IPv4 address."""
        return any(ipaddress.ip_network(c).prefixlen == 0 for c in self.allowed_ssh_cidrs)


# Rules across rows. Each one runs where the first of its rows is checked, and checks its rows itself.

_JointRule = Callable[[Problems, Mapping[str, object]], dict[str, Any]]
"""Checks several rows of a raw config together; returns each row's typed value."""


def _one_roster(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
    """`students` or `studentsCsv`, not both: a class has one roster."""
    listed, csv_path = raw.get("students"), raw.get("studentsCsv")
    if listed not in (None, "", []) and csv_path not in (None, ""):
        fix = "keep one: " + remove_key("students") + ", or " + remove_key("studentsCsv")
        problems.add("studentsCsv", csv_path, "students is set too, and a class has one roster", fix)
        return {"students": (), "studentsCsv": ()}
    return {key: _ROW[key].check(problems, _given(raw, key)) for key in ("students", "studentsCsv")}


def _artifact_rows(prefix: str) -> _JointRule:
    """The rule across PREFIX's version, checksum and URL, checked in that order.

    The URL is checked with {version} filled in; the default checksum belongs to the default
    version only, so a new version without its own checksum is a problem.
    """
    version_key, url_key, sha_key = f"{prefix}Version", f"{prefix}Url", f"{prefix}Sha256"

    def rule(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
        version = _ROW[version_key].check(problems, raw.get(version_key, DEFAULTS[version_key]))
        sha = _ROW[sha_key].check(problems, raw.get(sha_key, DEFAULTS[sha_key]))
        if version and version_key in raw and sha_key not in raw and version != DEFAULTS[version_key]:
            problems.add(
                version_key,
                raw[version_key],
                f"the default {sha_key} only matches version {DEFAULTS[version_key]}",
                "also set the new release's checksum: " + set_key(sha_key, "SHA256"),
            )
        template = raw.get(url_key, DEFAULTS[url_key])
        url = template.replace("{version}", version) if isinstance(template, str) else template
        return {version_key: version, sha_key: sha, url_key: _ROW[url_key].check(problems, url)}

    return rule


def _access_rows(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
    """`sshAccess` with what it uses: `allowedSshCidrs` (firewall only) and `studentEmail` (iap, one VM only).

    A value the chosen access would not use is a problem, not silently ignored. Under iap one VM
    needs no studentEmail: whoever runs `up` owns the project and may open a tunnel already.
    """
    access = _ROW["sshAccess"].check(problems, _given(raw, "sshAccess"))
    cidrs_given = raw.get("allowedSshCidrs") not in (None, "", "[]", [])
    cidrs: tuple[str, ...] = ()
    if access == "iap":
        if cidrs_given:
            why = f"sshAccess is iap, which admits only Google's IAP range {IAP_RANGE}, so the ranges would not be used"
            problems.add("allowedSshCidrs", raw["allowedSshCidrs"], why, remove_key("allowedSshCidrs"))
    elif access:
        cidrs = _ROW["allowedSshCidrs"].check(problems, _given(raw, "allowedSshCidrs"))
    email = _ROW["studentEmail"].check(problems, _given(raw, "studentEmail"))
    if email and access == "firewall":
        why = "sshAccess is firewall, and only iap grants a Google account access"
        problems.add("studentEmail", email, why, set_key("sshAccess", "iap") + ", or " + remove_key("studentEmail"))
    elif email and (raw.get("students") not in (None, "", "[]", []) or raw.get("studentsCsv")):
        why = "a class's VMs are granted to each student's own email (the roster's email column)"
        problems.add("studentEmail", email, why, remove_key("studentEmail"))
    return {"sshAccess": access, "allowedSshCidrs": cidrs, "studentEmail": email}


def _emails_for_iap(problems: Problems, roster: Sequence[RosterEntry], *, listed: bool) -> None:
    """Under IAP, every student of a class needs their Google account: without one, nobody but the
    project's owners could reach their VM. (A stack's one VM needs none: see studentEmail.)
    LISTED: the roster is the `students` list, which carries no emails."""
    why = "sshAccess iap grants each student's Google account access to their own VM, and this student has none"
    for entry in roster:
        if entry.email:
            continue
        if listed:
            fix = (
                "a roster CSV with `name` and `email` columns: "
                + remove_key("students")
                + ", then "
                + set_key("studentsCsv", "roster.csv")
            )
            problems.add("students", entry.name, why + " (a `students` list carries no emails: use studentsCsv)", fix)
        else:
            fix_csv = f"add an `email` column to the roster with {entry.name}'s Google account"
            problems.add("studentsCsv", entry.name, why, fix_csv)


_JOINT_RULES: Mapping[str, _JointRule] = {
    "students": _one_roster,
    "sshAccess": _access_rows,
    "anacondaVersion": _artifact_rows("anaconda"),
    "dockerComposeVersion": _artifact_rows("dockerCompose"),
}
"""Each rule across rows, by the first of its rows."""

GCP_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
GCE_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")


def _check_gcp_location(problems: Problems, project: object, zone: object) -> tuple[str, str]:
    """`gcp:project` and `gcp:zone`: the GCP provider's own keys, so not rows of the table, and both required."""
    return (
        _provider_key(
            problems,
            "gcp:project",
            project,
            GCP_PROJECT_ID,
            "it is not a GCP project ID",
            "YOUR-PROJECT-ID",
            "`gcloud projects list` shows yours",
        ),
        _provider_key(
            problems,
            "gcp:zone",
            zone,
            GCE_ZONE,
            "it is not a GCE zone like europe-west1-b",
            "europe-west1-b",
            "a zone near you",
        ),
    )


def _provider_key(
    problems: Problems, key: str, value: object, pattern: re.Pattern[str], why: str, example: str, hint: str
) -> str:
    if value is None:
        problems.not_set(key, set_key(key, example) + f" ({hint})")
        return ""
    return check_text(problems, key, value, pattern, why, example)


def _report_unknown_keys(problems: Problems, raw: Mapping[str, object]) -> None:
    """Every key course-vm does not know, with the known key it most likely meant, if one is close."""
    by_lower = {key.lower(): key for key in DEFAULTS}
    for key in sorted(set(raw) - set(DEFAULTS)):
        near = difflib.get_close_matches(key.lower(), by_lower, n=1, cutoff=0.8)
        if near:
            meant = by_lower[near[0]]
            why = f"course-vm has no such setting (did you mean {meant}?)"
            problems.add(key, raw[key], why, remove_key(key) + ", then " + set_key(meant, raw[key]))
            continue
        fix = remove_key(key, aside=True) + f"; known keys: {', '.join(DEFAULTS)}"
        problems.add(key, raw[key], "course-vm has no such setting", fix)


def _given(raw: Mapping[str, object], key: str) -> object:
    """KEY's raw value, or its default when it is unset or None."""
    value = raw.get(key)
    return DEFAULTS[key] if value is None else value


def _artifact(values: Mapping[str, Any], prefix: str, name: str) -> Artifact:
    """The file PREFIX's rows describe; `artifactMirrorUrl`, when set, serves it under its file name."""
    url, mirror = values[f"{prefix}Url"], values["artifactMirrorUrl"]
    if mirror:
        url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[1]
    return Artifact(name=name, version=values[f"{prefix}Version"], url=url, sha256=values[f"{prefix}Sha256"])


def parse_settings(raw: Mapping[str, object], project: object, zone: object, *, for_gcp: bool = True) -> Settings:
    """Validate raw config values (strings, or typed values) into a Settings record.

    `raw` maps course-vm keys (without the `course-vm:` prefix) to values; absent keys take
    their defaults. `project` and `zone` are the `gcp:project` and `gcp:zone` values; with
    `for_gcp=False` (a local VM) they and `allowedSshCidrs` are not needed and left empty.
    Raises SettingsError listing every problem at once.
    """
    problems = Problems()
    _report_unknown_keys(problems, raw)
    gcp_project, gcp_zone = _check_gcp_location(problems, project, zone) if for_gcp else ("", "")
    values: dict[str, Any] = {}
    for row in SETTINGS:
        if row.key in values or (row.only_for_gcp and not for_gcp):
            continue  # checked by the joint rule of an earlier row, or not needed
        joint = _JOINT_RULES.get(row.key)
        values.update(joint(problems, raw) if joint else {row.key: row.check(problems, _given(raw, row.key))})
    roster = values.get("studentsCsv") or tuple(RosterEntry(name) for name in values.get("students") or ())
    if values.get("sshAccess") == "iap":
        _emails_for_iap(problems, roster, listed=bool(values.get("students")))
    if problems.records:
        raise SettingsError(problems.records)
    settings = Settings(
        project=gcp_project,
        zone=gcp_zone,
        machine_type=values["machineType"],
        disk_size_gb=values["diskSizeGb"],
        image=values["image"],
        username=values["username"],
        ssh_key_path=values["sshKeyPath"],
        allowed_ssh_cidrs=values.get("allowedSshCidrs", ()),
        verify=values["verify"],
        verify_timeout_seconds=values["verifyTimeoutSeconds"],
        spot=values["spot"],
        home_disk_size_gb=values["homeDiskSizeGb"],
        auto_stop_idle_minutes=values["autoStopIdleMinutes"],
        nightly_stop_time=values["nightlyStopTime"],
        time_zone=values["timeZone"],
        # Only from valid rows: a mirror serves each file under the name its URL ends in.
        anaconda=_artifact(values, "anaconda", "the Anaconda installer"),
        docker_compose=_artifact(values, "dockerCompose", "docker-compose"),
        docker_registry_mirror=values["dockerRegistryMirror"],
        students=tuple(entry.name for entry in roster),
        roster=roster,
        ssh_access=values.get("sshAccess", "firewall"),
        student_email=values.get("studentEmail", ""),
    )
    return settings


def settings_from_pulumi(config: Mapping[str, object], gcp_get: Callable[[str], str | None]) -> Settings:
    """Build Settings from every key of the stack's `course-vm:` namespace (without the prefix), as
    Pulumi hands them to the program, and the GCP provider's getter (`pulumi.Config("gcp").get`).

    All keys, not only the known ones: a misspelt key is a problem, not silently ignored.
    Raises SettingsError listing every problem at once.
    """
    raw = {key: value for key, value in config.items() if value is not None}
    return parse_settings(raw, *_gcp_location(gcp_get("project"), gcp_get("zone")))


PULUMI_PREFIX = "Pulumi."


def settings_from_stack_file(path: Path) -> Settings:
    """Build Settings from a `Pulumi.<stack>.yaml` file, as `pulumi up` would, without the Pulumi CLI.

    Raises SettingsError for invalid values and CourseVmError when the file cannot be used.
    """
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        stack = path.name.removeprefix(PULUMI_PREFIX).removesuffix(".yaml")
        raise CourseVmError(
            f"no stack settings {path}. Fix: `pulumi stack init {stack}` and set its config first"
        ) from None
    except OSError as error:
        raise CourseVmError(f"cannot read stack settings {path}: {error.strerror}. Fix: make it readable") from None
    except (yaml.YAMLError, ValueError) as error:
        raise CourseVmError(
            f"{path} is not valid YAML ({' '.join(str(error).split())}). Fix: correct it there, "
            "or remove it and set each value again: `pulumi config set KEY VALUE`"
        ) from None
    config = document.get("config") or {} if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise CourseVmError(
            f"{path} is not a stack's settings: they are a `config:` mapping of KEY: VALUE lines. "
            "Fix: correct it there, or remove it and set each value again: `pulumi config set KEY VALUE`"
        )
    prefix = PROJECT + ":"
    raw = {k[len(prefix) :]: v for k, v in config.items() if isinstance(k, str) and k.startswith(prefix)}
    encrypted = sorted(k for k, v in raw.items() if isinstance(v, dict))
    if encrypted:
        raise CourseVmError(
            f"{path}: {', '.join(encrypted)} encrypted, but course-vm settings are not "
            "secrets. Fix: set them again without --secret"
        )
    return parse_settings(raw, *_gcp_location(config.get("gcp:project"), config.get("gcp:zone")))


def _gcp_location(project: object, zone: object) -> tuple[object, object]:
    """`gcp:project` and `gcp:zone`, or the environment variables the GCP provider falls back to."""

    def first_env(*names: str) -> str | None:
        return next((os.environ[n] for n in names if os.environ.get(n)), None)

    return (
        project or first_env("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"),
        zone or first_env("GOOGLE_ZONE", "CLOUDSDK_COMPUTE_ZONE"),
    )
