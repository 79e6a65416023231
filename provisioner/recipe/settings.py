"""The one frozen settings record, its defaults, and the validation that guards every value."""

from __future__ import annotations

import csv
import ipaddress
import json
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import CourseVmError, SettingsError
from provisioner.paths import PROJECT_DIR

PROJECT = "course-vm"
DEFAULT_STACK = "dev"
"""The stack `python -m provisioner up` uses unless told otherwise."""
"""The Pulumi project name, and so the namespace of every course-vm config key."""

ANACONDA_DEFAULT_SHA256 = "a7c0afe862f6ea19a596801fc138bde0463abcbce1b753e8d5c474b506a2db2d"
COMPOSE_DEFAULT_SHA256 = "ed79398562f3a80a5d8c068fde14b0b12101e80b494aabb2b3533eaa10599e0f"

# Ubuntu's image is 10 GB; Anaconda (installer plus install) and Docker need about 8 GB more.
MIN_DISK_GB = 20
MAX_DISK_GB = 65536
MAX_IDLE_MINUTES = 7 * 24 * 60
MIN_HOME_DISK_GB = 10  # GCE's smallest pd-balanced disk
# Shared-core machines have too little memory: Anaconda plus Docker get sshd killed by the OOM killer.
TOO_SMALL_MACHINE_TYPES = frozenset({"f1-micro", "g1-small", "e2-micro", "e2-small", "e2-medium"})
RESERVED_USERNAMES = frozenset(
    {
        "root",
        "daemon",
        "bin",
        "sys",
        "sync",
        "games",
        "man",
        "lp",
        "mail",
        "news",
        "uucp",
        "proxy",
        "www-data",
        "backup",
        "list",
        "irc",
        "gnats",
        "nobody",
        "sshd",
        "messagebus",
        "syslog",
        "docker",
        "admin",
        "sudo",
        "adm",
        "staff",
        "users",
        "operator",
        "ubuntu",
    }
)


@dataclass(frozen=True)
class Setting:
    """One project config key: its Pulumi.yaml type, default and description."""

    key: str
    type: str
    default: Any
    description: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "machineType", "string", "e2-standard-4", "GCE machine type; the course needs 4 vCPU / 16 GB (e2-standard-4)."
    ),
    Setting("diskSizeGb", "integer", 30, f"Boot disk size in GB ({MIN_DISK_GB} or more)."),
    Setting(
        "image",
        "string",
        "ubuntu-os-cloud/ubuntu-2404-lts-amd64",
        "Boot image or image family, PROJECT/FAMILY; it must run cloud-init (Ubuntu images do).",
    ),
    Setting("username", "string", "student", "Linux login of the student on the VM (not root)."),
    Setting(
        "sshKeyPath",
        "string",
        "~/.ssh/course-vm",
        "Private key to log in with; an ed25519 key is generated there (mode 0400) if missing.",
    ),
    Setting(
        "students",
        "array",
        [],
        "A class: one VM per student name (their Linux login), each with its own key, IP and ssh Host entry.",
    ),
    Setting(
        "studentsCsv",
        "string",
        "",
        "A class from a roster: a CSV file with a `name` column (instead of `students`).",
    ),
    Setting(
        "allowedSshCidrs",
        "array",
        [],
        "IPv4 ranges allowed to reach SSH (tcp/22), e.g. your address as 203.0.113.7/32.",
    ),
    Setting(
        "verify",
        "boolean",
        True,
        "Log in after creation and check that docker hello-world works before `pulumi up` succeeds.",
    ),
    Setting(
        "verifyTimeoutSeconds",
        "integer",
        1800,
        "How long `pulumi up` waits for the VM and its setup before the check fails.",
    ),
    Setting(
        "spot",
        "boolean",
        False,
        "Run as a Spot VM (much cheaper; GCE may stop it at any time, and it is stopped, not deleted).",
    ),
    Setting(
        "homeDiskSizeGb",
        "integer",
        0,
        "Keep /home on its own persistent disk of this many GB, so that a new VM (a changed recipe) "
        "keeps the student's work (0: /home on the boot disk).",
    ),
    Setting(
        "autoStopIdleMinutes",
        "integer",
        60,
        "Power the VM off after this many minutes with no SSH connection and no CPU use (0: never).",
    ),
    Setting(
        "nightlyStopTime",
        "string",
        "",
        "Stop the VM every day at this time, HH:MM in timeZone, e.g. 22:00 (empty: no schedule).",
    ),
    Setting("timeZone", "string", "UTC", "IANA time zone of nightlyStopTime, e.g. Europe/Berlin."),
    Setting("anacondaVersion", "string", "2022.05", "Anaconda release to install; set anacondaSha256 with it."),
    Setting(
        "anacondaUrl",
        "string",
        "https://repo.anaconda.com/archive/Anaconda3-{version}-Linux-x86_64.sh",
        "Where the VM downloads the Anaconda installer; {version} is replaced by anacondaVersion.",
    ),
    Setting(
        "anacondaSha256",
        "string",
        ANACONDA_DEFAULT_SHA256,
        "sha256 of the Anaconda installer; the VM refuses any other file.",
    ),
    Setting(
        "dockerComposeVersion",
        "string",
        "v2.6.1",
        "docker-compose release to install into ~/soft; set dockerComposeSha256 with it.",
    ),
    Setting(
        "dockerComposeUrl",
        "string",
        "https://github.com/docker/compose/releases/download/{version}/docker-compose-linux-x86_64",
        "Where the VM downloads docker-compose; {version} is replaced by dockerComposeVersion.",
    ),
    Setting(
        "dockerComposeSha256",
        "string",
        COMPOSE_DEFAULT_SHA256,
        "sha256 of the docker-compose binary; the VM refuses any other file.",
    ),
    Setting(
        "artifactMirrorUrl",
        "string",
        "",
        "Mirror (http or https) serving the Anaconda installer and docker-compose by file name; "
        "checksums are still verified.",
    ),
    Setting(
        "dockerRegistryMirror",
        "string",
        "",
        "Docker registry mirror for image pulls (registry-mirrors), e.g. http://10.0.2.2:5000.",
    ),
)

DEFAULTS: Mapping[str, Any] = {s.key: s.default for s in SETTINGS}
_TYPES: Mapping[str, str] = {s.key: s.type for s in SETTINGS}


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

    @property
    def seats(self) -> tuple[Seat, ...]:
        """One VM per student, or the one VM of `username`.

        A student's key is `sshKeyPath-NAME` (with `NAME.known_hosts` beside it), so that each
        student gets their own and the instructor keeps them all in one place.
        """
        if not self.students:
            return (Seat("", self.username, self.ssh_key_path),)
        return tuple(Seat(name, name, Path(f"{self.ssh_key_path}-{name}")) for name in self.students)

    @property
    def region(self) -> str:
        """The region of `zone`, where the static IP and subnet live."""
        return self.zone.rsplit("-", 1)[0]

    @property
    def ssh_open_to_internet(self) -> bool:
        """True when a firewall range covers every IPv4 address."""
        return any(ipaddress.ip_network(c).prefixlen == 0 for c in self.allowed_ssh_cidrs)


# Patterns for values that end up in YAML, shell or an API call: anything outside them is refused,
# so that no value can carry a newline, a quote or a shell metacharacter.
_MACHINE_TYPE = re.compile(r"[a-z][a-z0-9-]{0,62}")
_IMAGE = re.compile(
    r"[a-z][a-z0-9-]{0,62}/[a-z][a-z0-9-]{0,62}"
    r"|projects/[a-z][a-z0-9-]{0,62}/global/images/(family/)?[a-z][a-z0-9-]{0,62}"
)
_USERNAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# A student's name is their login and part of GCE resource names, which allow no `_`.
_STUDENT = re.compile(r"[a-z]([a-z0-9-]{0,30}[a-z0-9])?")
MAX_STUDENTS = 200
_KEY_PATH = re.compile(r"[A-Za-z0-9_./~@+-][A-Za-z0-9_./~@+ -]*")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_ANACONDA_VERSION = re.compile(r"[0-9]{4}\.[0-9]{2}(-[0-9]+)?")
_COMPOSE_VERSION = re.compile(r"v?[0-9]+\.[0-9]+\.[0-9]+")
_HTTPS_URL = re.compile(r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/%+-]*")
_CLOCK_TIME_OR_EMPTY = re.compile(r"|([01][0-9]|2[0-3]):[0-5][0-9]")
# Mirrors may be plain http (a host on the local network): what they serve is checksum-verified,
# and Docker verifies image digests.
_MIRROR_URL_OR_EMPTY = re.compile(r"|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+-]*)?")


def _known_time_zone(name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}", name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _set(key: str, example: object) -> str:
    """The command that sets KEY, for the `Fix:` part of a message."""
    if isinstance(example, list):
        return f"pulumi config set --path '{key}[0]' {example[0]}"
    if isinstance(example, bool):
        example = str(example).lower()
    return f"pulumi config set {key} {example}"


class _Problems:
    """Collects `key: got VALUE, but WHY. Fix: WHAT` lines so that all are reported together."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, key: str, value: object, why: str, fix: str) -> None:
        self.lines.append(f"{key}: got {value!r}, but {why}. Fix: {fix}")


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,9}", value.strip()):
        return int(value)
    return None


def _as_bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return None


def _as_list(value: object) -> list[object] | None:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple)):
        return list(value)
    return None


def _check_string(p: _Problems, key: str, value: object, pattern: re.Pattern[str], why: str, example: object) -> str:
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    p.add(key, value, why, _set(key, example))
    return ""


def _check_cidrs(p: _Problems, value: object) -> tuple[str, ...]:
    key = "allowedSshCidrs"
    items = _as_list(value)
    if items is None:
        p.add(key, value, "it must be a list of IPv4 ranges", _set(key, ["203.0.113.7/32"]) + " (one index per range)")
        return ()
    if not items:
        p.add(
            key,
            value,
            "the firewall would let nobody reach SSH",
            "allow your own address: " + _set(key, ["YOUR.PUBLIC.IP/32"]) + " (0.0.0.0/0 allows the whole internet)",
        )
        return ()
    cidrs: list[str] = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        fix = f"pulumi config set --path '{where}' 203.0.113.7/32"
        if not isinstance(item, str) or not re.fullmatch(r"[0-9./]{7,18}", item):
            p.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        try:
            network = ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            p.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        if str(network) != item and f"{network.network_address}" != item:
            p.add(
                where,
                item,
                f"it has host bits set (the range is {network})",
                f"pulumi config set --path '{where}' {network}",
            )
            continue
        cidrs.append(str(network))
    return tuple(cidrs)


def _check_students(p: _Problems, listed: object, csv_path: object) -> tuple[str, ...]:
    """The roster from `students` or `studentsCsv` (not both): valid, distinct names."""
    if listed not in (None, "", []) and csv_path not in (None, ""):
        p.add(
            "studentsCsv",
            csv_path,
            "students is set too, and a class has one roster",
            "keep one: pulumi config rm students, or pulumi config rm studentsCsv",
        )
        return ()
    if csv_path not in (None, ""):
        return _students_from_csv(p, csv_path)
    if listed in (None, "", []):
        return ()
    items = _as_list(listed)
    if items is None:
        fix = _set("students", ["alice"]) + " (one index per student)"
        p.add("students", listed, "it must be a list of names", fix)
        return ()
    where = [(f"students[{i}]", f"pulumi config set --path 'students[{i}]' alice") for i in range(len(items))]
    return _check_names(p, "students", items, where)


def _students_from_csv(p: _Problems, csv_path: object) -> tuple[str, ...]:
    key = "studentsCsv"
    fix = "a CSV file whose first line names the columns, one being `name`, then one student per line"
    if not isinstance(csv_path, str) or not _KEY_PATH.fullmatch(csv_path):
        p.add(key, csv_path, "the path may hold only letters, digits, spaces and ._/~@+-", fix)
        return ()
    try:
        # A relative path is relative to the project directory, where Pulumi.yaml is.
        text = (PROJECT_DIR / os.path.expanduser(csv_path)).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        p.add(key, csv_path, f"it cannot be read ({reason})", f"point it at the roster: {_set(key, 'roster.csv')}")
        return ()
    rows = list(csv.DictReader(text.splitlines()))
    columns = {(c or "").strip().lower(): c for c in (rows[0].keys() if rows else [])}
    if "name" not in columns:
        p.add(key, csv_path, "it has no `name` column" if rows else "it lists no students", fix)
        return ()
    names: list[object] = []
    where: list[tuple[str, str]] = []
    for line, row in enumerate(rows, start=2):
        name = (row.get(columns["name"]) or "").strip()
        if name or any((v or "").strip() for v in row.values() if isinstance(v, str)):
            names.append(name)
            where.append((f"{key} {csv_path} line {line}", f"correct that line of {csv_path}"))
    if not names:
        p.add(key, csv_path, "it lists no students", fix)
    return _check_names(p, key, names, where)


def _check_names(p: _Problems, key: str, names: list[object], where: list[tuple[str, str]]) -> tuple[str, ...]:
    """Each name of the roster KEY valid and reserved for no one else; WHERE gives each name's key and fix."""
    if len(names) > MAX_STUDENTS:
        p.add(key, f"{len(names)} names", f"one stack holds at most {MAX_STUDENTS} VMs", "split the class")
        return ()
    valid: list[str] = []
    for name, (key, fix) in zip(names, where, strict=True):
        if not isinstance(name, str) or not _STUDENT.fullmatch(name):
            why = "a student name is 1-32 of a-z, 0-9 and -, starting with a letter and not ending with -"
            p.add(key, name, f"{why} (it becomes their login and part of the VM's name)", fix)
        elif name in RESERVED_USERNAMES:
            p.add(key, name, "that name belongs to the system or grants extra rights", fix)
        elif name in valid:
            p.add(key, name, "that name is listed twice, and each student gets one VM", fix)
        else:
            valid.append(name)
    return tuple(valid)


def _check_artifact(
    p: _Problems,
    raw: Mapping[str, object],
    name: str,
    prefix: str,
    version_pattern: re.Pattern[str],
    version_example: str,
) -> Artifact:
    version_key, url_key, sha_key = f"{prefix}Version", f"{prefix}Url", f"{prefix}Sha256"
    version = _check_string(
        p,
        version_key,
        raw.get(version_key, DEFAULTS[version_key]),
        version_pattern,
        "it is not a release version",
        version_example,
    )
    if prefix == "dockerCompose" and version and not version.startswith("v"):
        version = "v" + version
    sha = _check_string(
        p,
        sha_key,
        raw.get(sha_key, DEFAULTS[sha_key]),
        _SHA256,
        "a sha256 is 64 hexadecimal characters",
        f"the sha256 of {name} (`sha256sum FILE`)",
    ).lower()
    if version and version_key in raw and sha_key not in raw and version != DEFAULTS[version_key]:
        p.add(
            version_key,
            raw[version_key],
            f"the default {sha_key} only matches version {DEFAULTS[version_key]}",
            f"also set the new release's checksum: pulumi config set {sha_key} SHA256",
        )
    template = raw.get(url_key, DEFAULTS[url_key])
    url = template.replace("{version}", version) if isinstance(template, str) else template
    url = _check_string(
        p,
        url_key,
        url,
        _HTTPS_URL,
        "the URL must be https:// with no quotes, spaces, query or shell characters",
        DEFAULTS[url_key],
    )
    return Artifact(name=name, version=version, url=url, sha256=sha)


def parse_settings(raw: Mapping[str, object], project: object, zone: object, *, for_gcp: bool = True) -> Settings:
    """Validate raw config values (strings, or typed values) into a Settings record.

    `raw` maps course-vm keys (without the `course-vm:` prefix) to values; absent keys take
    their defaults. `project` and `zone` are the `gcp:project` and `gcp:zone` values; with
    `for_gcp=False` (a local VM) they and `allowedSshCidrs` are not needed and left empty.
    Raises SettingsError listing every problem at once.
    """
    p = _Problems()
    unknown = sorted(set(raw) - set(DEFAULTS))
    for key in unknown:
        p.add(
            key,
            raw[key],
            "course-vm has no such setting",
            f"remove it (pulumi config rm {key}); known keys: {', '.join(DEFAULTS)}",
        )

    def get(key: str) -> object:
        value = raw.get(key)
        return DEFAULTS[key] if value is None else value

    if for_gcp and project is None:
        p.lines.append(
            "gcp:project: not set. Fix: pulumi config set gcp:project YOUR-PROJECT-ID "
            "(`gcloud projects list` shows yours)"
        )
    gcp_project = (
        ""
        if project is None or not for_gcp
        else _check_string(p, "gcp:project", project, _PROJECT, "it is not a GCP project ID", "YOUR-PROJECT-ID")
    )
    if for_gcp and zone is None:
        p.lines.append("gcp:zone: not set. Fix: pulumi config set gcp:zone europe-west1-b (a zone near you)")
    gcp_zone = (
        ""
        if zone is None or not for_gcp
        else _check_string(p, "gcp:zone", zone, _ZONE, "it is not a GCE zone like europe-west1-b", "europe-west1-b")
    )

    machine_type = _check_string(
        p,
        "machineType",
        get("machineType"),
        _MACHINE_TYPE,
        "it is not a GCE machine type name",
        DEFAULTS["machineType"],
    )
    if machine_type in TOO_SMALL_MACHINE_TYPES:
        p.add(
            "machineType",
            machine_type,
            "it has too little memory for Anaconda and Docker (sshd gets killed when memory runs out)",
            _set("machineType", DEFAULTS["machineType"]),
        )
        machine_type = ""

    disk = _as_int(get("diskSizeGb"))
    if disk is None or not MIN_DISK_GB <= disk <= MAX_DISK_GB:
        p.add(
            "diskSizeGb",
            get("diskSizeGb"),
            f"the disk must be a whole number of GB from {MIN_DISK_GB} to {MAX_DISK_GB} "
            f"(Ubuntu needs 10 GB, Anaconda and Docker about 8 GB more)",
            _set("diskSizeGb", DEFAULTS["diskSizeGb"]),
        )
        disk = 0

    image = _check_string(
        p, "image", get("image"), _IMAGE, "it is not PROJECT/FAMILY or projects/P/global/images/NAME", DEFAULTS["image"]
    )

    username = _check_string(
        p,
        "username",
        get("username"),
        _USERNAME,
        "a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter or _",
        DEFAULTS["username"],
    )
    if username in RESERVED_USERNAMES:
        p.add(
            "username",
            username,
            "that name belongs to the system or grants extra rights",
            _set("username", DEFAULTS["username"]),
        )
        username = ""

    key_path = _check_string(
        p,
        "sshKeyPath",
        get("sshKeyPath"),
        _KEY_PATH,
        "the path may hold only letters, digits, spaces and ._/~@+-",
        DEFAULTS["sshKeyPath"],
    )
    if key_path.endswith(".pub"):
        p.add(
            "sshKeyPath",
            key_path,
            "it names a public key; the setting is the private key",
            _set("sshKeyPath", key_path[: -len(".pub")]),
        )
        key_path = ""

    cidrs = _check_cidrs(p, get("allowedSshCidrs")) if for_gcp else ()
    students = _check_students(p, raw.get("students"), raw.get("studentsCsv"))

    verify = _as_bool(get("verify"))
    if verify is None:
        p.add("verify", get("verify"), "it must be true or false", _set("verify", True))
    spot = _as_bool(get("spot"))
    if spot is None:
        p.add("spot", get("spot"), "it must be true or false", _set("spot", False))

    verify_timeout = _as_int(get("verifyTimeoutSeconds"))
    if verify_timeout is None or not 60 <= verify_timeout <= 7200:
        p.add(
            "verifyTimeoutSeconds",
            get("verifyTimeoutSeconds"),
            "it must be a whole number of seconds from 60 to 7200 (the setup alone takes minutes)",
            _set("verifyTimeoutSeconds", DEFAULTS["verifyTimeoutSeconds"]),
        )

    home_disk = _as_int(get("homeDiskSizeGb"))
    if home_disk is None or not (home_disk == 0 or MIN_HOME_DISK_GB <= home_disk <= MAX_DISK_GB):
        p.add(
            "homeDiskSizeGb",
            get("homeDiskSizeGb"),
            f"it must be a whole number of GB from {MIN_HOME_DISK_GB} to {MAX_DISK_GB}, or 0 for no home disk",
            _set("homeDiskSizeGb", 20),
        )

    idle_minutes = _as_int(get("autoStopIdleMinutes"))
    if idle_minutes is None or not 0 <= idle_minutes <= MAX_IDLE_MINUTES:
        p.add(
            "autoStopIdleMinutes",
            get("autoStopIdleMinutes"),
            f"it must be a whole number of minutes from 1 to {MAX_IDLE_MINUTES}, or 0 to never stop",
            _set("autoStopIdleMinutes", DEFAULTS["autoStopIdleMinutes"]),
        )

    nightly_stop = _check_string(
        p,
        "nightlyStopTime",
        get("nightlyStopTime"),
        _CLOCK_TIME_OR_EMPTY,
        "it must be a time of day as HH:MM (24-hour clock), or empty for no schedule",
        "22:00",
    )
    time_zone = get("timeZone")
    if not isinstance(time_zone, str) or not _known_time_zone(time_zone):
        p.add(
            "timeZone",
            time_zone,
            "it is not an IANA time zone name",
            _set("timeZone", "Europe/Berlin") + " (`timedatectl list-timezones` lists them)",
        )
        time_zone = ""

    anaconda = _check_artifact(p, raw, "the Anaconda installer", "anaconda", _ANACONDA_VERSION, "2022.05")
    compose = _check_artifact(p, raw, "docker-compose", "dockerCompose", _COMPOSE_VERSION, "v2.6.1")
    mirror = _check_string(
        p,
        "artifactMirrorUrl",
        get("artifactMirrorUrl"),
        _MIRROR_URL_OR_EMPTY,
        "a mirror is an http:// or https:// URL with no quotes, spaces, query or shell characters",
        "http://10.0.2.2:8000",
    )
    if mirror:
        anaconda, compose = (
            replace(a, url=mirror.rstrip("/") + "/" + a.url.rsplit("/", 1)[1]) for a in (anaconda, compose)
        )
    registry_mirror = _check_string(
        p,
        "dockerRegistryMirror",
        get("dockerRegistryMirror"),
        _MIRROR_URL_OR_EMPTY,
        "a registry mirror is an http:// or https:// URL like http://10.0.2.2:5000",
        "http://10.0.2.2:5000",
    )

    if p.lines:
        raise SettingsError(p.lines)
    return Settings(
        project=gcp_project,
        zone=gcp_zone,
        machine_type=machine_type,
        disk_size_gb=int(disk or 0),
        image=image,
        username=username,
        ssh_key_path=Path(os.path.expanduser(key_path)),
        allowed_ssh_cidrs=cidrs,
        verify=bool(verify),
        verify_timeout_seconds=int(verify_timeout or 0),
        spot=bool(spot),
        home_disk_size_gb=int(home_disk or 0),
        auto_stop_idle_minutes=int(idle_minutes or 0),
        nightly_stop_time=nightly_stop,
        time_zone=str(time_zone),
        anaconda=anaconda,
        docker_compose=compose,
        docker_registry_mirror=registry_mirror.rstrip("/"),
        students=students,
    )


def settings_from_pulumi(get: Callable[[str], str | None], gcp_get: Callable[[str], str | None]) -> Settings:
    """Build Settings from Pulumi config getters (`pulumi.Config().get` and `pulumi.Config("gcp").get`).

    Raises SettingsError listing every problem at once.
    """
    raw = {key: value for key in DEFAULTS if (value := get(key)) is not None}
    return parse_settings(raw, *_gcp_location(gcp_get("project"), gcp_get("zone")))


def settings_from_stack_file(path: Path) -> Settings:
    """Build Settings from a `Pulumi.<stack>.yaml` file, as `pulumi up` would, without the Pulumi CLI.

    Raises SettingsError for invalid values and CourseVmError when the file cannot be used.
    """
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise CourseVmError(
            f"cannot read stack settings {path}: {error}. Fix: `pulumi stack init dev` and set its config first"
        ) from error
    config = document.get("config") or {}
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
