"""The recipe: renders the cloud-init user-data (and its setup script) from the Jinja2 templates."""

from __future__ import annotations

import functools
import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

import jinja2
import yaml

from provisioner.errors import CourseVmError
from provisioner.paths import TEMPLATES
from provisioner.recipe.settings import Artifact, Settings

SETUP_SCRIPT_PATH = "/usr/local/sbin/course-vm-setup"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
AUTO_STOP_PATH = "/usr/local/sbin/course-vm-auto-stop"
AUTO_STOP_TIMER = "course-vm-auto-stop.timer"
MAX_USER_DATA_BYTES = 256 * 1024  # GCE's limit for one metadata value
_TOP_LEVEL_KEYS = {"ssh_pwauth", "disable_root", "users", "write_files", "runcmd"}
_HOME_DISK_KEYS = {"bootcmd", "mounts"}
HOME_DISK_NAME = "course-vm-home"
"""The home disk's device name: GCE shows it as /dev/disk/by-id/google-NAME, QEMU as virtio-NAME."""
GCE_HOME_DISK_DEVICE = f"/dev/disk/by-id/google-{HOME_DISK_NAME}"
HOME_MOUNT_OPTIONS = "defaults,nofail,nosuid,nodev,x-systemd.device-timeout=30s"


class RecipeError(CourseVmError):
    """The rendered user-data is not what the templates promise; nothing is sent anywhere."""


@dataclass(frozen=True, kw_only=True)
class UserDataInputs:
    """What one VM's user-data is made from: its login, the keys that log in, and the recipe's settings."""

    username: str
    ssh_public_key: str
    """The key course-vm logs in with."""
    anaconda: Artifact
    docker_compose: Artifact
    docker_registry_mirror: str = ""
    """The URL Docker pulls images through; "" for none."""
    auto_stop_idle_minutes: int = 0
    """Power off after this many idle minutes; 0: never."""
    max_run_hours: int = 0
    """Power off this many hours after the VM started, whatever it is doing; 0: never."""
    home_disk_device: str = ""
    """Where /home's own disk is attached; "" for none."""
    student_public_key: str = ""
    """The student's own key, authorised beside ssh_public_key; "" for none."""
    baked: bool = False
    """The VM boots from a baked image (`course-vm image bake`): the setup checks the image's manifest,
    then does only the student's part."""


def _yaml_scalar(value: object) -> str:
    # A JSON string is a valid double-quoted YAML scalar: quotes, newlines and `: ` stay inside it.
    return json.dumps(str(value))


@functools.cache
def environment() -> jinja2.Environment:
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 (YAML and shell, not HTML: the yaml and sh filters escape)
        keep_trailing_newline=True,
    )
    environment.filters["sh"] = lambda value: shlex.quote(str(value))
    environment.filters["yaml"] = _yaml_scalar
    return environment


def render_setup_script(inputs: UserDataInputs) -> str:
    """The bash script that performs every step of the course setup on the VM.

    The keys cloud-init installs (INPUTS' ssh_public_key and student_public_key) are in it: the
    script takes them back if the username turns out to be a system account of the image.
    """
    return (
        environment()
        .get_template("setup.sh.j2")
        .render(
            part="student" if inputs.baked else "full",
            manifest=image_manifest(inputs.anaconda, inputs.docker_compose) if inputs.baked else "",
            username=inputs.username,
            ssh_public_key=inputs.ssh_public_key,
            student_public_key=inputs.student_public_key,
            anaconda=inputs.anaconda,
            docker_compose=inputs.docker_compose,
            home_disk_device=inputs.home_disk_device,
        )
    )


def render_system_script(anaconda: Artifact, docker_compose: Artifact, manifest: str) -> str:
    """The bake's script: the setup's system part (packages, Docker, docker-compose, Anaconda in the image's
    own place), a check of it as a throwaway user, and MANIFEST written where a VM from the image reads it."""
    return (
        environment()
        .get_template("setup.sh.j2")
        .render(
            part="system",
            manifest=manifest,
            student_public_key="",
            anaconda=anaconda,
            docker_compose=docker_compose,
            home_disk_device="",
        )
    )


IMAGE_FORMAT = "1"
"""The manifest's own version: bump it when what a baked image holds, or where, changes."""


def system_recipe_hash() -> str:
    """A short hash of the bake's steps alone, whatever the releases: a new value means an image baked
    before it is out of date."""
    blank = Artifact("", "", "", "")
    return hashlib.sha256(render_system_script(blank, blank, "").encode()).hexdigest()[:12]


def image_manifest(anaconda: Artifact, docker_compose: Artifact) -> str:
    """What a baked image holds, one `KIND VALUE...` line each: the manifest format, the bake's recipe,
    and each release with its checksum. A VM from the image requires each line of it."""
    return "\n".join(
        [
            f"course-vm-image {IMAGE_FORMAT}",
            f"recipe {system_recipe_hash()}",
            f"anaconda {anaconda.version} {anaconda.sha256.lower()}",
            f"docker-compose {docker_compose.version} {docker_compose.sha256.lower()}",
        ]
    )


def render_auto_stop_script(idle_minutes: int, max_run_hours: int) -> str:
    """The script a systemd timer runs every minute ("" if both rules are off).

    It powers the VM off after IDLE_MINUTES without use, and MAX_RUN_HOURS after it started (0: that rule is off).
    """
    if idle_minutes <= 0 and max_run_hours <= 0:
        return ""
    template = environment().get_template("auto-stop.sh.j2")
    return template.render(idle_minutes=max(idle_minutes, 0), max_run_hours=max(max_run_hours, 0))


def docker_daemon_json(registry_mirror: str) -> str:
    """/etc/docker/daemon.json for a registry mirror ("" for none: Docker's defaults)."""
    if not registry_mirror:
        return ""
    config: dict[str, list[str]] = {"registry-mirrors": [registry_mirror]}
    if registry_mirror.startswith("http://"):
        # Docker talks plain http only to registries it is told are insecure.
        config["insecure-registries"] = [registry_mirror.removeprefix("http://").split("/", 1)[0]]
    return json.dumps(config, indent=2) + "\n"


def render_user_data(inputs: UserDataInputs) -> str:
    """The `#cloud-config` user-data document for one course VM (/home on its home_disk_device if given).

    INPUTS' ssh_public_key is the key course-vm logs in with; its student_public_key, the student's
    own key (roster column sshPublicKey), is authorised beside it. Without one, the document is what
    it was before students could bring keys, so no existing VM is replaced for it.

    The result is parsed back and compared with what went in, so a value that would change the
    document's structure is caught here. Raises RecipeError if so, or if the document is too big.
    """
    text = environment().get_template("user-data.yaml.j2").render(**_filled_in(inputs))
    _check(text, inputs)
    return text


def _filled_in(inputs: UserDataInputs) -> dict[str, str]:
    """What the user-data template fills in: exactly what _check compares the parsed document with."""
    return {
        "username": inputs.username,
        "ssh_public_key": inputs.ssh_public_key,
        "student_public_key": inputs.student_public_key,
        "setup_script": render_setup_script(inputs),
        "docker_daemon_json": docker_daemon_json(inputs.docker_registry_mirror),
        "auto_stop_script": render_auto_stop_script(inputs.auto_stop_idle_minutes, inputs.max_run_hours),
        "home_disk_device": inputs.home_disk_device,
    }


def user_data_for(
    settings: Settings,
    ssh_public_key: str,
    username: str | None = None,
    home_disk_device: str | None = None,
    *,
    student_public_key: str = "",
    baked: bool | None = None,
) -> str:
    """The user-data for SETTINGS: what every front end (Pulumi, `render`, the local VM) sends.

    USERNAME is a class's student; by default, the `username` setting. HOME_DISK_DEVICE is where
    the VM finds its home disk: by default GCE's, if homeDiskSizeGb asks for one.
    STUDENT_PUBLIC_KEY is the student's own key (a seat's `ssh_public_key`), authorised beside SSH_PUBLIC_KEY.
    BAKED: the VM boots from a baked image; by default, as the bakedImage setting says.
    """
    if home_disk_device is None:
        home_disk_device = GCE_HOME_DISK_DEVICE if settings.home_disk_size_gb else ""
    return render_user_data(
        UserDataInputs(
            username=username or settings.username,
            ssh_public_key=ssh_public_key,
            anaconda=settings.anaconda,
            docker_compose=settings.docker_compose,
            docker_registry_mirror=settings.docker_registry_mirror,
            auto_stop_idle_minutes=settings.auto_stop_idle_minutes,
            max_run_hours=settings.max_run_hours,
            home_disk_device=home_disk_device,
            student_public_key=student_public_key,
            baked=settings.baked_image if baked is None else baked,
        )
    )


def _check(text: str, inputs: UserDataInputs) -> None:
    size = len(text.encode())
    if size > MAX_USER_DATA_BYTES:
        raise RecipeError(f"user-data is {size} bytes; GCE accepts at most {MAX_USER_DATA_BYTES}")
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"rendered user-data is not valid YAML: {error}") from None
    problems = []
    if not text.startswith("#cloud-config\n"):
        problems.append("it does not start with #cloud-config")
    expected_keys = _TOP_LEVEL_KEYS | (_HOME_DISK_KEYS if inputs.home_disk_device else set())
    if not isinstance(document, dict) or set(document) != expected_keys:
        problems.append(f"its top-level keys are {sorted(document) if isinstance(document, dict) else document!r}")
    else:
        problems += _content_problems(document, inputs)
    if problems:
        raise RecipeError(
            "rendered user-data changed shape (a value must contain characters the "
            "templates cannot carry): " + "; ".join(problems)
        )


def _content_problems(document: dict[str, Any], inputs: UserDataInputs) -> list[str]:
    """How the parsed DOCUMENT, of the expected top-level keys, differs from what INPUTS filled in."""
    filled_in = _filled_in(inputs)
    problems = []
    users = document["users"]
    files = {f.get("path"): f.get("content") for f in document["write_files"]}
    if len(users) != 1 or users[0].get("name") != inputs.username:
        problems.append("its user is not the configured username")
    elif users[0].get("ssh_authorized_keys") != [k for k in (inputs.student_public_key, inputs.ssh_public_key) if k]:
        problems.append("its authorized keys are not the configured public keys")
    if files.get(SETUP_SCRIPT_PATH) != filled_in["setup_script"]:
        problems.append("its setup script differs from the rendered script")
    if files.get(DOCKER_DAEMON_JSON, "") != filled_in["docker_daemon_json"]:
        problems.append("its Docker daemon configuration differs from the settings")
    if files.get(AUTO_STOP_PATH, "") != filled_in["auto_stop_script"]:
        problems.append("its auto-stop script differs from the rendered script")
    device = inputs.home_disk_device
    if device and (
        document["bootcmd"][0][-1] != device
        or document["mounts"] != [[device, "/home", "ext4", HOME_MOUNT_OPTIONS, "0", "2"]]
    ):
        problems.append("its home disk is not the configured device")
    armed = ["systemctl", "enable", "--now", AUTO_STOP_TIMER] in document["runcmd"]
    if armed != bool(filled_in["auto_stop_script"]):
        problems.append("its auto-stop timer is not armed as autoStopIdleMinutes and maxRunHours say")
    return problems


def recipe_hash(user_data: str) -> str:
    """A short hash of the user-data: it labels the VM, and a new value means a new VM."""
    return hashlib.sha256(user_data.encode()).hexdigest()[:12]
