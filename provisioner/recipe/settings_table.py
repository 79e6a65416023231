"""The settings table: every course-vm config key, its field, type, default, texts and rule, and GCP's own keys."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from provisioner.paths import ON_WINDOWS
from provisioner.recipe import roster
from provisioner.recipe.names import is_reserved
from provisioner.recipe.ports import DEFAULT_FORWARDS, forward_ports
from provisioner.recipe.row_rules import key_path_rule, mirror, ssh_ranges, time_zone
from provisioner.recipe.rules import ProviderKey, Setting, boolean, text, whole_number

ANACONDA_DEFAULT_VERSION = "2022.05"
ANACONDA_DEFAULT_SHA256 = "a7c0afe862f6ea19a596801fc138bde0463abcbce1b753e8d5c474b506a2db2d"
COMPOSE_DEFAULT_VERSION = "v2.6.1"
COMPOSE_DEFAULT_SHA256 = "ed79398562f3a80a5d8c068fde14b0b12101e80b494aabb2b3533eaa10599e0f"

# Ubuntu's image is 10 GB; Anaconda (installer plus install) and Docker need about 8 GB more.
MIN_DISK_GB = 20
MAX_DISK_GB = 65536
MAX_IDLE_MINUTES = 7 * 24 * 60
MAX_RUN_HOURS = 7 * 24
MIN_HOME_DISK_GB = 10  # GCE's smallest pd-balanced disk
# Shared-core machines have too little memory: Anaconda plus Docker get sshd killed by the OOM killer.
TOO_SMALL_MACHINE_TYPES = frozenset({"f1-micro", "g1-small", "e2-micro", "e2-small", "e2-medium"})

# Every value ends up in YAML, shell or an API call, so each rule admits only what a pattern allows:
# no value can carry a newline, a quote or a shell metacharacter. Patterns two rows share:
_SHA256 = r"[0-9a-fA-F]{64}"
_HTTPS_URL = r"https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._~/%+-]*"
_BAD_HTTPS_URL = "the URL must be https:// with no quotes, spaces, query or shell characters"
EMAIL = r"[A-Za-z0-9._+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+"
"""A Google account's address as IAM takes it after `user:`: no quote, space or shell character."""
IAP_RANGE = "35.235.240.0/20"
"""Where Google's Identity-Aware Proxy connects from: the only source the firewall admits under iap."""
GCP_PROJECT_ID = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
GCE_ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")


def _short_sha256(sha256: str, version: str) -> str:
    """A default checksum as the reference shows it: its two ends, and the release it is of."""
    return f"`{sha256[:8]}…{sha256[-6:]}` ({version})"


PROVIDER_KEYS: tuple[ProviderKey, ...] = (
    ProviderKey(
        key="gcp:project",
        field="project",
        pattern=GCP_PROJECT_ID,
        why="it is not a GCP project ID",
        example="YOUR-PROJECT-ID",
        hint="`gcloud projects list` shows yours",
        environment=("GOOGLE_PROJECT", "GOOGLE_CLOUD_PROJECT", "CLOUDSDK_CORE_PROJECT"),
        reference="the GCP project ID",
    ),
    ProviderKey(
        key="gcp:zone",
        field="zone",
        pattern=GCE_ZONE,
        why="it is not a GCE zone like europe-west1-b",
        example="europe-west1-b",
        hint="a zone near you",
        environment=("GOOGLE_ZONE", "CLOUDSDK_COMPUTE_ZONE"),
        reference="the zone, e.g. `europe-west1-b`; the static IP and subnet go in its region",
    ),
)
"""The GCP provider's keys the program needs, checked before the table's rows; required, set per stack."""

SETTINGS: tuple[Setting, ...] = (
    Setting(
        key="machineType",
        field="machine_type",
        type="string",
        default="e2-standard-4",
        description="GCE machine type; the course needs 4 vCPU / 16 GB (e2-standard-4).",
        reference="GCE machine type. Shared-core types (`e2-micro`, `e2-small`, `e2-medium`, `f1-micro`, `g1-small`) "
        "are refused: Anaconda plus Docker run them out of memory and the OOM killer takes sshd",
        rule=text(
            r"[a-z][a-z0-9-]{0,62}",
            "it is not a GCE machine type name",
            refused=TOO_SMALL_MACHINE_TYPES.__contains__,
            refused_why="it has too little memory for Anaconda and Docker (sshd gets killed when memory runs out)",
        ),
    ),
    Setting(
        key="diskSizeGb",
        field="disk_size_gb",
        type="integer",
        default=30,
        description=f"Boot disk size in GB ({MIN_DISK_GB} or more).",
        reference=f"boot disk in GB, {MIN_DISK_GB} to {MAX_DISK_GB}",
        rule=whole_number(
            MIN_DISK_GB,
            MAX_DISK_GB,
            f"the disk must be a whole number of GB from {MIN_DISK_GB} to {MAX_DISK_GB} "
            "(Ubuntu needs 10 GB, Anaconda and Docker about 8 GB more)",
        ),
    ),
    Setting(
        key="image",
        field="image",
        type="string",
        default="ubuntu-os-cloud/ubuntu-2404-lts-amd64",
        description="Boot image or image family, PROJECT/FAMILY; it must run cloud-init (Ubuntu images do).",
        reference="image family or image, `PROJECT/FAMILY` or `projects/P/global/images/NAME`. It must run "
        "cloud-init: Ubuntu images do, GCE's Debian images do not",
        rule=text(
            r"[a-z][a-z0-9-]{0,62}/[a-z][a-z0-9-]{0,62}"
            r"|projects/[a-z][a-z0-9-]{0,62}/global/images/(family/)?[a-z][a-z0-9-]{0,62}",
            "it is not PROJECT/FAMILY or projects/P/global/images/NAME",
        ),
    ),
    Setting(
        key="bakedImage",
        field="baked_image",
        type="boolean",
        default=False,
        description="Boot every VM from the image `course-vm image bake` made for this stack (instead of image): "
        "the VM then does only the student's part of the setup.",
        reference="boot every VM from the newest image `course-vm image bake` made for this stack (image family "
        "`course-vm-STACK`) instead of `image`; the VM then does only the student's part of the setup, after "
        "checking that the image holds the releases these settings ask for (see "
        "[a class from a baked image](../README.md#a-class-from-a-baked-image))",
        rule=boolean,
    ),
    Setting(
        key="username",
        field="username",
        type="string",
        default="student",
        description="Linux login of the student on the VM (not root).",
        reference="the student's Linux login; not `root` or another system account (nor `_*`, `systemd-*`)",
        rule=text(
            r"[a-z_][a-z0-9_-]{0,31}",
            "a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter or _",
            refused=is_reserved,
            refused_why="that name belongs to the system or grants extra rights",
        ),
    ),
    Setting(
        key="sshKeyPath",
        field="ssh_key_path",
        type="string",
        default="~/.ssh/course-vm",
        description="Private key to log in with; an ed25519 key is generated there (mode 0400) if missing.",
        reference="the private key, an absolute or `~/` path; generated (ed25519, mode 0400) if missing, by `up`, "
        "`pulumi preview` or `render`",
        rule=key_path_rule(windows=ON_WINDOWS),
    ),
    # At most one of the two is set: see joint_rules. Both make the roster (settings.DERIVED).
    Setting(
        key="students",
        type="array",
        default=[],
        description="A class: one VM per student name (their Linux login), each with its own key, IP and ssh Host "
        "entry.",
        reference="a class: one VM per name (see [A class from a roster](../README.md#a-class-from-a-roster)); "
        "set by index, `--path 'students[0]'`",
        rule=roster.listed,
    ),
    Setting(
        key="studentsCsv",
        type="string",
        default="",
        description="A class from a roster: a CSV file with a `name` column (instead of `students`), and optionally "
        "`sshPublicKey` (the student's own public key: no key pair is generated for them) and `email` "
        "(their Google account).",
        reference="a class from a CSV roster with a `name` column (instead of `students`), optionally `sshPublicKey` "
        "and `email` (see Rosters)",
        rule=roster.from_csv,
    ),
    # The three are checked together: see joint_rules.
    Setting(
        key="sshAccess",
        field="ssh_access",
        type="string",
        default="firewall",
        description="How students reach SSH: firewall (a static external IP, SSH from allowedSshCidrs) or iap "
        "(Identity-Aware Proxy through gcloud: no external address, each student's Google account granted).",
        reference="how SSH is reached: `firewall` (a static external IP, SSH from `allowedSshCidrs`) or `iap` "
        f"(Identity-Aware Proxy: no external address, a firewall for Google's IAP range `{IAP_RANGE}` only, "
        "Cloud NAT for the setup's downloads, the IAP API enabled; students connect through `gcloud compute "
        "start-iap-tunnel`; each student's Google account gets, on their own VM only, "
        "`roles/iap.tunnelResourceAccessor` to open the tunnel and `roles/compute.viewer` to read the instance "
        "(`compute.instances.get`), which older gcloud releases and `gcloud compute ssh --tunnel-through-iap` do "
        "before they tunnel; gcloud 528 given `--zone`, as the ProxyCommand is, opens the tunnel without it)",
        rule=text(
            "firewall|iap",
            "it must be firewall (SSH from allowedSshCidrs) or iap (Identity-Aware Proxy: no external address)",
            "iap",
        ),
        only_for_gcp=True,
    ),
    Setting(
        key="allowedSshCidrs",
        field="allowed_ssh_cidrs",
        type="array",
        default=[],
        description="IPv4 ranges allowed to reach SSH (tcp/22), e.g. your address as 203.0.113.7/32 (sshAccess "
        "firewall only).",
        reference_default="`[]` (must be set under `firewall`)",
        reference="IPv4 ranges that may reach SSH, e.g. `203.0.113.7/32`; `0.0.0.0/0` is allowed but warned about; "
        "refused under `iap` (unused)",
        rule=ssh_ranges,
        only_for_gcp=True,
    ),
    Setting(
        key="studentEmail",
        field="student_email",
        type="string",
        default="",
        description="sshAccess iap, one VM: the student's Google account, granted IAP access to this VM only "
        "(empty: only the project's owners reach it).",
        reference="`iap`, one VM: the student's Google account, granted `roles/iap.tunnelResourceAccessor` and "
        "`roles/compute.viewer` on that VM only (see `sshAccess`); empty: only the project's owners reach it. "
        "Refused under `firewall` and for a class (each student's email comes from the roster)",
        rule=text(f"|{EMAIL}", "it is not an email address like student@example.edu", "student@example.edu"),
        only_for_gcp=True,
    ),
    Setting(
        key="forwardPorts",
        field="forward_ports",
        type="array",
        default=[forward.text for forward in DEFAULT_FORWARDS],
        description="The VM's ports forwarded to your laptop's loopback while you are logged in (Jupyter 8888, "
        "MLflow 5000); LOCAL:REMOTE maps another laptop port, e.g. 5001:5000.",
        reference="the VM's TCP ports each `Host` block forwards to the laptop, bound to its loopback only "
        "(`LocalForward localhost:PORT localhost:PORT`): `http://localhost:PORT` reaches the tool while an ssh "
        "session is open. `LOCAL:REMOTE` maps another laptop port (macOS's AirPlay Receiver holds 5000: use "
        "`5001:5000`); ports 1024 to 65535, at most 16, no laptop port twice; set by index, `--path "
        "'forwardPorts[2]' 3000`",
        rule=forward_ports,
    ),
    Setting(
        key="forwardAgent",
        field="forward_agent",
        type="boolean",
        default=False,
        description="Forward your laptop's ssh agent (ForwardAgent yes), so that git on the VM pushes with your "
        "laptop's key; root on the VM can use the agent while you are logged in.",
        reference="`ForwardAgent yes` in each `Host` block: `git push` over SSH on the VM signs with the key in the "
        "laptop's agent. Whoever is root on the VM can use that agent while the session is open (see "
        "[security.md](security.md)); the alternative is a deploy key made on the VM",
        rule=boolean,
    ),
    Setting(
        key="verify",
        field="verify",
        type="boolean",
        default=True,
        description="Log in after creation and check that docker hello-world works before `pulumi up` succeeds.",
        reference="check the VM over SSH before `up` succeeds, and pin its host key (see "
        "[below](#how-up-knows-the-vm-works))",
        rule=boolean,
    ),
    Setting(
        key="verifyTimeoutSeconds",
        field="verify_timeout_seconds",
        type="integer",
        default=1800,
        description="How long `pulumi up` waits for the VM and its setup before the check fails.",
        reference="how long `up` waits for the VM and its setup, 60 to 7200",
        rule=whole_number(
            60, 7200, "it must be a whole number of seconds from 60 to 7200 (the setup alone takes minutes)"
        ),
    ),
    Setting(
        key="spot",
        field="spot",
        type="boolean",
        default=False,
        description="Run as a Spot VM (much cheaper; GCE may stop it at any time, and it is stopped, not deleted).",
        reference="a Spot VM: far cheaper, but GCE may stop it at any time (it is stopped, not deleted; start it "
        "again)",
        rule=boolean,
    ),
    Setting(
        key="homeDiskSizeGb",
        field="home_disk_size_gb",
        type="integer",
        default=0,
        description="Keep /home on its own persistent disk of this many GB, so that a new VM (a changed recipe) "
        "keeps the student's work (0: /home on the boot disk).",
        reference="`/home` (the student's files, `~/anaconda3`) on its own persistent disk of this size "
        f"({MIN_HOME_DISK_GB} or more), kept when the VM is replaced, deleted with it by `down` (or by removing "
        "the student from a roster); `0`: none. It is mounted before the student's user is created; if it is "
        "missing or not mounted, the setup fails at its `home` step rather than put the work on the boot disk. "
        "How a disk is judged new before it is formatted: [security.md](security.md)",
        rule=whole_number(
            MIN_HOME_DISK_GB,
            MAX_DISK_GB,
            f"it must be a whole number of GB from {MIN_HOME_DISK_GB} to {MAX_DISK_GB}, or 0 for no home disk",
            20,
            or_zero=True,
        ),
    ),
    Setting(
        key="autoStopIdleMinutes",
        field="auto_stop_idle_minutes",
        type="integer",
        default=60,
        description="Power the VM off after this many minutes without use: no typing in a terminal, no data over "
        "SSH, no CPU use; an open but idle session does not count (0: never).",
        reference=f"the [idle stop](../README.md#stop-start-and-down), 1 to {MAX_IDLE_MINUTES} minutes; `0`: never. "
        "Use is typing in a terminal, data moving over SSH, a busy CPU or the setup running; an SSH session or "
        "VS Code window that is open but idle is not",
        rule=whole_number(
            0,
            MAX_IDLE_MINUTES,
            f"it must be a whole number of minutes from 1 to {MAX_IDLE_MINUTES}, or 0 to never stop",
        ),
    ),
    Setting(
        key="maxRunHours",
        field="max_run_hours",
        type="integer",
        default=12,
        description="Power the VM off this many hours after it started, whatever it is doing, after a warning; "
        "course-vm start starts it again (0: never).",
        reference=f"the [running cap](../README.md#stop-start-and-down), 1 to {MAX_RUN_HOURS} hours after the VM "
        "started, whatever it is doing; `0`: never",
        rule=whole_number(
            0,
            MAX_RUN_HOURS,
            f"it must be a whole number of hours from 1 to {MAX_RUN_HOURS}, or 0 for no cap",
        ),
    ),
    Setting(
        key="nightlyStopTime",
        field="nightly_stop_time",
        type="string",
        default="",
        description="Stop the VM every day at this time, HH:MM in timeZone, e.g. 22:00 (empty: no schedule).",
        reference="stop the VMs every day at `HH:MM` (24-hour clock) in `timeZone`; see the note below the table",
        rule=text(
            r"|([01][0-9]|2[0-3]):[0-5][0-9]",
            "it must be a time of day as HH:MM (24-hour clock), or empty for no schedule",
            "22:00",
        ),
    ),
    Setting(
        key="timeZone",
        field="time_zone",
        type="string",
        default="UTC",
        description="IANA time zone of nightlyStopTime, e.g. Europe/Berlin.",
        reference="IANA time zone of `nightlyStopTime`, e.g. `Europe/Berlin`",
        rule=time_zone,
    ),
    # Each artifact's version, URL and checksum are checked together (joint_rules) and make one
    # Artifact with the mirror (settings.DERIVED).
    Setting(
        key="anacondaVersion",
        type="string",
        default=ANACONDA_DEFAULT_VERSION,
        description="Anaconda release to install; set anacondaSha256 with it.",
        reference="Anaconda release; when you change it, set `anacondaSha256` too",
        rule=text(r"[0-9]{4}\.[0-9]{2}(-[0-9]+)?", "it is not a release version"),
    ),
    Setting(
        key="anacondaUrl",
        type="string",
        default="https://repo.anaconda.com/archive/Anaconda3-{version}-Linux-x86_64.sh",
        description="Where the VM downloads the Anaconda installer; {version} is replaced by anacondaVersion.",
        reference="where the installer is downloaded; `{version}` becomes `anacondaVersion`",
        rule=text(_HTTPS_URL, _BAD_HTTPS_URL),
    ),
    Setting(
        key="anacondaSha256",
        type="string",
        default=ANACONDA_DEFAULT_SHA256,
        description="sha256 of the Anaconda installer; the VM refuses any other file.",
        reference_default=_short_sha256(ANACONDA_DEFAULT_SHA256, ANACONDA_DEFAULT_VERSION),
        reference="checksum of the installer; the VM refuses any other file",
        rule=text(
            _SHA256,
            "a sha256 is 64 hexadecimal characters",
            "the sha256 of the Anaconda installer (`sha256sum FILE`)",
            then=str.lower,
        ),
    ),
    Setting(
        key="dockerComposeVersion",
        type="string",
        default=COMPOSE_DEFAULT_VERSION,
        description="docker-compose release to install into ~/soft; set dockerComposeSha256 with it.",
        reference="docker-compose release; when you change it, set `dockerComposeSha256` too",
        # Releases are tagged vX.Y.Z, and the tag is part of the download URL.
        rule=text(
            r"v?[0-9]+\.[0-9]+\.[0-9]+",
            "it is not a release version",
            then=lambda version: version if version.startswith("v") else "v" + version,
        ),
    ),
    Setting(
        key="dockerComposeUrl",
        type="string",
        default="https://github.com/docker/compose/releases/download/{version}/docker-compose-linux-x86_64",
        description="Where the VM downloads docker-compose; {version} is replaced by dockerComposeVersion.",
        reference="where docker-compose is downloaded",
        rule=text(_HTTPS_URL, _BAD_HTTPS_URL),
    ),
    Setting(
        key="dockerComposeSha256",
        type="string",
        default=COMPOSE_DEFAULT_SHA256,
        description="sha256 of the docker-compose binary; the VM refuses any other file.",
        reference_default=_short_sha256(COMPOSE_DEFAULT_SHA256, COMPOSE_DEFAULT_VERSION),
        reference="checksum of docker-compose; the VM refuses any other file",
        rule=text(
            _SHA256,
            "a sha256 is 64 hexadecimal characters",
            "the sha256 of docker-compose (`sha256sum FILE`)",
            then=str.lower,
        ),
    ),
    Setting(
        key="artifactMirrorUrl",
        type="string",
        default="",
        description="Mirror serving the Anaconda installer and docker-compose by file name (checksums are still "
        "verified); https://, or http:// to a loopback or link-local host such as http://169.254.2.2:8000.",
        reference="a web server with both files under their usual names "
        f"(`Anaconda3-{ANACONDA_DEFAULT_VERSION}-Linux-x86_64.sh`, `docker-compose-linux-x86_64`); replaces both "
        "URLs; the checksums are still verified",
        rule=mirror(
            "a mirror is an https:// URL with no quotes, spaces, query or shell characters",
            "anyone on the network path could serve other files (the checksums would refuse them, "
            "and the setup would fail)",
            "https://mirror.example.org/course-vm",
        ),
    ),
    Setting(
        key="dockerRegistryMirror",
        field="docker_registry_mirror",
        type="string",
        default="",
        description="Docker registry mirror for image pulls (registry-mirrors); https://, or http:// to a loopback "
        "or link-local host such as http://169.254.2.2:5000. Docker trusts what it serves for a pull by tag.",
        reference="a registry mirror for image pulls (`registry-mirrors` in `/etc/docker/daemon.json`; an `http://` "
        "one also under `insecure-registries`)",
        rule=mirror(
            "a registry mirror is an https:// URL like https://registry.example.org:5000",
            "anyone on the network path could serve other images, and Docker trusts what a mirror serves "
            "for a pull by tag",
            "https://registry.example.org:5000",
            then=lambda url: url.rstrip("/"),
        ),
    ),
)
"""Every course-vm config key, in the order its problems are reported, Pulumi.yaml declares it and the
reference lists it (settings_docs writes both from this table)."""

DEFAULTS: Mapping[str, Any] = {row.key: row.default for row in SETTINGS}
ROW: Mapping[str, Setting] = {row.key: row for row in SETTINGS}
