"""The Settings record: built from the settings table's rows, GCP's keys, and the fields made from several rows."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from provisioner.errors import SettingsError
from provisioner.recipe.joint_rules import checked_gcp_location, checked_rows, emails_for_iap, report_unknown_keys
from provisioner.recipe.ports import PortForward
from provisioner.recipe.problems import Problems
from provisioner.recipe.roster import RosterEntry

# Other modules import these from here, where they were before the table had a module of its own.
from provisioner.recipe.settings_table import DEFAULTS as DEFAULTS
from provisioner.recipe.settings_table import GCE_ZONE as GCE_ZONE
from provisioner.recipe.settings_table import GCP_PROJECT_ID as GCP_PROJECT_ID
from provisioner.recipe.settings_table import IAP_RANGE as IAP_RANGE
from provisioner.recipe.settings_table import PROVIDER_KEYS
from provisioner.recipe.settings_table import SETTINGS as SETTINGS

PROJECT = "course-vm"
"""The Pulumi project name, and so the namespace of every course-vm config key."""


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
    """Every validated setting of one course VM; built only by `parse_settings`, from the settings table.

    Each field is filled by one row of the table (`Setting.field`), one of GCP's keys (`ProviderKey.field`)
    or one of DERIVED's, and nothing else: so a field has no default of its own here.
    """

    project: str
    zone: str
    machine_type: str
    disk_size_gb: int
    image: str
    baked_image: bool
    """Boot from the image `course-vm image bake` made for the stack, instead of `image`."""
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
    max_run_hours: int
    """0: never; else the VM powers itself off that many hours after it started."""
    nightly_stop_time: str
    """"" for none; else HH:MM in `time_zone`, when GCE stops the VM every day."""
    time_zone: str
    anaconda: Artifact
    docker_compose: Artifact
    docker_registry_mirror: str
    """`""` for none; else the URL Docker pulls images through."""
    students: tuple[str, ...]
    """The class roster; empty for one student's own VM."""
    roster: tuple[RosterEntry, ...]
    """Each student of `students`, with their own key and Google account when the roster CSV gives them."""
    ssh_access: str
    """`firewall` (static external IP, SSH from allowed_ssh_cidrs) or `iap` (no external IP, IAP TCP forwarding)."""
    student_email: str
    """sshAccess iap, one VM: the Google account granted access to it ("" for none)."""
    forward_ports: tuple[PortForward, ...]
    """The VM's ports each Host block forwards to the laptop's loopback while a session is open."""
    forward_agent: bool
    """Whether the Host blocks forward the laptop's ssh agent (`git push` from the VM with the laptop's key)."""

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


@dataclass(frozen=True)
class Derived:
    """A Settings field that no one row fills: MAKE builds it from the typed values of ROWS."""

    field: str
    rows: tuple[str, ...]
    make: Callable[[Mapping[str, Any]], Any]


def _artifact(prefix: str, name: str) -> Callable[[Mapping[str, Any]], Artifact]:
    """The file PREFIX's rows describe; `artifactMirrorUrl`, when set, serves it under its file name."""

    def make(values: Mapping[str, Any]) -> Artifact:
        url, mirror = values[f"{prefix}Url"], values["artifactMirrorUrl"]
        if mirror:
            url = mirror.rstrip("/") + "/" + url.rsplit("/", 1)[1]
        return Artifact(name=name, version=values[f"{prefix}Version"], url=url, sha256=values[f"{prefix}Sha256"])

    return make


def _roster(values: Mapping[str, Any]) -> tuple[RosterEntry, ...]:
    """The class: the roster CSV's students, or the `students` list's (one roster at most is set)."""
    return values["studentsCsv"] or tuple(RosterEntry(name) for name in values["students"])


DERIVED: tuple[Derived, ...] = (
    Derived(
        "anaconda",
        ("anacondaVersion", "anacondaUrl", "anacondaSha256", "artifactMirrorUrl"),
        _artifact("anaconda", "the Anaconda installer"),
    ),
    Derived(
        "docker_compose",
        ("dockerComposeVersion", "dockerComposeUrl", "dockerComposeSha256", "artifactMirrorUrl"),
        _artifact("dockerCompose", "docker-compose"),
    ),
    Derived("students", ("students", "studentsCsv"), lambda values: tuple(entry.name for entry in _roster(values))),
    Derived("roster", ("students", "studentsCsv"), _roster),
)
"""The fields made from several rows. With the rows that name a field and GCP's keys, every field of Settings
comes from exactly one of them (tests/recipe/test_settings.py)."""


def parse_settings(raw: Mapping[str, object], project: object, zone: object, *, for_gcp: bool = True) -> Settings:
    """Validate raw config values (strings, or typed values) into a Settings record.

    `raw` maps course-vm keys (without the `course-vm:` prefix) to values; absent keys take
    their defaults. `project` and `zone` are the `gcp:project` and `gcp:zone` values; with
    `for_gcp=False` (a local VM) they and `allowedSshCidrs` are not needed and left empty.
    Raises SettingsError listing every problem at once, as records.
    """
    problems = Problems()
    report_unknown_keys(problems, raw)
    location = checked_gcp_location(problems, project, zone) if for_gcp else {key.field: "" for key in PROVIDER_KEYS}
    values = checked_rows(problems, raw, for_gcp=for_gcp)
    if values["sshAccess"] == "iap":
        emails_for_iap(problems, _roster(values), listed=bool(values["students"]))
    if problems.records:
        raise SettingsError(problems.records)
    fields: dict[str, Any] = {**location, **{row.field: values[row.key] for row in SETTINGS if row.field}}
    # Only from valid rows: a mirror serves each file under the name its URL ends in.
    fields.update({derived.field: derived.make(values) for derived in DERIVED})
    return Settings(**fields)


def settings_from_pulumi(config: Mapping[str, object], gcp_get: Callable[[str], str | None]) -> Settings:
    """Build Settings from every key of the stack's `course-vm:` namespace (without the prefix), as
    Pulumi hands them to the program, and the GCP provider's getter (`pulumi.Config("gcp").get`).

    All keys, not only the known ones: a misspelt key is a problem, not silently ignored.
    Raises SettingsError listing every problem at once.
    """
    raw = {key: value for key, value in config.items() if value is not None}
    return parse_settings(raw, *_gcp_location(gcp_get("project"), gcp_get("zone")))


def _gcp_location(project: object, zone: object) -> tuple[object, object]:
    """`gcp:project` and `gcp:zone`, or the environment variables the GCP provider falls back to."""

    def first_env(names: tuple[str, ...]) -> str | None:
        return next((os.environ[n] for n in names if os.environ.get(n)), None)

    project_key, zone_key = PROVIDER_KEYS
    return project or first_env(project_key.environment), zone or first_env(zone_key.environment)
