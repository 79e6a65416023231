"""The course's VMs as one ComponentResource: what they share, and one StudentVm per seat."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from provisioner.gcp.network import shared_by_vms
from provisioner.gcp.student_vm import StudentVm, StudentVmArgs
from provisioner.recipe.settings import Settings
from provisioner.stack import COURSE_VM_TYPE


@dataclass(frozen=True)
class CourseVmArgs:
    """What the course's VMs are built from: validated settings and one StudentVmArgs per VM."""

    settings: Settings
    vms: tuple[StudentVmArgs, ...]


class CourseVm(pulumi.ComponentResource):
    """The course's VMs on their own network behind an SSH-only firewall; `pulumi destroy` removes all.

    One StudentVm per seat: a student's own VM, or one per student of a class. Adding or removing a
    student adds or removes only that student's StudentVm; the network is shared.
    """

    vms: dict[str, StudentVm]
    """Each seat's VM, by student name ("" for a stack without `students`)."""

    def __init__(self, name: str, args: CourseVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COURSE_VM_TYPE, name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        if s.ssh_open_to_internet and not s.iap:
            pulumi.log.warn(
                "allowedSshCidrs contains 0.0.0.0/0: SSH to the course VM is open to the whole internet. "
                "Allow only your address: pulumi config set --path 'allowedSshCidrs[0]' YOUR.IP/32",
                resource=self,
            )
        shared = shared_by_vms(name, s, child)
        # Named by the student, not by position: a roster change never renames anyone else's VM.
        self.vms = {
            vm.seat.name: StudentVm(f"{name}-{vm.seat.name}" if vm.seat.name else name, shared, vm, s, opts=child)
            for vm in args.vms
        }
        vms = {seat: vm.instance_name for seat, vm in self.vms.items()}
        self.register_outputs({"network": shared.network.id, "vms": vms})
