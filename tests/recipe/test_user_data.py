"""Rendering the recipe: schema-valid documents, and no value can change their structure."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from provisioner.recipe.settings import Artifact, parse_settings
from provisioner.recipe.user_data import (
    AUTO_STOP_PATH,
    AUTO_STOP_TIMER,
    GCE_HOME_DISK_DEVICE,
    HOME_MOUNT_OPTIONS,
    SETUP_SCRIPT_PATH,
    RecipeError,
    UserDataInputs,
    recipe_hash,
    render_setup_script,
    render_user_data,
    user_data_for,
)
from tests.conftest import require_tool, validate_cloud_config

DEFAULTS = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"]}, "course-project-1", "europe-west1-b")
RSA_KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABgQC7" + "x" * 40
SETTING_LINES = (
    "COURSE_USER",
    "SSH_PUBLIC_KEY",
    "ANACONDA_VERSION",
    "ANACONDA_URL",
    "ANACONDA_SHA256",
    "COMPOSE_VERSION",
    "COMPOSE_URL",
    "COMPOSE_SHA256",
    "HOME_DISK_DEVICE",
)


def render(
    username: str = "student",
    public_key: str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u",
    anaconda: Artifact = DEFAULTS.anaconda,
    compose: Artifact = DEFAULTS.docker_compose,
    idle_minutes: int = 0,
    max_run_hours: int = 0,
    home_disk: str = "",
    student_key: str = "",
) -> str:
    return render_user_data(
        UserDataInputs(
            username=username,
            ssh_public_key=public_key,
            student_public_key=student_key,
            anaconda=anaconda,
            docker_compose=compose,
            auto_stop_idle_minutes=idle_minutes,
            max_run_hours=max_run_hours,
            home_disk_device=home_disk,
        )
    )


def setup_script(document: str) -> str:
    files = {f["path"]: f["content"] for f in yaml.safe_load(document)["write_files"]}
    return str(files[SETUP_SCRIPT_PATH])


def shell_values(script: str) -> dict[str, str]:
    """Let bash parse the whole script, then print the settings it holds instead of running `main`."""
    body, last = script.rstrip("\n").rsplit("\n", 1)
    assert last == 'main "$@"'
    printer = "".join(f'printf "%s\\0" "${name}";' for name in SETTING_LINES)
    out = subprocess.run(
        [require_tool("bash"), "-c", body + "\n" + printer], capture_output=True, text=True, check=True
    ).stdout
    return dict(zip(SETTING_LINES, out.split("\0")[:-1], strict=True))


VARIANTS = {
    "defaults": {},
    "other user and rsa key": {"username": "alice_2", "public_key": RSA_KEY},
    "new releases": {
        "anaconda": Artifact(
            "the Anaconda installer",
            "2024.02-1",
            "https://repo.anaconda.com/archive/Anaconda3-2024.02-1-Linux-x86_64.sh",
            "c" * 64,
        ),
        "compose": Artifact("docker-compose", "v2.27.0", "https://mirror.example.org/compose/v2.27.0/dc", "d" * 64),
    },
    "idle stop": {"idle_minutes": 45},
    "home disk": {"home_disk": GCE_HOME_DISK_DEVICE},
    "the student's own key": {"student_key": RSA_KEY},
}


@pytest.mark.integration
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_is_valid_cloud_config(variant: str, tmp_path: Path) -> None:
    validate_cloud_config(render(**VARIANTS[variant]), tmp_path)  # type: ignore[arg-type]


def test_document_holds_the_hardening_the_user_and_the_setup() -> None:
    document = yaml.safe_load(render())
    assert document["ssh_pwauth"] is False
    assert document["disable_root"] is True
    [user] = document["users"]
    assert user["name"] == "student"
    assert user["lock_passwd"] is True
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u"]
    files = {f["path"]: f for f in document["write_files"]}
    sshd = files["/etc/ssh/sshd_config.d/10-course-vm.conf"]["content"]
    assert "PasswordAuthentication no\n" in sshd
    assert "PermitRootLogin no\n" in sshd
    # A laptop that went to sleep leaves no session behind for more than 5 minutes.
    assert "ClientAliveInterval 60\nClientAliveCountMax 5\n" in sshd
    assert files[SETUP_SCRIPT_PATH]["permissions"] == "0755"
    assert document["runcmd"] == [[SETUP_SCRIPT_PATH]]


def test_the_defaults_arm_the_auto_stop_timer_before_the_setup() -> None:
    document = yaml.safe_load(user_data_for(DEFAULTS, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u"))
    assert DEFAULTS.auto_stop_idle_minutes == 60 and DEFAULTS.max_run_hours == 12
    assert document["runcmd"] == [["systemctl", "enable", "--now", AUTO_STOP_TIMER], [SETUP_SCRIPT_PATH]]
    files = {f["path"]: f for f in document["write_files"]}
    assert "IDLE_MINUTES=60\nMAX_RUN_HOURS=12\n" in files[AUTO_STOP_PATH]["content"]
    assert files[AUTO_STOP_PATH]["permissions"] == "0755"
    timer = files[f"/etc/systemd/system/{AUTO_STOP_TIMER}"]["content"]
    assert "OnUnitActiveSec=1min\n" in timer and "WantedBy=timers.target\n" in timer
    service = files["/etc/systemd/system/course-vm-auto-stop.service"]["content"]
    assert f"ExecStart={AUTO_STOP_PATH}\n" in service


def test_zero_idle_minutes_and_no_running_cap_install_no_timer() -> None:
    document = yaml.safe_load(render(idle_minutes=0, max_run_hours=0))
    assert document["runcmd"] == [[SETUP_SCRIPT_PATH]]
    assert not any("auto-stop" in f["path"] for f in document["write_files"])


@pytest.mark.parametrize(("idle_minutes", "max_run_hours"), [(0, 12), (60, 0)])
def test_either_rule_alone_installs_the_timer(idle_minutes: int, max_run_hours: int) -> None:
    document = yaml.safe_load(render(idle_minutes=idle_minutes, max_run_hours=max_run_hours))
    assert document["runcmd"][0] == ["systemctl", "enable", "--now", AUTO_STOP_TIMER]
    files = {f["path"]: f["content"] for f in document["write_files"]}
    assert f"IDLE_MINUTES={idle_minutes}\nMAX_RUN_HOURS={max_run_hours}\n" in files[AUTO_STOP_PATH]


def test_a_home_disk_is_mounted_on_home_before_the_user_exists() -> None:
    document = yaml.safe_load(render(home_disk=GCE_HOME_DISK_DEVICE))
    assert document["mounts"] == [[GCE_HOME_DISK_DEVICE, "/home", "ext4", HOME_MOUNT_OPTIONS, "0", "2"]]
    [format_home] = document["bootcmd"]
    assert format_home[:2] == ["sh", "-c"] and format_home[-1] == GCE_HOME_DISK_DEVICE
    assert shell_values(setup_script(render(home_disk=GCE_HOME_DISK_DEVICE)))["HOME_DISK_DEVICE"] == (
        GCE_HOME_DISK_DEVICE
    )
    assert "bootcmd" not in yaml.safe_load(render()) and "mounts" not in yaml.safe_load(render())


def test_the_home_disk_is_mounted_nosuid_and_nodev() -> None:
    # The student's own disk: no set-uid program or device node on it can act on the rest of the VM.
    [[_, _, _, options, _, _]] = yaml.safe_load(render(home_disk=GCE_HOME_DISK_DEVICE))["mounts"]
    assert {"nosuid", "nodev", "nofail"} <= set(options.split(","))
    assert "exec" not in options.split(",") and "noexec" not in options.split(","), "conda runs from /home"


@dataclass
class HomeDisk:
    """A disk image file standing in for the home disk, and the rendered bootcmd run against it."""

    path: Path
    command: list[str]

    def boot(self) -> subprocess.CompletedProcess[str]:
        """One boot: the bootcmd with the image file in place of the device path."""
        return subprocess.run([*self.command, str(self.path)], capture_output=True, text=True, timeout=60, check=False)

    def probe(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [require_tool("blkid"), "-p", str(self.path)], capture_output=True, text=True, check=False
        )

    def digest(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()

    def zero(self, offset: int, length: int) -> None:
        with self.path.open("r+b") as disk:
            disk.seek(offset)
            disk.write(bytes(length))

    def read_back(self, name: str) -> str:
        """NAME's content read through the first backup superblock (4 KiB blocks: block 32768)."""
        return subprocess.run(
            [require_tool("debugfs"), "-c", "-s", "32768", "-b", "4096", "-R", f"cat /{name}", str(self.path)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout


@pytest.fixture
def home_disk(tmp_path: Path) -> HomeDisk:
    # 600 MiB, sparse: big enough for 4 KiB blocks and a backup superblock at 128 MiB, as on a real disk.
    require_tool("mkfs.ext4")
    [format_home] = yaml.safe_load(render(home_disk=GCE_HOME_DISK_DEVICE))["bootcmd"]
    path = tmp_path / "home.img"
    with path.open("wb") as disk:
        disk.truncate(600 << 20)
    return HomeDisk(path, format_home[:-1])


def used(disk: HomeDisk, tmp_path: Path) -> None:
    """Make DISK a home disk holding the student's work (ext4, as the bootcmd would have made it)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.txt").write_text("three years of work\n")
    subprocess.run([require_tool("mkfs.ext4"), "-q", "-L", "course-home", "-d", str(work), str(disk.path)], check=True)


@pytest.mark.integration
def test_a_new_all_zero_disk_is_formatted_once(home_disk: HomeDisk) -> None:
    assert home_disk.boot().returncode == 0
    first = home_disk.probe().stdout
    assert 'LABEL="course-home"' in first and 'TYPE="ext4"' in first
    assert home_disk.boot().returncode == 0
    assert home_disk.probe().stdout == first, "the second boot must keep the filesystem (same UUID)"


@pytest.mark.integration
def test_a_disk_holding_a_filesystem_is_left_alone(home_disk: HomeDisk, tmp_path: Path) -> None:
    used(home_disk, tmp_path)
    before = home_disk.digest()
    assert home_disk.boot().returncode == 0
    assert home_disk.digest() == before


@pytest.mark.integration
@pytest.mark.parametrize(
    ("offset", "length"),
    [(1024, 1024), (0, 1 << 20)],
    ids=["primary superblock zeroed", "first MiB zeroed (the backup superblock at 128 MiB is left)"],
)
def test_a_disk_whose_superblock_is_gone_is_never_formatted(
    home_disk: HomeDisk, tmp_path: Path, offset: int, length: int
) -> None:
    # blkid -p finds no signature on such a disk (exit 2, as on a new one), yet the work is still there.
    used(home_disk, tmp_path)
    home_disk.zero(offset, length)
    assert home_disk.probe().returncode == 2
    before = home_disk.digest()
    result = home_disk.boot()
    assert home_disk.digest() == before, "the bootcmd wrote to a disk that holds the student's work"
    assert b"three years of work\n" in home_disk.path.read_bytes()
    if length < 4096:  # the group descriptors and inode tables are intact: e2fsck -b 32768 would repair it
        assert home_disk.read_back("thesis.txt") == "three years of work\n"
    # Not formatting it must not be silent: cloud-init reports the bootcmd's failure, and says why.
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"[course-vm] home disk {home_disk.path} holds data but no filesystem blkid recognises (blkid -p "
        f"exit 2): not formatting it, so /home stays on the boot disk. Fix: repair it (e.g. e2fsck -b 32768 "
        f"{home_disk.path}) or attach a new disk"
    )


@pytest.mark.integration
@pytest.mark.parametrize("mib", [8, 128, 384, 599], ids=["8 MiB", "128 MiB", "384 MiB", "the last MiB (backup GPT)"])
def test_data_in_any_sampled_mib_alone_keeps_the_disk_from_being_formatted(home_disk: HomeDisk, mib: int) -> None:
    # Each sample is where a damaged disk may keep its only proof of data: a backup superblock, the
    # backup GPT header. Data there alone (blkid finds no signature) must be enough to leave the disk be.
    with home_disk.path.open("r+b") as disk:
        disk.seek(mib << 20)
        disk.write(b"the student's work" * 100)
    before = home_disk.digest()
    result = home_disk.boot()
    assert home_disk.digest() == before, f"data at {mib} MiB alone did not keep the disk from being formatted"
    assert result.returncode != 0 and "holds data but no filesystem blkid recognises" in result.stderr


@pytest.mark.integration
def test_a_partitioned_disk_is_left_alone(home_disk: HomeDisk) -> None:
    table = bytearray(512)
    table[446 + 4] = 0x83  # one Linux partition entry, and the MBR signature
    table[446 + 8 : 446 + 16] = (2048).to_bytes(4, "little") + (4096).to_bytes(4, "little")
    table[510:512] = b"\x55\xaa"
    with home_disk.path.open("r+b") as disk:
        disk.write(bytes(table))
    before = home_disk.digest()
    assert home_disk.boot().returncode == 0
    assert home_disk.digest() == before
    assert "PTTYPE" in home_disk.probe().stdout


@pytest.mark.integration
def test_a_missing_home_disk_is_reported(tmp_path: Path) -> None:
    [format_home] = yaml.safe_load(render(home_disk=GCE_HOME_DISK_DEVICE))["bootcmd"]
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "sleep").write_text("#!/bin/sh\n")  # the 30 s wait for the device, made instant
    (stubs / "sleep").chmod(0o755)
    missing = tmp_path / "no-such-disk"
    result = subprocess.run(
        [*format_home[:-1], str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": f"{stubs}:{os.environ['PATH']}"},
    )
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"[course-vm] home disk {missing} is not attached: /home stays on the boot disk. "
        "Fix: attach the disk and reboot"
    )
    assert not missing.exists()


def test_setup_script_carries_each_setting_exactly() -> None:
    values = shell_values(setup_script(render(**VARIANTS["new releases"])))  # type: ignore[arg-type]
    assert values == {
        "COURSE_USER": "student",
        "SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u",
        "ANACONDA_VERSION": "2024.02-1",
        "ANACONDA_URL": "https://repo.anaconda.com/archive/Anaconda3-2024.02-1-Linux-x86_64.sh",
        "ANACONDA_SHA256": "c" * 64,
        "COMPOSE_VERSION": "v2.27.0",
        "COMPOSE_URL": "https://mirror.example.org/compose/v2.27.0/dc",
        "COMPOSE_SHA256": "d" * 64,
        "HOME_DISK_DEVICE": "",
    }


HOSTILE = [
    "x'; reboot; echo '",
    "$(reboot)",
    "`reboot`",
    '"\n- evil: true\nruncmd: [[reboot]]\n',
    "a: b\n  c: d",
    "\n      injected line at the script's indentation\n",
    "|\n  literal",
    "{flow: map} [list] &anchor *alias !!python/object:os.system # comment",
    "back\\slash and \\n and tab\t",
    "--- \n...\n",
]


@pytest.mark.integration
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_value_cannot_change_yaml_or_shell_structure(value: str, tmp_path: Path) -> None:
    # Settings validation refuses all of these; the renderer must hold even without it.
    hostile = Artifact("x", value, value, value)
    document_text = render(username=value, public_key=value, anaconda=hostile, compose=hostile, home_disk=value)
    document = yaml.safe_load(document_text)
    assert set(document) == {"ssh_pwauth", "disable_root", "users", "write_files", "runcmd", "bootcmd", "mounts"}
    assert document["runcmd"] == [[SETUP_SCRIPT_PATH]]
    assert document["bootcmd"][0][-1] == value and document["mounts"][0][0] == value
    assert [f["path"] for f in document["write_files"]] == [
        "/etc/ssh/sshd_config.d/10-course-vm.conf",
        SETUP_SCRIPT_PATH,
    ]
    [user] = document["users"]
    assert user["name"] == value
    assert user["ssh_authorized_keys"] == [value]
    script = setup_script(document_text)
    assert script == render_setup_script(
        UserDataInputs(
            username=value, anaconda=hostile, docker_compose=hostile, home_disk_device=value, ssh_public_key=value
        )
    )
    assert set(shell_values(script).values()) == {value}
    validate_cloud_config(document_text, tmp_path)


@pytest.mark.parametrize("value", ["nul\x00byte", "carriage\rreturn", "next\x85line", "line\u2028separator"])
def test_value_yaml_cannot_carry_is_refused_not_altered(value: str) -> None:
    with pytest.raises(RecipeError):
        render(anaconda=Artifact("x", "1", value, "e" * 64))


def test_oversized_user_data_is_refused() -> None:
    with pytest.raises(RecipeError, match="GCE accepts at most 262144"):
        render(public_key="ssh-ed25519 " + "A" * 300_000)


@pytest.mark.integration
@pytest.mark.parametrize("path", [SETUP_SCRIPT_PATH, AUTO_STOP_PATH])
def test_scripts_are_clean_bash(path: str, tmp_path: Path) -> None:
    files = {f["path"]: f["content"] for f in yaml.safe_load(render(idle_minutes=60))["write_files"]}
    script = tmp_path / Path(path).name
    script.write_text(files[path])
    subprocess.run([require_tool("bash"), "-n", str(script)], check=True)
    result = subprocess.run(
        [require_tool("shellcheck"), "--severity=warning", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


@pytest.mark.integration
def test_the_home_disk_bootcmd_is_clean_sh(tmp_path: Path) -> None:
    [format_home] = yaml.safe_load(render(home_disk=GCE_HOME_DISK_DEVICE))["bootcmd"]
    script = tmp_path / "format-home"
    script.write_text(format_home[2])
    result = subprocess.run(
        [require_tool("shellcheck"), "--shell=sh", "--severity=warning", str(script)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout


def test_recipe_hash_follows_the_document() -> None:
    assert recipe_hash(render()) == recipe_hash(render())
    assert recipe_hash(render()) != recipe_hash(render(username="alice"))
    assert len(recipe_hash(render())) == 12


@pytest.mark.integration
@pytest.mark.parametrize(
    ("mirror", "expected"),
    [
        (
            "http://10.0.2.2:5000",
            {"registry-mirrors": ["http://10.0.2.2:5000"], "insecure-registries": ["10.0.2.2:5000"]},
        ),
        ("https://mirror.example.org", {"registry-mirrors": ["https://mirror.example.org"]}),
    ],
)
def test_registry_mirror_configures_docker_before_it_is_installed(
    mirror: str, expected: dict[str, list[str]], tmp_path: Path
) -> None:
    text = render_user_data(
        UserDataInputs(
            username="student",
            ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u",
            anaconda=DEFAULTS.anaconda,
            docker_compose=DEFAULTS.docker_compose,
            docker_registry_mirror=mirror,
        )
    )
    validate_cloud_config(text, tmp_path)
    files = {f["path"]: f for f in yaml.safe_load(text)["write_files"]}
    assert json.loads(files["/etc/docker/daemon.json"]["content"]) == expected
    assert "/etc/docker/daemon.json" not in render()


# A student who brought their own key (roster column sshPublicKey): it logs in, and so does course-vm's.

STUDENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKeyOfTheStudent"


def test_a_students_own_key_is_authorised_beside_course_vms() -> None:
    document = yaml.safe_load(render(student_key=STUDENT_KEY))
    [user] = document["users"]
    assert user["ssh_authorized_keys"] == [STUDENT_KEY, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u"]
    values = shell_values(setup_script(render(student_key=STUDENT_KEY)))
    assert values["SSH_PUBLIC_KEY"] == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u"
    assert "STUDENT_PUBLIC_KEY='ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKeyOfTheStudent'\n" in setup_script(
        render(student_key=STUDENT_KEY)
    )


def test_without_a_students_own_key_the_document_names_none() -> None:
    assert "STUDENT_PUBLIC_KEY" not in render()
    assert render() == render(student_key="")


@pytest.mark.integration
@pytest.mark.parametrize(
    "hostile",
    [
        'ssh-ed25519 AAAA x": y\n- z',
        "ssh-ed25519 AAAA '; rm -rf / #",
        "ssh-ed25519 AAAA\nusers: []\n",
        "ssh-ed25519 AAAA {{ username }} $(id) `id`",
    ],
)
def test_a_hostile_students_key_changes_nothing_of_the_documents_shape(hostile: str, tmp_path: Path) -> None:
    # The roster keeps only `TYPE BASE64`; whatever reaches the template is still one quoted value.
    text = render(student_key=hostile)
    validate_cloud_config(text, tmp_path)
    [user] = yaml.safe_load(text)["users"]
    assert user["ssh_authorized_keys"] == [hostile, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3u"]
    script = setup_script(text)
    body = script.rstrip("\n").rsplit("\n", 1)[0]
    out = subprocess.run(
        [require_tool("bash"), "-c", body + '\nprintf "%s" "$STUDENT_PUBLIC_KEY"'], capture_output=True, text=True
    )
    assert out.stdout == hostile
