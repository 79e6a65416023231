"""The bake's recipe: a schema-valid document that makes no user, clean bash, and the manifest both sides share."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from provisioner.recipe.bake import BAKE_FINISH_PATH, BAKE_SCRIPT_PATH, parse_verdict, render_bake_user_data
from provisioner.recipe.settings import Settings, parse_settings
from provisioner.recipe.user_data import image_manifest, system_recipe_hash, user_data_for
from tests.conftest import require_tool, validate_cloud_config

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"


def settings(**raw: str) -> Settings:
    return parse_settings({"allowedSshCidrs": ["203.0.113.7/32"], **raw}, "course-project-1", "europe-west1-b")


def files(document: str) -> dict[str, str]:
    return {f["path"]: f["content"] for f in yaml.safe_load(document)["write_files"]}


@pytest.mark.integration
@pytest.mark.parametrize("mirror", ["", "http://169.254.2.2:5000"])
def test_the_bake_is_valid_cloud_config_that_makes_no_user_and_no_login(mirror: str, tmp_path: Path) -> None:
    text = render_bake_user_data(settings(dockerRegistryMirror=mirror) if mirror else settings())
    validate_cloud_config(text, tmp_path)
    document = yaml.safe_load(text)
    assert document["users"] == {} and document["ssh_pwauth"] is False and document["disable_root"] is True
    assert ("/etc/docker/daemon.json" in files(text)) == bool(mirror)
    # The finisher first, so that a failed bake still reports and powers off.
    assert document["runcmd"][0][:2] == ["systemd-run", "--unit=course-vm-bake-finish"]
    assert document["runcmd"][1] == [BAKE_SCRIPT_PATH]


@pytest.mark.integration
@pytest.mark.parametrize("which", ["bake", "finish", "student"])
def test_the_bake_scripts_and_a_baked_vms_setup_are_clean_bash(which: str, tmp_path: Path) -> None:
    if which == "student":
        text = files(user_data_for(settings(), KEY, baked=True))["/usr/local/sbin/course-vm-setup"]
    else:
        text = files(render_bake_user_data(settings()))[BAKE_SCRIPT_PATH if which == "bake" else BAKE_FINISH_PATH]
    script = tmp_path / which
    script.write_text(text)
    subprocess.run([require_tool("bash"), "-n", str(script)], check=True)
    result = subprocess.run(
        [require_tool("shellcheck"), "--severity=warning", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_the_bake_writes_the_manifest_a_baked_vm_requires() -> None:
    s = settings(dockerComposeVersion="v2.27.0", dockerComposeSha256="D" * 64)
    manifest = image_manifest(s.anaconda, s.docker_compose)
    assert manifest.splitlines() == [
        "course-vm-image 1",
        f"recipe {system_recipe_hash()}",
        f"anaconda 2022.05 {s.anaconda.sha256}",
        f"docker-compose v2.27.0 {'d' * 64}",
    ]
    bake = files(render_bake_user_data(s))[BAKE_SCRIPT_PATH]
    student = files(user_data_for(s, KEY, baked=True))["/usr/local/sbin/course-vm-setup"]
    quoted = "MANIFEST='" + manifest + "'\n"
    assert quoted in bake and quoted in student


def test_the_recipe_hash_follows_the_steps_not_the_releases() -> None:
    # Releases have their own manifest lines; the hash is what the steps do.
    assert len(system_recipe_hash()) == 12
    a, b = settings(), settings(anacondaVersion="2024.02-1", anacondaSha256="c" * 64)
    assert (
        image_manifest(a.anaconda, a.docker_compose).splitlines()[1]
        == image_manifest(b.anaconda, b.docker_compose).splitlines()[1]
    )


def test_a_baked_vms_user_data_differs_from_a_plain_one_only_in_its_setup() -> None:
    plain, baked = (
        yaml.safe_load(user_data_for(settings(), KEY)),
        yaml.safe_load(user_data_for(settings(), KEY, baked=True)),
    )
    assert {k: v for k, v in plain.items() if k != "write_files"} == {
        k: v for k, v in baked.items() if k != "write_files"
    }
    assert [f["path"] for f in plain["write_files"]] == [f["path"] for f in baked["write_files"]]
    assert user_data_for(settings(bakedImage="true"), KEY) == user_data_for(settings(), KEY, baked=True)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("ok\ncourse-vm-image 1\nrecipe abc\n", (True, "course-vm-image 1\nrecipe abc")),
        ("failed\n[course-vm] FAILED packages exit=100\n", (False, "[course-vm] FAILED packages exit=100")),
        ("", (False, "")),
    ],
)
def test_the_verdict_is_read_as_the_vm_wrote_it(text: str, verdict: tuple[bool, str]) -> None:
    assert parse_verdict(text) == verdict
