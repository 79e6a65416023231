"""One student's VM: its static IP, the instance, its IAP grants and schedule, and (with verify) its verification."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute, iap

from provisioner.access.proxy import iap_proxy_command
from provisioner.access.ssh_config import ssh_config_block
from provisioner.gcp.network import SSH_TAG, SharedByVms
from provisioner.gcp.verification import VmVerification, known_hosts_path
from provisioner.recipe.metadata import USER_DATA, instance_metadata
from provisioner.recipe.settings import Seat, Settings
from provisioner.recipe.user_data import HOME_DISK_NAME, recipe_hash
from provisioner.stack import (
    ADDRESS_ROLE,
    HOME_DISK_ROLE,
    INSTANCE_ROLE,
    STUDENT_VM_TYPE,
    VERIFICATION_ROLE,
    vm_exports,
)

RECIPE_LABEL = "course-vm-recipe"
# The role that lets a Google account open an IAP TCP tunnel; granted on one instance, it opens only that one.
TUNNEL_ROLE = "roles/iap.tunnelResourceAccessor"
# Reading the instance (compute.instances.get): older gcloud releases' `start-iap-tunnel INSTANCE` read it to find
# its network interface before they open the tunnel, and `gcloud compute ssh --tunnel-through-iap` still does.
# gcloud 528 given --zone (as the ProxyCommand is) assumes nic0 and reads it only after a failed connect, to say
# why more precisely, and not under --listen-on-stdin: the ProxyCommand needs TUNNEL_ROLE alone there, but the
# grant stays for the student's gcloud whatever its release. The least predefined role with that permission,
# granted on the one instance, so it reads that instance and nothing else. (A custom role with only
# compute.instances.get would be narrower, but it is project-wide state the instructor needs roles/iam.roleAdmin
# to create, and a deleted custom role's ID cannot be reused for weeks, which breaks `destroy` then `up`.)
INSTANCE_READ_ROLE = "roles/compute.viewer"


@dataclass(frozen=True)
class StudentVmArgs:
    """One student's VM: whose it is, their public key and their rendered recipe."""

    seat: Seat
    ssh_public_key: str
    """`TYPE BASE64` of the key course-vm logs in with (the seat's `ssh_key_path`); the private key never
    reaches the program's state. A student's own key, if they brought one, is `seat.ssh_public_key`."""
    user_data: str
    """The rendered `#cloud-config`; stored in state only as a secret."""
    host_alias: str = "course-vm"
    """The `Host` name used in the `sshConfig` output."""


def label_value(text: str) -> str:
    """TEXT as a GCE label value: lowercase letters, digits, `_` and `-`, at most 63 characters."""
    return re.sub(r"[^a-z0-9_-]", "-", text.lower())[:63]


def scheduling(spot: bool) -> compute.InstanceSchedulingArgs:
    """On-demand (restarted after host maintenance), or Spot: stopped, never deleted, on preemption."""
    if not spot:
        return compute.InstanceSchedulingArgs(automatic_restart=True, on_host_maintenance="MIGRATE")
    return compute.InstanceSchedulingArgs(
        provisioning_model="SPOT",
        preemptible=True,
        automatic_restart=False,
        on_host_maintenance="TERMINATE",
        instance_termination_action="STOP",
    )


def instance_options(parent: pulumi.Resource, depends_on: list[pulumi.Resource]) -> pulumi.ResourceOptions:
    """Options of the instance: a changed recipe replaces it, and the old one goes first.

    cloud-init runs user-data once per instance, so updating it in place would change nothing on
    the VM; replacing makes the change real and shows as `+-replace` in the preview. The old VM is
    deleted before the new one is created because both would need the same static IP.
    """
    return pulumi.ResourceOptions(
        parent=parent,
        depends_on=depends_on,
        replace_on_changes=['metadata["user-data"]', f'labels["{RECIPE_LABEL}"]'],
        delete_before_replace=True,
    )


def vm_labels(stack: str, student: str, user_data: str) -> dict[str, str]:
    """The labels of a student's resources: who manages them, whose they are, and which recipe runs."""
    labels = {
        "managed-by": "course-vm",
        "course-vm-stack": label_value(stack),
        RECIPE_LABEL: recipe_hash(user_data),
    }
    if student:
        labels["course-vm-student"] = label_value(student)
    return labels


def ssh_command(identity_file: str, user: str, host: str, known_hosts_file: str | None, proxy_command: str = "") -> str:
    """`ssh -i KEY USER@IP`, with the pinned keys as the only ones plain ssh trusts when there are some;
    under iap `USER@INSTANCE` through the PROXY_COMMAND."""
    pin = ""
    if known_hosts_file:
        # Quoted twice: for the shell, and for ssh, which splits an -o value at spaces into files.
        value = f'"{known_hosts_file}"' if " " in known_hosts_file else known_hosts_file
        pin = f" -o {shlex.quote('UserKnownHostsFile=' + value)} -o StrictHostKeyChecking=yes"
    proxy = f" -o {shlex.quote('ProxyCommand=' + proxy_command)}" if proxy_command else ""
    return f"ssh -i {shlex.quote(identity_file)}{pin}{proxy} {user}@{host}"


class StudentVm(pulumi.ComponentResource):
    """One student's VM: its static IP, the instance, and (with verify) the check that it works."""

    ip: pulumi.Output[str]
    """The VM's static external IPv4 address, which survives stop and start; under iap its internal address."""
    proxy_command: str
    """Under iap, the ProxyCommand that reaches the VM by its instance name; "" under firewall."""
    ssh_command: pulumi.Output[str]
    """`ssh -i KEY USER@IP`; with verify, `-o UserKnownHostsFile=PINS -o StrictHostKeyChecking=yes` too."""
    ssh_config: pulumi.Output[str]
    """A `Host` block for ~/.ssh/config, with Jupyter's port forwarded."""
    instance_name: pulumi.Output[str]
    """The GCE instance name."""
    zone: pulumi.Output[str]
    """The GCE zone of the instance."""
    host_keys: pulumi.Output[list[str]] | None
    """The VM's SSH host keys, learned out of band and pinned (None with verify=false)."""
    host_key_fingerprint: pulumi.Output[str] | None
    """`SHA256:...` of the first pinned host key (None with verify=false)."""
    known_hosts: pulumi.Output[str] | None
    """known_hosts lines for the VM (None with verify=false)."""
    known_hosts_file: pulumi.Output[str] | None
    """The file those lines are pinned in, `KEY.STACK.known_hosts` (None with verify=false); KEY is
    `sshKeyPath-NAME` in a class, also for a student who brought their own key."""

    def __init__(
        self,
        name: str,
        shared: SharedByVms,
        args: StudentVmArgs,
        s: Settings,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(STUDENT_VM_TYPE, name, None, opts)
        labels = vm_labels(pulumi.get_stack(), args.seat.name, args.user_data)
        # Under iap no external address at all: IAP reaches the VM on its internal one.
        address = (
            None
            if s.iap
            else compute.Address(
                f"{name}-{ADDRESS_ROLE}",
                project=s.project,
                region=s.region,
                address_type="EXTERNAL",
                network_tier="PREMIUM",
                labels=labels,
                opts=pulumi.ResourceOptions(parent=self),
            )
        )
        self.proxy_command = iap_proxy_command(s.project, s.zone) if s.iap else ""
        home_disks = self._home_disk(name, s, labels) if s.home_disk_size_gb else []
        instance = self._instance(name, shared, args, s, labels, address, home_disks)
        if s.iap and args.seat.email:
            self._iap_grants(name, s, args.seat.email, instance, shared)
        if shared.nightly_stop is not None:
            # Attached rather than set on the instance: attaching never replaces the VM.
            compute.ResourcePolicyAttachment(
                f"{name}-nightly-stop",
                project=s.project,
                zone=s.zone,
                instance=instance.name,
                name=shared.nightly_stop.policy.name,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[shared.nightly_stop.grant]),
            )
        verification = self._verification(name, args.seat, s, address, instance, shared) if s.verify else None
        self._outputs = self._export(args, s, address, instance, verification)
        self.register_outputs(self._outputs)

    def _iap_grants(self, name: str, s: Settings, email: str, instance: compute.Instance, shared: SharedByVms) -> None:
        """What lets the student EMAIL reach this VM through IAP: on this instance only, so the student
        can tunnel to their own VM and to no other."""
        iap.TunnelInstanceIAMMember(
            f"{name}-iap-access",
            project=s.project,
            zone=s.zone,
            instance=instance.name,
            role=TUNNEL_ROLE,
            member=f"user:{email}",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[r for r in (shared.iap_api,) if r is not None]),
        )
        # What gcloud reads before it opens the tunnel; the student can already see all of it from inside.
        compute.InstanceIAMMember(
            f"{name}-instance-view",
            project=s.project,
            zone=s.zone,
            instance_name=instance.name,
            role=INSTANCE_READ_ROLE,
            member=f"user:{email}",
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _home_disk(self, name: str, s: Settings, labels: dict[str, str]) -> list[compute.InstanceAttachedDiskArgs]:
        """The disk that holds /home, as the instance attaches it.

        Its own resource, not the instance's: a replaced VM (a new recipe) gets the same disk, and
        with it the student's home. Without the recipe label, which would churn it.
        """
        home = compute.Disk(
            f"{name}-{HOME_DISK_ROLE}",
            project=s.project,
            zone=s.zone,
            size=s.home_disk_size_gb,
            type="pd-balanced",
            labels={k: v for k, v in labels.items() if k != RECIPE_LABEL},
            description="course-vm: the student's /home; it outlives the VM",
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [compute.InstanceAttachedDiskArgs(source=home.self_link, device_name=HOME_DISK_NAME, mode="READ_WRITE")]

    def _instance(
        self,
        name: str,
        shared: SharedByVms,
        args: StudentVmArgs,
        s: Settings,
        labels: dict[str, str],
        address: compute.Address | None,
        attached_disks: list[compute.InstanceAttachedDiskArgs],
    ) -> compute.Instance:
        """The VM: a Shielded VM with no service account, booting the recipe from its metadata."""
        metadata = instance_metadata(
            args.seat.username, args.ssh_public_key, args.user_data, student_public_key=args.seat.ssh_public_key
        )
        return compute.Instance(
            f"{name}-{INSTANCE_ROLE}",
            project=s.project,
            zone=s.zone,
            machine_type=s.machine_type,
            boot_disk=compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=compute.InstanceBootDiskInitializeParamsArgs(
                    image=s.image, size=s.disk_size_gb, type="pd-balanced", labels=labels
                ),
            ),
            network_interfaces=[
                compute.InstanceNetworkInterfaceArgs(
                    subnetwork=shared.subnet.id,
                    access_configs=[]
                    if address is None
                    else [compute.InstanceNetworkInterfaceAccessConfigArgs(nat_ip=address.address)],
                )
            ],
            attached_disks=attached_disks,
            # The recipe is kept in state only as a secret; the other attributes are public anyway.
            metadata={k: pulumi.Output.secret(v) if k == USER_DATA else v for k, v in metadata.items()},
            tags=[SSH_TAG],
            labels=labels,
            shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            # No service account at all: the VM needs no Google API, so it gets no credentials.
            scheduling=scheduling(s.spot),
            allow_stopping_for_update=True,
            description="course-vm: a course student's VM",
            opts=instance_options(self, depends_on=shared.ready()),
        )

    def _verification(
        self,
        name: str,
        seat: Seat,
        s: Settings,
        address: compute.Address | None,
        instance: compute.Instance,
        shared: SharedByVms,
    ) -> VmVerification:
        """The check that makes `pulumi up` succeed only on a working VM; a new instance is checked again.

        Under iap through the same tunnel a student uses, to the instance by its name.
        """
        return VmVerification(
            f"{name}-{VERIFICATION_ROLE}",
            host=instance.name if address is None else address.address,
            proxy_command=self.proxy_command,
            user=seat.username,
            identity_file=str(seat.ssh_key_path),
            project=s.project,
            zone=s.zone,
            instance_name=instance.name,
            instance_id=instance.instance_id,
            # Per seat, even where students who brought their own key share the instructor's key.
            known_hosts_file=str(known_hosts_path(str(seat.files_path), pulumi.get_stack())),
            timeout_seconds=s.verify_timeout_seconds,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[instance, *shared.ready()]),
        )

    def _export(
        self,
        args: StudentVmArgs,
        s: Settings,
        address: compute.Address | None,
        instance: compute.Instance,
        verification: VmVerification | None,
    ) -> dict[str, object]:
        """Set the typed output attributes and return the stack outputs of this VM."""
        seat = args.seat
        key_path = str(seat.ssh_key_path)
        proxy = self.proxy_command
        self.ip = address.address if address is not None else instance.network_interfaces.apply(_internal_ip)
        # Under iap ssh reaches the VM by its instance name, which is also the name its keys are pinned under.
        host = instance.name if proxy else self.ip
        self.instance_name = instance.name
        self.zone = instance.zone
        self.host_keys = self.host_key_fingerprint = self.known_hosts = self.known_hosts_file = None
        if verification is not None:
            self.host_keys = verification.host_keys
            self.host_key_fingerprint = verification.host_key_fingerprint
            self.known_hosts = verification.known_hosts
            self.known_hosts_file = verification.known_hosts_file
        # With verify, the block waits for the verification: it is given only once the host key is pinned.
        pinned = pulumi.Output.from_input(self.known_hosts_file if self.known_hosts_file is not None else "")
        self.ssh_command = pulumi.Output.all(host, pinned).apply(
            lambda values: ssh_command(key_path, seat.username, values[0], values[1] or None, proxy)
        )
        forwards = tuple(forward.text for forward in s.forward_ports)
        self.ssh_config = pulumi.Output.all(host, pinned).apply(
            lambda values: ssh_config_block(
                args.host_alias, values[0], seat.username, key_path, values[1] or None, proxy_command=proxy or None,
                forwards=forwards, forward_agent=s.forward_agent,
            )
        )  # fmt: skip
        outputs = vm_exports(
            ip=self.ip,
            proxy_command=proxy,
            ssh_command=self.ssh_command,
            ssh_config=self.ssh_config,
            instance_name=self.instance_name,
            zone=self.zone,
            username=seat.username,
            identity_file=key_path,
            forward_ports=list(forwards),
            forward_agent=s.forward_agent,
        )
        if seat.ssh_public_key:
            # The student brought their own key: `identityFile` is the instructor's, never handed out.
            outputs |= vm_exports(student_public_key=seat.ssh_public_key)
        if verification is not None:
            outputs |= vm_exports(
                host_keys=self.host_keys,
                host_key_fingerprint=self.host_key_fingerprint,
                known_hosts=self.known_hosts,
                known_hosts_file=self.known_hosts_file,
            )
        return outputs

    def outputs(self) -> dict[str, object]:
        """The stack outputs for this VM: how to reach it, and (with verify) its pinned host keys."""
        return dict(self._outputs)


def _internal_ip(interfaces: list[compute.outputs.InstanceNetworkInterface]) -> str:
    return interfaces[0].network_ip or ""
