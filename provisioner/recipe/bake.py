"""The bake's recipe: the user-data of the VM that becomes a course image, and what the image holds."""

from __future__ import annotations

import yaml

from provisioner.recipe.settings import Settings
from provisioner.recipe.user_data import (
    MAX_USER_DATA_BYTES,
    RecipeError,
    docker_daemon_json,
    environment,
    image_manifest,
    render_system_script,
)

BAKE_SCRIPT_PATH = "/usr/local/sbin/course-vm-bake"
BAKE_FINISH_PATH = "/usr/local/sbin/course-vm-bake-finish"
VERDICT_NAMESPACE = "course-vm"
VERDICT_KEY = "bake"
"""The guest attribute `course-vm/bake` the bake's VM publishes its verdict in."""
GRACE_SECONDS = 20
"""How long the verdict is readable on the running VM before it powers itself off."""


def render_bake_user_data(settings: Settings) -> str:
    """The `#cloud-config` of the bake's VM for SETTINGS: the system part of the setup with the releases
    they ask for, then the verdict, the cleaning and the power-off. It makes no user: nobody logs in.

    Parsed back and compared with what went in; raises RecipeError if its shape changed or it is too big.
    """
    filled_in = {
        "system_script": render_system_script(
            settings.anaconda, settings.docker_compose, image_manifest(settings.anaconda, settings.docker_compose)
        ),
        "finish_script": environment().get_template("bake-finish.sh.j2").render(grace_seconds=GRACE_SECONDS),
        "docker_daemon_json": docker_daemon_json(settings.docker_registry_mirror),
    }
    text = environment().get_template("bake-user-data.yaml.j2").render(**filled_in)
    if len(text.encode()) > MAX_USER_DATA_BYTES:
        raise RecipeError(
            f"the bake's user-data is {len(text.encode())} bytes; GCE accepts at most {MAX_USER_DATA_BYTES}"
        )
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise RecipeError(f"the bake's rendered user-data is not valid YAML: {error}") from None
    if not text.startswith("#cloud-config\n") or not isinstance(document, dict):
        raise RecipeError("the bake's rendered user-data is not a #cloud-config mapping")
    files = {f.get("path"): f.get("content") for f in document.get("write_files", []) if isinstance(f, dict)}
    if (
        set(document) != {"ssh_pwauth", "disable_root", "users", "write_files", "runcmd"}
        or document["users"] != {}
        or files.get(BAKE_SCRIPT_PATH) != filled_in["system_script"]
        or files.get(BAKE_FINISH_PATH) != filled_in["finish_script"]
        or files.get("/etc/docker/daemon.json", "") != filled_in["docker_daemon_json"]
    ):
        raise RecipeError(
            "the bake's rendered user-data changed shape (a value holds characters the templates cannot carry)"
        )
    return text


def parse_verdict(text: str) -> tuple[bool, str]:
    """The bake's verdict as its VM published it: whether it passed, and the image's manifest (passed)
    or the failed step's lines (failed)."""
    first, _, rest = text.partition("\n")
    return first.strip() == "ok", rest.strip()


def stale_lines(held: str, wanted: str) -> list[str]:
    """What WANTED (the settings' manifest) asks for that the image, holding HELD, lacks: one phrase each."""
    found = {line.split(" ", 1)[0]: line for line in held.splitlines()}
    return [
        f"the image holds '{found.get(line.split(' ', 1)[0], 'no ' + line.split(' ', 1)[0])}' where the settings "
        f"ask for '{line}'"
        for line in wanted.splitlines()
        if line not in held.splitlines()
    ]
