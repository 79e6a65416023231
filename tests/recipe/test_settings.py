"""Settings: defaults, normalisation, and one exact message per kind of bad value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from provisioner.errors import SettingsError
from provisioner.recipe.joint_rules import checked_rows
from provisioner.recipe.problems import Problems
from provisioner.recipe.row_rules import is_absolute, key_path_rule
from provisioner.recipe.rules import Setting
from provisioner.recipe.settings import (
    DERIVED,
    Settings,
    parse_settings,
    settings_from_pulumi,
)
from provisioner.recipe.settings_table import ANACONDA_DEFAULT_SHA256, DEFAULTS, PROVIDER_KEYS, SETTINGS
from tests.support.settings_problems import GOOD, PROJECT, ZONE, problems


def test_defaults_are_the_course_setup() -> None:
    s = parse_settings(GOOD, PROJECT, ZONE)
    assert (s.machine_type, s.disk_size_gb, s.username) == ("e2-standard-4", 30, "student")
    assert s.image == "ubuntu-os-cloud/ubuntu-2404-lts-amd64"
    assert s.ssh_key_path == Path("~/.ssh/course-vm").expanduser()
    assert s.allowed_ssh_cidrs == ("203.0.113.7/32",)
    assert s.verify is True
    assert s.region == "europe-west1"
    assert s.anaconda.url == "https://repo.anaconda.com/archive/Anaconda3-2022.05-Linux-x86_64.sh"
    assert s.anaconda.sha256 == ANACONDA_DEFAULT_SHA256
    assert s.docker_compose.version == "v2.6.1"
    assert s.docker_compose.url == (
        "https://github.com/docker/compose/releases/download/v2.6.1/docker-compose-linux-x86_64"
    )


def test_every_field_of_settings_comes_from_one_row_one_gcp_key_or_one_derivation() -> None:
    # A row that names a misspelt or missing field, a field no row fills, or a field filled twice differ here.
    filled = [row.field for row in SETTINGS if row.field]
    filled += [key.field for key in PROVIDER_KEYS] + [derived.field for derived in DERIVED]
    fields = dataclasses.fields(Settings)
    assert sorted(filled) == sorted(field.name for field in fields)
    # The table holds the defaults: the record has none of its own to drift from them.
    assert [field.name for field in fields if field.default is not dataclasses.MISSING] == []


def test_every_row_fills_a_field_or_feeds_a_derived_one() -> None:
    fed = {key for derived in DERIVED for key in derived.rows}
    assert [row.key for row in SETTINGS if not row.field and row.key not in fed] == []
    assert fed - {row.key for row in SETTINGS} == set()


def test_a_derived_field_reads_only_the_rows_it_names(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,alice@example.edu\n")
    raw = {**GOOD, "studentsCsv": str(roster), "artifactMirrorUrl": "http://169.254.2.2:8000"}
    settings = parse_settings(raw, PROJECT, ZONE)
    values = checked_rows(Problems(), raw, for_gcp=True)
    for derived in DERIVED:
        made = derived.make({key: values[key] for key in derived.rows})
        assert made == getattr(settings, derived.field), derived.field


def test_values_as_pulumi_config_strings_are_typed() -> None:
    s = parse_settings(
        {"diskSizeGb": "45", "verify": "false", "allowedSshCidrs": '["198.51.100.0/24", "203.0.113.9"]'},
        PROJECT,
        ZONE,
    )
    assert s.disk_size_gb == 45
    assert s.verify is False
    assert s.allowed_ssh_cidrs == ("198.51.100.0/24", "203.0.113.9/32")


def test_new_release_with_its_checksum() -> None:
    s = parse_settings(
        {
            **GOOD,
            "dockerComposeVersion": "2.20.0",
            "dockerComposeSha256": "AB" * 32,
            "anacondaVersion": "2023.03-1",
            "anacondaSha256": "c" * 64,
        },
        PROJECT,
        ZONE,
    )
    assert s.docker_compose.version == "v2.20.0"
    assert s.docker_compose.sha256 == "ab" * 32
    assert s.docker_compose.url.endswith("/download/v2.20.0/docker-compose-linux-x86_64")
    assert s.anaconda.url.endswith("/Anaconda3-2023.03-1-Linux-x86_64.sh")


def test_ssh_open_to_internet_is_allowed_but_flagged() -> None:
    s = parse_settings({"allowedSshCidrs": ["0.0.0.0/0"]}, PROJECT, ZONE)
    assert s.ssh_open_to_internet
    assert not parse_settings(GOOD, PROJECT, ZONE).ssh_open_to_internet
    # Anywhere in the list, not only first.
    assert parse_settings({"allowedSshCidrs": ["203.0.113.7/32", "0.0.0.0/0"]}, PROJECT, ZONE).ssh_open_to_internet


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"username": "root"},
            "username: got 'root', but that name belongs to the system or grants extra rights. "
            "Fix: pulumi config set username student",
        ),
        (
            {"username": "Bob"},
            "username: got 'Bob', but a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter or _. "
            "Fix: pulumi config set username student",
        ),
        (
            {"username": "eve\n  - name: root"},
            "username: got 'eve\\n  - name: root', but a Linux login is 1-32 of a-z, 0-9, _ and -, starting "
            "with a letter or _. Fix: pulumi config set username student",
        ),
        (
            {"username": "$(reboot)"},
            "username: got '$(reboot)', but a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter "
            "or _. Fix: pulumi config set username student",
        ),
        *(
            (
                {"username": name},
                f"username: got {name!r}, but a Linux login is 1-32 of a-z, 0-9, _ and -, starting with a letter "
                "or _. Fix: pulumi config set username student",
            )
            for name in ("alice\n", "al\nice", "\nalice")
        ),
        *(
            (
                {"username": name},
                f"username: got {name!r}, but that name belongs to the system or grants extra rights. "
                "Fix: pulumi config set username student",
            )
            for name in ("_apt", "_anything", "systemd-network", "systemd-new", "tss", "polkitd", "tcpdump", "lxd")
        ),
        *(
            (
                {"sshKeyPath": path},
                f"sshKeyPath: got {path!r}, but it is a relative path, so the private key would land in whatever "
                "directory the command runs in (under `pulumi up`, the project directory). "
                "Fix: pulumi config set sshKeyPath ~/.ssh/course-vm",
            )
            for path in ("course-vm", "keys/course-vm", "./course-vm", "~no-such-user/course-vm")
        ),
        (
            {"diskSizeGb": "10"},
            "diskSizeGb: got '10', but the disk must be a whole number of GB from 20 to 65536 (Ubuntu needs "
            "10 GB, Anaconda and Docker about 8 GB more). Fix: pulumi config set diskSizeGb 30",
        ),
        (
            {"diskSizeGb": "thirty"},
            "diskSizeGb: got 'thirty', but the disk must be a whole number of GB from 20 to 65536 (Ubuntu needs "
            "10 GB, Anaconda and Docker about 8 GB more). Fix: pulumi config set diskSizeGb 30",
        ),
        (
            {"machineType": "e2-micro"},
            "machineType: got 'e2-micro', but it has too little memory for Anaconda and Docker (sshd gets killed "
            "when memory runs out). Fix: pulumi config set machineType e2-standard-4",
        ),
        (
            {"machineType": "e2-standard-4; rm -rf /"},
            "machineType: got 'e2-standard-4; rm -rf /', but it is not a GCE machine type name. "
            "Fix: pulumi config set machineType e2-standard-4",
        ),
        (
            {"image": "ubuntu"},
            "image: got 'ubuntu', but it is not PROJECT/FAMILY or projects/P/global/images/NAME. "
            "Fix: pulumi config set image ubuntu-os-cloud/ubuntu-2404-lts-amd64",
        ),
        (
            {"sshKeyPath": "~/.ssh/id_ed25519.pub"},
            "sshKeyPath: got '~/.ssh/id_ed25519.pub', but it names a public key; the setting is the private key. "
            "Fix: pulumi config set sshKeyPath ~/.ssh/id_ed25519",
        ),
        (
            {"sshKeyPath": '~/.ssh/key"; x'},
            "sshKeyPath: got '~/.ssh/key\"; x', but the path may hold only letters, digits, spaces and ._/~@+-. "
            "Fix: pulumi config set sshKeyPath ~/.ssh/course-vm",
        ),
        (
            {"allowedSshCidrs": []},
            "allowedSshCidrs: got [], but the firewall would let nobody reach SSH. Fix: allow your own address: "
            "pulumi config set --path 'allowedSshCidrs[0]' YOUR.PUBLIC.IP/32 (0.0.0.0/0 allows the whole "
            "internet)",
        ),
        (
            {"allowedSshCidrs": "203.0.113.7/32"},
            "allowedSshCidrs: got '203.0.113.7/32', but it must be a list of IPv4 ranges. "
            "Fix: pulumi config set --path 'allowedSshCidrs[0]' 203.0.113.7/32 (one index per range)",
        ),
        (
            {"allowedSshCidrs": ["203.0.113.7/33"]},
            "allowedSshCidrs[0]: got '203.0.113.7/33', but it is not an IPv4 range like 203.0.113.7/32. "
            "Fix: pulumi config set --path 'allowedSshCidrs[0]' 203.0.113.7/32",
        ),
        (
            {"allowedSshCidrs": ["203.0.113.7/32", "203.0.113.7/24"]},
            "allowedSshCidrs[1]: got '203.0.113.7/24', but it has host bits set (the range is 203.0.113.0/24). "
            "Fix: pulumi config set --path 'allowedSshCidrs[1]' 203.0.113.0/24",
        ),
        (
            {"allowedSshCidrs": ["2001:db8::/32"]},
            "allowedSshCidrs[0]: got '2001:db8::/32', but it is not an IPv4 range like 203.0.113.7/32. "
            "Fix: pulumi config set --path 'allowedSshCidrs[0]' 203.0.113.7/32",
        ),
        ({"verify": "yes"}, "verify: got 'yes', but it must be true or false. Fix: pulumi config set verify true"),
        ({"spot": "cheap"}, "spot: got 'cheap', but it must be true or false. Fix: pulumi config set spot false"),
        (
            {"verifyTimeoutSeconds": "30"},
            "verifyTimeoutSeconds: got '30', but it must be a whole number of seconds from 60 to 7200 (the setup "
            "alone takes minutes). Fix: pulumi config set verifyTimeoutSeconds 1800",
        ),
        (
            {"autoStopIdleMinutes": "-5"},
            "autoStopIdleMinutes: got '-5', but it must be a whole number of minutes from 1 to 10080, or 0 to "
            "never stop. Fix: pulumi config set autoStopIdleMinutes 60",
        ),
        (
            {"autoStopIdleMinutes": 20000},
            "autoStopIdleMinutes: got 20000, but it must be a whole number of minutes from 1 to 10080, or 0 to "
            "never stop. Fix: pulumi config set autoStopIdleMinutes 60",
        ),
        (
            {"maxRunHours": "-1"},
            "maxRunHours: got '-1', but it must be a whole number of hours from 1 to 168, or 0 for no cap. "
            "Fix: pulumi config set maxRunHours 12",
        ),
        (
            {"maxRunHours": 169},
            "maxRunHours: got 169, but it must be a whole number of hours from 1 to 168, or 0 for no cap. "
            "Fix: pulumi config set maxRunHours 12",
        ),
        (
            {"maxRunHours": "1.5"},
            "maxRunHours: got '1.5', but it must be a whole number of hours from 1 to 168, or 0 for no cap. "
            "Fix: pulumi config set maxRunHours 12",
        ),
        (
            {"maxRunHours": "twelve"},
            "maxRunHours: got 'twelve', but it must be a whole number of hours from 1 to 168, or 0 for no cap. "
            "Fix: pulumi config set maxRunHours 12",
        ),
        (
            {"homeDiskSizeGb": "5"},
            "homeDiskSizeGb: got '5', but it must be a whole number of GB from 10 to 65536, or 0 for no home disk. "
            "Fix: pulumi config set homeDiskSizeGb 20",
        ),
        (
            {"nightlyStopTime": "10pm"},
            "nightlyStopTime: got '10pm', but it must be a time of day as HH:MM (24-hour clock), or empty for no "
            "schedule. Fix: pulumi config set nightlyStopTime 22:00",
        ),
        (
            {"nightlyStopTime": "24:00"},
            "nightlyStopTime: got '24:00', but it must be a time of day as HH:MM (24-hour clock), or empty for no "
            "schedule. Fix: pulumi config set nightlyStopTime 22:00",
        ),
        (
            {"timeZone": "Mars/Olympus"},
            "timeZone: got 'Mars/Olympus', but it is not an IANA time zone name. "
            "Fix: pulumi config set timeZone Europe/Berlin (`timedatectl list-timezones` lists them)",
        ),
        (
            {"timeZone": "../../etc/passwd"},
            "timeZone: got '../../etc/passwd', but it is not an IANA time zone name. "
            "Fix: pulumi config set timeZone Europe/Berlin (`timedatectl list-timezones` lists them)",
        ),
        (
            {"anacondaSha256": "not-hex"},
            "anacondaSha256: got 'not-hex', but a sha256 is 64 hexadecimal characters. "
            "Fix: pulumi config set anacondaSha256 the sha256 of the Anaconda installer (`sha256sum FILE`)",
        ),
        (
            {"dockerComposeSha256": "g" * 64},
            f"dockerComposeSha256: got '{'g' * 64}', but a sha256 is 64 hexadecimal characters. "
            "Fix: pulumi config set dockerComposeSha256 the sha256 of docker-compose (`sha256sum FILE`)",
        ),
        (
            {"anacondaVersion": "2023.03"},
            "anacondaVersion: got '2023.03', but the default anacondaSha256 only matches version 2022.05. "
            "Fix: also set the new release's checksum: pulumi config set anacondaSha256 SHA256",
        ),
        (
            {"dockerComposeVersion": "latest"},
            "dockerComposeVersion: got 'latest', but it is not a release version. "
            "Fix: pulumi config set dockerComposeVersion v2.6.1",
        ),
        (
            {"anacondaUrl": "http://repo.anaconda.com/archive/x.sh"},
            "anacondaUrl: got 'http://repo.anaconda.com/archive/x.sh', but the URL must be https:// with no "
            "quotes, spaces, query or shell characters. "
            "Fix: pulumi config set anacondaUrl https://repo.anaconda.com/archive/Anaconda3-{version}-Linux-x86_64.sh",
        ),
        (
            {"dockerComposeUrl": "https://example.com/compose';reboot;'"},
            "dockerComposeUrl: got \"https://example.com/compose';reboot;'\", but the URL must be https:// with no "
            "quotes, spaces, query or shell characters. Fix: pulumi config set dockerComposeUrl "
            "https://github.com/docker/compose/releases/download/{version}/docker-compose-linux-x86_64",
        ),
        (
            {"machinetype": "e2-standard-8"},
            "machinetype: got 'e2-standard-8', but course-vm has no such setting (did you mean machineType?). "
            "Fix: pulumi config rm machinetype, then pulumi config set machineType e2-standard-8",
        ),
        (
            {"diskSize": 40},
            "diskSize: got 40, but course-vm has no such setting (did you mean diskSizeGb?). "
            "Fix: pulumi config rm diskSize, then pulumi config set diskSizeGb 40",
        ),
        (
            {"colour": "blue"},
            "colour: got 'blue', but course-vm has no such setting. Fix: remove it (pulumi config rm colour); "
            "known keys: " + ", ".join(DEFAULTS),
        ),
    ],
)
def test_bad_value_message(raw: dict[str, object], message: str) -> None:
    assert problems(raw) == [message]


@pytest.mark.parametrize(
    ("project", "zone", "expected"),
    [
        (
            None,
            ZONE,
            [
                "gcp:project: not set. Fix: pulumi config set gcp:project YOUR-PROJECT-ID "
                "(`gcloud projects list` shows yours)"
            ],
        ),
        (PROJECT, None, ["gcp:zone: not set. Fix: pulumi config set gcp:zone europe-west1-b (a zone near you)"]),
        (
            "My Project",
            ZONE,
            [
                "gcp:project: got 'My Project', but it is not a GCP project ID. "
                "Fix: pulumi config set gcp:project YOUR-PROJECT-ID (`gcloud projects list` shows yours)"
            ],
        ),
        (
            PROJECT,
            "europe-west1",
            [
                "gcp:zone: got 'europe-west1', but it is not a GCE zone like europe-west1-b. "
                "Fix: pulumi config set gcp:zone europe-west1-b (a zone near you)"
            ],
        ),
    ],
)
def test_gcp_location_messages(project: object, zone: object, expected: list[str]) -> None:
    assert problems({}, project, zone) == expected


def test_every_problem_is_reported_together() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({"username": "root", "diskSizeGb": 5, "allowedSshCidrs": ["x"], "verify": "maybe"}, None, None)
    keys = [line.split(":")[0] for line in raised.value.problems]
    assert keys == ["gcp", "gcp", "diskSizeGb", "username", "allowedSshCidrs[0]", "verify"]
    text = str(raised.value)
    assert text.startswith("course-vm settings: 6 problems, nothing was created:\n  - gcp:project: not set.")


def test_problems_are_listed_in_the_settings_tables_order() -> None:
    # Unknown keys, then the provider's keys, then Pulumi.yaml's order; not the raw config's order.
    raw = {
        "zzz": 1,
        "machinetype": "e2-standard-8",
        "dockerRegistryMirror": "10.0.2.2:5000",
        "artifactMirrorUrl": "ftp://mirror",
        "dockerComposeSha256": "g" * 64,
        "dockerComposeUrl": "ftp://mirror/compose",
        "dockerComposeVersion": "latest",
        "anacondaUrl": "http://mirror/a.sh",
        "anacondaVersion": "2023.03",
        "timeZone": "Mars/Olympus",
        "nightlyStopTime": "10pm",
        "autoStopIdleMinutes": "-5",
        "homeDiskSizeGb": "5",
        "spot": "cheap",
        "verifyTimeoutSeconds": "30",
        "verify": "maybe",
        "allowedSshCidrs": ["x"],
        "students": ["Bob"],
        "sshKeyPath": "~/.ssh/key.pub",
        "username": "root",
        "image": "ubuntu",
        "diskSizeGb": "10",
        "machineType": "e2-micro",
    }
    with pytest.raises(SettingsError) as raised:
        parse_settings(raw, "My Project", "europe-west1")
    lines = raised.value.problems
    assert [line.split(": got ")[0] for line in lines] == [
        "machinetype",
        "zzz",
        "gcp:project",
        "gcp:zone",
        "machineType",
        "diskSizeGb",
        "image",
        "username",
        "sshKeyPath",
        "students[0]",
        "allowedSshCidrs[0]",
        "verify",
        "verifyTimeoutSeconds",
        "spot",
        "homeDiskSizeGb",
        "autoStopIdleMinutes",
        "nightlyStopTime",
        "timeZone",
        "anacondaVersion",
        "anacondaUrl",
        "dockerComposeVersion",
        "dockerComposeSha256",
        "dockerComposeUrl",
        "artifactMirrorUrl",
        "dockerRegistryMirror",
    ]
    assert "the default anacondaSha256 only matches version 2022.05" in lines[18]
    assert "it is not a release version" in lines[20]


@pytest.mark.parametrize("key", ["anacondaUrl", "dockerComposeUrl"])
def test_a_bad_url_beside_a_mirror_is_reported_not_a_crash(key: str) -> None:
    # The mirror replaces both URLs by their file names, which a URL that failed its rule has none of.
    assert problems({"artifactMirrorUrl": "http://169.254.2.2:8000", key: "ftp://example.com/x"}) == [
        f"{key}: got 'ftp://example.com/x', but the URL must be https:// with no quotes, spaces, query or "
        f"shell characters. Fix: pulumi config set {key} {DEFAULTS[key]}"
    ]


def test_settings_from_pulumi_uses_provider_environment_fallbacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_PROJECT", "env-project-1")
    monkeypatch.setenv("CLOUDSDK_COMPUTE_ZONE", "us-east1-c")
    config = {"allowedSshCidrs": '["203.0.113.7/32"]'}
    unset: dict[str, str] = {}
    s = settings_from_pulumi(config, unset.get)
    assert (s.project, s.zone, s.region) == ("env-project-1", "us-east1-c", "us-east1")
    s = settings_from_pulumi(config, {"project": "cfg-project-1", "zone": "asia-east1-a"}.get)
    assert (s.project, s.zone) == ("cfg-project-1", "asia-east1-a")


def test_settings_from_pulumi_reports_a_bad_range_from_pulumis_strings() -> None:
    # Pulumi hands an array over as a JSON string; its items are checked as the stack file's are.
    config = {"allowedSshCidrs": '["203.0.113.7/32", "203.0.113.300/32", "10.1.2.3/8"]'}
    with pytest.raises(SettingsError) as raised:
        settings_from_pulumi(config, {"project": PROJECT, "zone": ZONE}.get)
    assert list(raised.value.problems) == [
        "allowedSshCidrs[1]: got '203.0.113.300/32', but it is not an IPv4 range like 203.0.113.7/32. "
        "Fix: pulumi config set --path 'allowedSshCidrs[1]' 203.0.113.7/32",
        "allowedSshCidrs[2]: got '10.1.2.3/8', but it has host bits set (the range is 10.0.0.0/8). "
        "Fix: pulumi config set --path 'allowedSshCidrs[2]' 10.0.0.0/8",
    ]


def test_settings_from_pulumi_refuses_a_key_of_its_namespace_it_does_not_know() -> None:
    # `pulumi config set machinetype ...` reaches the program as course-vm:machinetype: it is refused
    # with every other problem, not silently ignored.
    config = {"allowedSshCidrs": '["203.0.113.7/32"]', "machinetype": "n2-standard-8", "diskSizeGb": "5"}
    with pytest.raises(SettingsError) as raised:
        settings_from_pulumi(config, {"project": PROJECT, "zone": ZONE}.get)
    assert [line.split(":")[0] for line in raised.value.problems] == ["machinetype", "diskSizeGb"]
    assert "(did you mean machineType?)" in raised.value.problems[0]


@pytest.mark.parametrize(
    ("path", "windows", "absolute"),
    [
        ("/home/me/.ssh/course-vm", False, True),
        ("course-vm", False, False),
        ("C:\\keys\\course-vm", False, False),  # on Linux a file named so in the current directory
        ("C:\\keys\\course-vm", True, True),
        ("C:/keys/course-vm", True, True),
        ("C:/keys/course-vm", False, False),
        ("C:course-vm", True, False),  # relative to drive C's current directory
        ("\\keys\\course-vm", True, False),  # relative to the current drive
        ("keys\\course-vm", True, False),
    ],
)
def test_which_key_paths_are_absolute(path: str, windows: bool, absolute: bool) -> None:
    assert is_absolute(path, windows=windows) is absolute


def test_a_key_path_from_home_is_absolute_after_expansion(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/teacher")
    s = parse_settings({**GOOD, "sshKeyPath": "~/keys/course-vm"}, PROJECT, ZONE)
    assert s.ssh_key_path == Path("/home/teacher/keys/course-vm")


def check_key_path(value: str, *, windows: bool) -> tuple[str, list[str]]:
    """The `sshKeyPath` rule of Windows or of Linux and macOS: the path it yields, and its problems."""
    problems = Problems()
    setting = Setting("sshKeyPath", "string", "~/.ssh/course-vm", "", rule=key_path_rule(windows=windows))
    return str(setting.check(problems, value)), problems.lines


@pytest.mark.parametrize(
    ("value", "expanded"),
    [
        ("C:\\Users\\Alice Smith\\.ssh\\course-vm", "C:\\Users\\Alice Smith\\.ssh\\course-vm"),
        ("C:/Users/Alice Smith/.ssh/course-vm", "C:/Users/Alice Smith/.ssh/course-vm"),
        ("d:\\keys\\course-vm", "d:\\keys\\course-vm"),
        ("~\\.ssh\\course-vm", "C:\\Users\\Alice Smith\\.ssh\\course-vm"),
        ("~/.ssh/course-vm", "C:\\Users\\Alice Smith/.ssh/course-vm"),
        ("\\\\server\\share\\course-vm", "\\\\server\\share\\course-vm"),
    ],
)
def test_windows_key_paths(monkeypatch: pytest.MonkeyPatch, value: str, expanded: str) -> None:
    monkeypatch.setenv("USERPROFILE", "C:\\Users\\Alice Smith")
    assert check_key_path(value, windows=True) == (expanded, [])


RELATIVE = (
    "it is a relative path, so the private key would land in whatever directory the command runs in "
    "(under `pulumi up`, the project directory). Fix: pulumi config set sshKeyPath ~/.ssh/course-vm"
)
WINDOWS_CHARACTERS = (
    "the path may hold only a drive letter (C:), letters, digits, spaces and ._/\\~@+-. "
    "Fix: pulumi config set sshKeyPath ~/.ssh/course-vm"
)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("C:course-vm", RELATIVE),
        ("\\keys\\course-vm", RELATIVE),
        ("keys\\course-vm", RELATIVE),
        ("C:\\Users\\%USERNAME%\\course-vm", WINDOWS_CHARACTERS),
        ("C:\\Users\\$env:USERNAME\\course-vm", WINDOWS_CHARACTERS),
        ('C:\\keys\\"course-vm"', WINDOWS_CHARACTERS),
        ("C:\\keys\\course-vm\nMatch exec calc", WINDOWS_CHARACTERS),
        ("C:\\keys:stream", WINDOWS_CHARACTERS),
        (
            "C:\\Users\\Alice Smith\\.ssh\\id_ed25519.pub",
            "it names a public key; the setting is the private key. "
            'Fix: pulumi config set sshKeyPath "C:\\Users\\Alice Smith\\.ssh\\id_ed25519"',
        ),
    ],
)
def test_bad_windows_key_paths(value: str, why: str) -> None:
    assert check_key_path(value, windows=True)[1] == [f"sshKeyPath: got {value!r}, but {why}"]


@pytest.mark.parametrize("value", ["C:\\keys\\course-vm", "/home/me/keys\\course-vm"])
def test_a_backslash_is_no_separator_on_linux_and_macos(value: str) -> None:
    assert check_key_path(value, windows=False)[1] == [
        f"sshKeyPath: got {value!r}, but the path may hold only letters, digits, spaces and ._/~@+-. "
        "Fix: pulumi config set sshKeyPath ~/.ssh/course-vm"
    ]


def test_artifact_mirror_serves_both_files_by_name() -> None:
    s = parse_settings({**GOOD, "artifactMirrorUrl": "https://mirror.example.org/files/"}, PROJECT, ZONE)
    assert s.anaconda.url == "https://mirror.example.org/files/Anaconda3-2022.05-Linux-x86_64.sh"
    assert s.docker_compose.url == "https://mirror.example.org/files/docker-compose-linux-x86_64"
    assert s.anaconda.sha256 == ANACONDA_DEFAULT_SHA256


@pytest.mark.parametrize("key", ["artifactMirrorUrl", "dockerRegistryMirror"])
@pytest.mark.parametrize(
    "url",
    [
        "https://mirror.example.org:5000",
        "http://169.254.2.2:5000",  # the local GCE twin's host
        "http://169.254.169.254",
        "http://127.0.0.1:8000",
        "http://127.9.8.7",
        "http://localhost:5000",
        "http://LOCALHOST",
    ],
)
def test_a_mirror_is_https_unless_on_this_machine_or_link_local(key: str, url: str) -> None:
    s = parse_settings({**GOOD, key: url}, PROJECT, ZONE)
    assert (s.docker_registry_mirror if key == "dockerRegistryMirror" else s.anaconda.url).startswith(url)


@pytest.mark.parametrize(
    ("key", "url", "fix"),
    [
        ("artifactMirrorUrl", "http://10.0.2.2:8000/files", "https://10.0.2.2:8000/files"),
        ("artifactMirrorUrl", "http://mirror.example.org", "https://mirror.example.org"),
        ("dockerRegistryMirror", "http://10.0.2.2:5000", "https://10.0.2.2:5000"),
        ("dockerRegistryMirror", "http://169.254.2.2.evil.example:5000", "https://169.254.2.2.evil.example:5000"),
        ("dockerRegistryMirror", "http://127.0.0.1.nip.io", "https://127.0.0.1.nip.io"),
        ("dockerRegistryMirror", "http://localhost.example.org", "https://localhost.example.org"),
    ],
)
def test_a_plain_http_mirror_elsewhere_is_refused(key: str, url: str, fix: str) -> None:
    why = {
        "artifactMirrorUrl": "anyone on the network path could serve other files (the checksums would refuse "
        "them, and the setup would fail)",
        "dockerRegistryMirror": "anyone on the network path could serve other images, and Docker trusts what a "
        "mirror serves for a pull by tag",
    }[key]
    assert problems({key: url}) == [
        f"{key}: got {url!r}, but plain http:// is allowed only to this machine or a link-local address "
        f"(127.0.0.0/8, localhost, 169.254.0.0/16): {why}. Fix: pulumi config set {key} {fix}"
    ]


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        (
            "artifactMirrorUrl",
            "ftp://mirror/x",
            "a mirror is an https:// URL with no quotes, spaces, query or shell characters",
        ),
        (
            "artifactMirrorUrl",
            "https://mirror/$(id)",
            "a mirror is an https:// URL with no quotes, spaces, query or shell characters",
        ),
        (
            "dockerRegistryMirror",
            "10.0.2.2:5000",
            "a registry mirror is an https:// URL like https://registry.example.org:5000",
        ),
    ],
)
def test_bad_mirrors(key: str, value: str, why: str) -> None:
    example = (
        "https://mirror.example.org/course-vm" if key == "artifactMirrorUrl" else "https://registry.example.org:5000"
    )
    assert problems({key: value}) == [f"{key}: got {value!r}, but {why}. Fix: pulumi config set {key} {example}"]


def test_a_local_vm_needs_no_gcp_settings() -> None:
    s = parse_settings({"dockerRegistryMirror": "http://169.254.2.2:5000/"}, None, None, for_gcp=False)
    assert (s.project, s.zone, s.allowed_ssh_cidrs) == ("", "", ())
    assert s.docker_registry_mirror == "http://169.254.2.2:5000"


# A class: one seat, key and login per student of the roster.


def test_no_roster_is_one_vm_for_username() -> None:
    s = parse_settings({**GOOD, "username": "maria"}, PROJECT, ZONE)
    assert s.students == ()
    [seat] = s.seats
    assert (seat.name, seat.username, seat.ssh_key_path) == ("", "maria", s.ssh_key_path)


def test_a_listed_class_gets_one_seat_and_key_per_student() -> None:
    s = parse_settings({**GOOD, "students": '["alice", "bob-2"]', "sshKeyPath": "/keys/course"}, PROJECT, ZONE)
    assert s.students == ("alice", "bob-2")
    assert [(seat.name, seat.username, seat.ssh_key_path) for seat in s.seats] == [
        ("alice", "alice", Path("/keys/course-alice")),
        ("bob-2", "bob-2", Path("/keys/course-bob-2")),
    ]


def test_one_roster_only() -> None:
    assert problems({"students": ["alice"], "studentsCsv": "roster.csv"}) == [
        "studentsCsv: got 'roster.csv', but students is set too, and a class has one roster. "
        "Fix: keep one: pulumi config rm students, or pulumi config rm studentsCsv"
    ]


# How students reach their VMs: sshAccess firewall (allowedSshCidrs) or iap (Identity-Aware Proxy).


def test_firewall_is_the_default_access() -> None:
    s = parse_settings(GOOD, PROJECT, ZONE)
    assert (s.ssh_access, s.iap) == ("firewall", False)
    assert [seat.email for seat in s.seats] == [""]


def test_iap_needs_no_ssh_ranges_and_fills_the_seats_email() -> None:
    s = parse_settings({"sshAccess": "iap", "studentEmail": "Maria.Lopez+ml@example.edu"}, PROJECT, ZONE)
    assert (s.ssh_access, s.iap, s.allowed_ssh_cidrs) == ("iap", True, ())
    [seat] = s.seats
    assert seat.email == "Maria.Lopez+ml@example.edu"


def test_iap_without_a_student_email_is_the_project_owners_own_vm() -> None:
    # Whoever runs `up` owns the project and may tunnel already: no grant is needed.
    s = parse_settings({"sshAccess": "iap"}, PROJECT, ZONE)
    assert [seat.email for seat in s.seats] == [""]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {"sshAccess": "vpn"},
            "sshAccess: got 'vpn', but it must be firewall (SSH from allowedSshCidrs) or iap (Identity-Aware "
            "Proxy: no external address). Fix: pulumi config set sshAccess iap",
        ),
        (
            {"sshAccess": "iap", "allowedSshCidrs": ["203.0.113.7/32"]},
            "allowedSshCidrs: got ['203.0.113.7/32'], but sshAccess is iap, which admits only Google's IAP range "
            "35.235.240.0/20, so the ranges would not be used. Fix: pulumi config rm allowedSshCidrs",
        ),
        (
            {"sshAccess": "iap", "studentEmail": "maria at example.edu"},
            "studentEmail: got 'maria at example.edu', but it is not an email address like "
            "student@example.edu. Fix: pulumi config set studentEmail student@example.edu",
        ),
        (
            {"sshAccess": "iap", "studentEmail": "m@example.edu\nMatch exec x"},
            "studentEmail: got 'm@example.edu\\nMatch exec x', but it is not an email address like "
            "student@example.edu. Fix: pulumi config set studentEmail student@example.edu",
        ),
        (
            {"studentEmail": "maria@example.edu"},
            "studentEmail: got 'maria@example.edu', but sshAccess is firewall, and only iap grants a Google "
            "account access. Fix: pulumi config set sshAccess iap, or pulumi config rm studentEmail",
        ),
        (
            {"sshAccess": "iap", "students": ["alice"], "studentEmail": "maria@example.edu"},
            "studentEmail: got 'maria@example.edu', but a class's VMs are granted to each student's own "
            "email (the roster's email column). Fix: pulumi config rm studentEmail",
        ),
    ],
)
def test_access_problems(raw: dict[str, object], message: str) -> None:
    found = problems({**raw, "allowedSshCidrs": raw.get("allowedSshCidrs", [])} if "sshAccess" in raw else raw)
    # A class under iap also has students without an email (a `students` list has none): the next test's case.
    assert [line for line in found if not line.startswith("students: ")] == [message]


def test_iap_problems_are_reported_with_the_others() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(
            {"sshAccess": "iap", "allowedSshCidrs": ["203.0.113.7/32"], "studentEmail": "x", "diskSizeGb": 5},
            PROJECT,
            ZONE,
        )
    keys = [line.split(":")[0] for line in raised.value.problems]
    assert keys == ["diskSizeGb", "allowedSshCidrs", "studentEmail"]


def test_a_local_vm_has_no_access_settings() -> None:
    s = parse_settings({}, None, None, for_gcp=False)
    assert s.ssh_access == "firewall"


def test_an_iap_class_takes_each_students_google_account_from_the_roster(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,Alice@Example.edu\nbob,bob@example.edu\n")
    s = parse_settings({"sshAccess": "iap", "studentsCsv": str(roster)}, PROJECT, ZONE)
    assert [(seat.name, seat.email) for seat in s.seats] == [("alice", "alice@example.edu"), ("bob", "bob@example.edu")]


def test_a_student_without_an_email_under_iap_is_reported_with_every_other_problem(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,alice@example.edu\nbob,\n")
    with pytest.raises(SettingsError) as raised:
        parse_settings({"sshAccess": "iap", "studentsCsv": str(roster), "diskSizeGb": 5}, PROJECT, ZONE)
    text = str(raised.value)
    assert "diskSizeGb: got 5" in text
    assert "studentsCsv: got 'bob', but sshAccess iap grants each student's Google account access" in text


def test_a_students_list_under_iap_is_told_to_use_a_roster_with_emails() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({"sshAccess": "iap", "students": ["alice"]}, PROJECT, ZONE)
    assert "students: got 'alice', but sshAccess iap grants each student's Google account" in str(raised.value)
    assert "(a `students` list carries no emails: use studentsCsv)" in str(raised.value)


def test_a_misspelt_list_setting_given_an_empty_list_is_one_problem_not_a_crash() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({**GOOD, "student": []}, PROJECT, ZONE)
    assert raised.value.problems == (
        "student: got [], but course-vm has no such setting (did you mean students?). "
        "Fix: pulumi config rm student, then pulumi config set --path 'students[0]' VALUE",
    )


def test_a_private_key_pasted_into_any_setting_is_never_shown() -> None:
    # `up --set "username=$(cat ~/.ssh/course-vm)"`: the message names the key, never its text.
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    said = problems({"username": key, "forwardPorts": [key]})
    assert len(said) == 2
    assert all("(a private key, not shown)" in line and "b3BlbnNzaC1rZXktdjE" not in line for line in said), said


def test_a_misspelt_list_key_is_fixed_with_the_value_as_that_list() -> None:
    [said] = problems({"forwardport": "8888"})
    assert said.endswith("then pulumi config set forwardPorts '[\"8888\"]'")
    [said] = problems({"forwardport": ["8888"]})
    assert "then pulumi config set --path 'forwardPorts[0]' 8888" in said
