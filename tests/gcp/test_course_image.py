"""The bake stack's program (CourseImage) and a class booting from its image, under the Pulumi SDK's mocks."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest
import yaml

from provisioner.gcp.course_image import image_description, image_family, manifest_of
from provisioner.recipe.bake import BAKE_SCRIPT_PATH, stale_lines
from provisioner.recipe.settings import parse_settings
from provisioner.recipe.user_data import image_manifest
from tests.support.pulumi_harness import DISK_LINK_PREFIX, IMAGE_LINK_PREFIX, run_program

CONFIG = {
    "gcp:project": "course-project-1",
    "gcp:zone": "europe-west1-b",
    "course-vm:allowedSshCidrs": '["203.0.113.7/32"]',
}
SETTINGS = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"]}, "course-project-1", "europe-west1-b")
MANIFEST = image_manifest(SETTINGS.anaconda, SETTINGS.docker_compose)
FAMILY = "course-vm-fall"
BUILDER_DISK = DISK_LINK_PREFIX + "course-image-builder-1a2b3c"
INSTANCE = "gcp:compute/instance:Instance"
IMAGE = "gcp:compute/image:Image"


@pytest.fixture(autouse=True)
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))


def bake(phase: str, **keys: str) -> dict[str, str]:
    marked = {
        "course-vm-image:phase": phase,
        "course-vm-image:family": FAMILY,
        "course-vm-image:bake": "20261205T010000Z",
    }
    return {**CONFIG, **marked} | {f"course-vm-image:{k}": v for k, v in keys.items()}


def test_the_build_phase_makes_a_builder_nobody_can_reach_and_its_check() -> None:
    run = run_program(bake("build"), stack="fall-image")
    builder = run.one(INSTANCE)
    metadata = builder.inputs["metadata"]
    assert "ssh-keys" not in metadata and metadata["block-project-ssh-keys"] == "TRUE"
    assert metadata["enable-guest-attributes"] == "TRUE", "the verdict is a guest attribute"
    assert "metadata.user-data" in builder.secret_paths
    assert BAKE_SCRIPT_PATH in [f["path"] for f in yaml.safe_load(metadata["user-data"])["write_files"]]
    assert builder.inputs["bootDisk"]["initializeParams"]["image"] == SETTINGS.image
    assert "serviceAccount" not in builder.inputs
    assert builder.inputs["shieldedInstanceConfig"]["enableSecureBoot"] is True
    assert run.of_type("gcp:compute/firewall:Firewall") == [], "no rule lets anything in"
    assert run.of_type(IMAGE) == [], "no image before the first capture"
    check = run.one("pulumi-python:dynamic:Resource")
    assert check.inputs["instance_name"] == builder.name + "-1a2b3c"
    assert run.outputs["builderDisk"].startswith(DISK_LINK_PREFIX) and run.outputs["family"] == FAMILY
    assert [r for r in run.resources if r.type == "course-vm:gcp:CourseImage"]
    # Each bake its own builder (and so its own check): never one an interrupted bake left powered off.
    assert builder.inputs["labels"]["course-vm-bake"] == "20261205t010000z"
    assert set(builder.replace_on_changes) == {'labels["course-vm-bake"]', 'metadata["user-data"]'}


def test_the_capture_phase_makes_the_image_of_the_builders_disk_and_drops_the_builder() -> None:
    old = DISK_LINK_PREFIX + "course-image-builder-0f0f0f"
    config = bake(
        "capture", sourceDisk=old, manifest="course-vm-image 1", builderDisk=BUILDER_DISK, builderManifest=MANIFEST
    )
    run = run_program(config, stack="fall-image")
    assert run.of_type(INSTANCE) == [] and run.of_type("gcp:compute/network:Network") == []
    image = run.one(IMAGE)
    assert image.inputs["sourceDisk"] == BUILDER_DISK and image.inputs["family"] == FAMILY
    assert manifest_of(image.inputs["description"]) == MANIFEST
    labels = image.inputs["labels"]
    assert labels["course-vm-anaconda"] == "2022-05" and labels["course-vm-docker-compose"] == "v2-6-1"
    assert labels["base-image"] == "ubuntu-os-cloud-ubuntu-2404-lts-amd64"
    assert run.outputs["image"].startswith(IMAGE_LINK_PREFIX)


def test_a_later_build_keeps_the_image_until_its_capture() -> None:
    run = run_program(bake("build", sourceDisk=BUILDER_DISK, manifest=MANIFEST), stack="fall-image")
    assert run.one(IMAGE).inputs["sourceDisk"] == BUILDER_DISK
    assert len(run.of_type(INSTANCE)) == 1


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"phase": "cook"}, "phase 'cook' is not build, capture or keep"),
        ({"family": "Course VM"}, "family 'Course VM' is not an image family name"),
        ({"sourceDisk": "/home/alice/.ssh/id_rsa"}, "sourceDisk '/home/alice/.ssh/id_rsa' is not a disk"),
        ({"phase": "capture"}, "phase capture needs builderDisk and builderManifest"),
        (
            {"builderDisk": "projects/p/zones/z/disks/../../x"},
            "builderDisk 'projects/p/zones/z/disks/../../x' is not a disk",
        ),
        ({"bake": "now; rm -rf /"}, "bake 'now; rm -rf /' is not a bake's mark"),
        ({"colour": "blue"}, "unknown key colour"),
    ],
)
def test_a_bake_config_not_written_by_image_bake_is_refused(keys: dict[str, str], problem: str) -> None:
    config = bake("build") | {f"course-vm-image:{k}": v for k, v in keys.items()}
    with pytest.raises(pulumi.RunError, match="not what `image bake` writes") as raised:
        run_program(config, stack="fall-image")
    assert problem in str(raised.value)


def test_a_class_with_bakedimage_boots_from_the_newest_image_of_its_family() -> None:
    run = run_program(
        {**CONFIG, "course-vm:bakedImage": "true"}, stack="fall", images={FAMILY: image_description(MANIFEST)}
    )
    vm = run.one(INSTANCE)
    assert vm.inputs["bootDisk"]["initializeParams"]["image"] == IMAGE_LINK_PREFIX + FAMILY + "-1a2b3c"
    setup = {f["path"]: f["content"] for f in yaml.safe_load(vm.inputs["metadata"]["user-data"])["write_files"]}
    script = setup["/usr/local/sbin/course-vm-setup"]
    assert "run_step image step_image" in script and "step_packages &&" not in script
    assert not [w for w in run.warnings if "out of date" in w]


def test_an_image_baked_for_other_releases_is_named_out_of_date_in_the_preview() -> None:
    other = parse_settings(
        {"allowedSshCidrs": ["203.0.113.7/32"], "dockerComposeVersion": "v2.27.0", "dockerComposeSha256": "d" * 64},
        "course-project-1",
        "europe-west1-b",
    )
    held = image_description(image_manifest(other.anaconda, other.docker_compose))
    run = run_program({**CONFIG, "course-vm:bakedImage": "true"}, stack="fall", images={FAMILY: held})
    [warning] = [w for w in run.warnings if "out of date" in w]
    assert warning.startswith("image out of date: bake again (`course-vm image bake --stack fall`): ")
    assert (
        f"the image holds 'docker-compose v2.27.0 {'d' * 64}' where the settings ask for 'docker-compose v2.6.1"
        in warning
    )


def test_bakedimage_without_an_image_fails_before_anything_is_created() -> None:
    with pytest.raises(pulumi.RunError) as raised:
        run_program({**CONFIG, "course-vm:bakedImage": "true"}, stack="fall")
    message = str(raised.value)
    assert message.startswith(
        "bakedImage is true, but project course-project-1 has no image of family course-vm-fall ("
    )
    assert "was not found" in message
    assert "Fix: `course-vm image bake --stack fall` first, or set bakedImage to false" in message


@pytest.mark.parametrize(
    ("stack", "family"),
    [("dev", "course-vm-dev"), ("Fall_2026", "course-vm-fall-2026"), ("x" * 80, "course-vm-" + "x" * 53)],
)
def test_a_family_is_a_gce_name_whatever_the_stack_is_called(stack: str, family: str) -> None:
    assert image_family(stack) == family


def test_the_manifest_goes_through_the_description_and_back() -> None:
    assert manifest_of(image_description(MANIFEST)) == MANIFEST
    assert manifest_of("Ubuntu, 24.04 LTS") == ""
    assert stale_lines(MANIFEST, MANIFEST) == []
    assert stale_lines("", "recipe abc") == ["the image holds 'no recipe' where the settings ask for 'recipe abc'"]
