"""The Pulumi program: read the stack's settings, build the course's VMs, export how to reach them."""

import contextlib
import json
import os

import pulumi
import pulumi.runtime.config

from provisioner.access.keys import claim_keys, ensure_key_pair
from provisioner.access.ssh_config import host_alias
from provisioner.errors import CourseVmError, SettingsError
from provisioner.gcp.course_vm import CourseVm, CourseVmArgs
from provisioner.gcp.student_vm import StudentVmArgs
from provisioner.recipe.problems import error_to_json
from provisioner.recipe.settings import PROJECT, settings_from_pulumi
from provisioner.recipe.user_data import user_data_for
from provisioner.stack import COURSE, PROBLEMS_VARIABLE, PROJECT_OUTPUT, STUDENTS_OUTPUT


def namespace_config(namespace: str) -> dict[str, object]:
    """Every key of NAMESPACE this run was given, without the prefix: `pulumi.Config` reads one
    key at a time and cannot list them, so a misspelt key would go unseen.

    The engine hands the config over as the PULUMI_CONFIG bag or sets it (set_all_config); both count.
    """
    prefix = namespace + ":"
    given = {**pulumi.runtime.config.get_config_env(), **pulumi.runtime.config.CONFIG.get()}
    return {key[len(prefix) :]: value for key, value in given.items() if key.startswith(prefix)}


def hand_over(error: SettingsError, path: str | None) -> None:
    """Write ERROR's problems as JSON to PATH, the new file `course-vm up` named (PROBLEMS_VARIABLE), if any:
    only a file that does not exist yet, never through a symlink."""
    if path:
        with (
            contextlib.suppress(OSError),
            os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as file,
        ):
            file.write(json.dumps(error_to_json(error)))


try:
    settings = settings_from_pulumi(namespace_config(PROJECT), pulumi.Config("gcp").get)
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
        alias = host_alias(pulumi.get_stack(), seat.name)
        vms.append(StudentVmArgs(seat, key.public_key, user_data, alias))
except CourseVmError as error:
    if isinstance(error, SettingsError):
        # The same problems as data for course-vm, which words their fixes for its own front end.
        hand_over(error, os.environ.get(PROBLEMS_VARIABLE))
    # RunError: Pulumi prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

course = CourseVm(COURSE, CourseVmArgs(settings=settings, vms=tuple(vms)))

pulumi.export(PROJECT_OUTPUT, settings.project)
if settings.students:
    # A class: one entry per student, read by `python -m provisioner check` and `up`.
    pulumi.export(STUDENTS_OUTPUT, {name: vm.outputs() for name, vm in course.vms.items()})
else:
    for output, value in course.vms[""].outputs().items():
        pulumi.export(output, value)
