"""The Pulumi program: read the stack's settings, build one CourseVm, export how to reach it."""

import pulumi

from provisioner.errors import CourseVmError
from provisioner.gcp import CourseVm, CourseVmArgs
from provisioner.keys import ensure_key_pair
from provisioner.recipe import user_data_for
from provisioner.settings import settings_from_pulumi

try:
    settings = settings_from_pulumi(pulumi.Config().get, pulumi.Config("gcp").get)
    key = ensure_key_pair(settings.ssh_key_path, comment=f"{settings.username}@course-vm")
    user_data = user_data_for(settings, key.public_key)
except CourseVmError as error:
    # RunError: Pulumi prints the message alone, without a Python traceback.
    raise pulumi.RunError(str(error)) from None

vm = CourseVm("course-vm", CourseVmArgs(settings=settings, ssh_public_key=key.public_key, user_data=user_data))

pulumi.export("ip", vm.ip)
pulumi.export("sshCommand", vm.ssh_command)
pulumi.export("sshConfig", vm.ssh_config)
pulumi.export("instanceName", vm.instance_name)
pulumi.export("zone", vm.zone)
pulumi.export("project", settings.project)
pulumi.export("username", settings.username)
pulumi.export("identityFile", str(settings.ssh_key_path))
if vm.host_keys is not None:
    pulumi.export("hostKeys", vm.host_keys)
    pulumi.export("hostKeyFingerprint", vm.host_key_fingerprint)
    pulumi.export("knownHosts", vm.known_hosts)
