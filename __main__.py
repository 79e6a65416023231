"""The Pulumi program: read the stack's settings, build the course's VMs, export how to reach them."""

import contextlib
import json
import os
from dataclasses import replace

import pulumi
import pulumi.runtime.config

from provisioner.access.keys import claim_keys, ensure_key_pair
from provisioner.access.ssh_config import host_alias
from provisioner.errors import CourseVmError, SettingsError
from provisioner.gcp.course_image import CourseImage, CourseImageArgs, bake_args, newest_baked_image
from provisioner.gcp.course_vm import CourseVm, CourseVmArgs
from provisioner.gcp.student_vm import StudentVmArgs
from provisioner.recipe.bake import stale_lines
from provisioner.recipe.problems import error_to_json
from provisioner.recipe.settings import PROJECT, Settings, settings_from_pulumi
from provisioner.recipe.user_data import image_manifest, user_data_for
from provisioner.stack import (
    COURSE,
    COURSE_IMAGE,
    IMAGE_NAMESPACE,
    PROBLEMS_VARIABLE,
    PROJECT_OUTPUT,
    STUDENTS_OUTPUT,
    command,
)


def namespace_config(namespace: str) -> dict[str, object]:
    """Every key of NAMESPACE this run was given, without the prefix: `pulumi.Config` reads one
    key at a time and cannot list them, so a misspelt key would go unseen.

    The engine hands the config over as the PULUMI_CONFIG bag or sets it (set_all_config); both count.
    """
    prefix = namespace + ":"
    given = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    return {key[len(prefix) :]: value for key, value in given.items() if key.startswith(prefix)}


def with_baked_image(settings: Settings) -> tuple[Settings, list[str]]:
    """SETTINGS booting from the newest image of the stack's family when bakedImage is true, and what that
    image lacks of what they ask for (an image baked before the recipe or a release changed)."""
    if not settings.baked_image:
        return settings, []
    baked = newest_baked_image(settings.project, pulumi.get_stack())
    stale = stale_lines(baked.manifest, image_manifest(settings.anaconda, settings.docker_compose))
    return replace(settings, image=baked.self_link), stale


def students_vms(settings: Settings) -> list[StudentVmArgs]:
    """One StudentVmArgs per seat, each with its key pair (made if missing) and its rendered recipe."""
    # Before any key is made: a student's generated key must be no other stack's (see keys.claim_keys).
    generated = [(seat.name, seat.ssh_key_path) for seat in settings.seats if seat.name and not seat.ssh_public_key]
    claim_keys(pulumi.get_stack(), generated, settings.ssh_key_path)
    vms = []
    for seat in settings.seats:
        # A student who brought their own key gets no pair: this is then the instructor's key (sshKeyPath).
        key = ensure_key_pair(seat.ssh_key_path, comment=seat.key_comment)
        user_data = user_data_for(
            settings, key.public_key, username=seat.username, student_public_key=seat.ssh_public_key
        )
        vms.append(StudentVmArgs(seat, key.public_key, user_data, host_alias(pulumi.get_stack(), seat.name)))
    return vms


def hand_over(error: SettingsError, path: str | None) -> None:
    """Write ERROR's problems as JSON to PATH, the new file `course-vm up` named (PROBLEMS_VARIABLE), if any:
    only a file that does not exist yet, never through a symlink."""
    if path:
        with (
            contextlib.suppress(OSError),
            os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file,
        ):
            file.write(json.dumps(error_to_json(error)))


# A bake stack (`course-vm image bake`) holds the class's image, not its VMs.
bake = namespace_config(IMAGE_NAMESPACE)
image_args: CourseImageArgs | None = None
vms: list[StudentVmArgs] = []
try:
    settings = settings_from_pulumi(namespace_config(PROJECT), pulumi.Config("gcp").get)
    if bake:
        image_args = bake_args(settings, bake)
    else:
        settings, stale = with_baked_image(settings)
        vms = students_vms(settings)
except CourseVmError as error:
    if isinstance(error, SettingsError):
        # The same problems as data for course-vm, which words their fixes for its own front end.
        hand_over(error, os.environ.get(PROBLEMS_VARIABLE))
    # RunError: Pulumi prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

if image_args is not None:
    image = CourseImage(COURSE_IMAGE, image_args)
    pulumi.export(PROJECT_OUTPUT, settings.project)
    pulumi.export("family", image_args.family)
    if image.image is not None:
        pulumi.export("image", image.image.self_link)
    if image.builder_disk is not None and image.manifest is not None:
        pulumi.export("builderDisk", image.builder_disk)
        pulumi.export("manifest", image.manifest)
else:
    course = CourseVm(COURSE, CourseVmArgs(settings=settings, vms=tuple(vms)))
    if stale:
        # In the preview: each VM made from this image would fail its setup's first step, saying the same.
        pulumi.log.warn(
            f"image out of date: bake again (`{command('image bake', pulumi.get_stack())}`): " + "; ".join(stale),
            resource=course,
        )
    pulumi.export(PROJECT_OUTPUT, settings.project)
    if settings.students:
        # A class: one entry per student, read by `python -m provisioner check` and `up`.
        pulumi.export(STUDENTS_OUTPUT, {name: vm.outputs() for name, vm in course.vms.items()})
    else:
        for output, value in course.vms[""].outputs().items():
            pulumi.export(output, value)
