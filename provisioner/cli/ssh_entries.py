"""A stack's `Host` entries in ~/.ssh: each built from a VM's checked fields, written, or removed."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from provisioner.access.ssh_config import add_host, host_alias, remove_host, ssh_config_block
from provisioner.errors import CourseVmError
from provisioner.stack import VmOutputs


def aliases(stack_name: str, students: Collection[str]) -> set[str]:
    """The `Host` names of STUDENTS' VMs ("" for a stack's one VM)."""
    return {host_alias(stack_name, student) for student in students}


def host_blocks(stack_name: str, vms: Mapping[str, VmOutputs]) -> tuple[dict[str, str], list[CourseVmError]]:
    """The `Host` blocks of VMS by alias, and the VMs whose values an ssh config cannot hold.

    Built from each VM's fields (address, login, key, pin file; under sshAccess iap the instance
    name and the ProxyCommand), each checked: never from the `sshConfig` text, which anyone who can
    write the stack's state could turn into a `Match exec`.
    """
    blocks: dict[str, str] = {}
    problems: list[CourseVmError] = []
    for student, vm in vms.items():
        alias = host_alias(stack_name, student)
        try:
            blocks[alias] = ssh_config_block(
                alias,
                vm.ssh_host,
                vm.username,
                vm.identity_file,
                vm.known_hosts_file or None,
                proxy_command=vm.proxy_command or None,
                forwards=vm.forward_ports,
                forward_agent=vm.forward_agent,
            )
        except CourseVmError as error:
            problems.append(error)
    return blocks, problems


def write_entries(stack_name: str, vms: Mapping[str, VmOutputs], stale: Collection[str] = ()) -> list[CourseVmError]:
    """Write the `Host` entries of VMS and remove those of STALE aliases that got none; the VMs whose
    values were refused (their old entry goes too: it may name an old address)."""
    blocks, problems = host_blocks(stack_name, vms)
    for alias, block in blocks.items():
        add_host(alias, block)
    for alias in (set(stale) | aliases(stack_name, vms)) - blocks.keys():
        remove_host(alias)
    return problems


def remove_entries(alias_names: Collection[str]) -> None:
    """Remove the `Host` entries ALIAS_NAMES (those that exist)."""
    for alias in alias_names:
        remove_host(alias)
