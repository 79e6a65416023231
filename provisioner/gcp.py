"""The GCP edge: one ComponentResource that owns the course VM and everything it needs."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from provisioner.recipe import recipe_hash
from provisioner.settings import Settings
from provisioner.ssh_config import ssh_config_block
from provisioner.verify_resource import VmVerification, known_hosts_path

SSH_TAG = "course-vm-ssh"
SUBNET_RANGE = "10.42.0.0/24"
RECIPE_LABEL = "course-vm-recipe"


@dataclass(frozen=True)
class CourseVmArgs:
    """What a CourseVm is built from: validated settings, the public key and the rendered recipe."""

    settings: Settings
    ssh_public_key: str
    """`TYPE BASE64` of the student's key; the private key never reaches the program's state."""
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


class CourseVm(pulumi.ComponentResource):
    """A course VM with its own network, SSH-only firewall and static IP; `pulumi destroy` removes all."""

    ip: pulumi.Output[str]
    """The VM's static external IPv4 address; it survives stop and start."""
    ssh_command: pulumi.Output[str]
    """`ssh -i KEY USER@IP`."""
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

    def __init__(self, name: str, args: CourseVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("course-vm:gcp:CourseVm", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)
        labels = {
            "managed-by": "course-vm",
            "course-vm-stack": label_value(pulumi.get_stack()),
            RECIPE_LABEL: recipe_hash(args.user_data),
        }

        if s.ssh_open_to_internet:
            pulumi.log.warn(
                "allowedSshCidrs contains 0.0.0.0/0: SSH to the course VM is open to the whole internet. "
                "Allow only your address: pulumi config set --path 'allowedSshCidrs[0]' YOUR.IP/32",
                resource=self,
            )

        # Its own network: many projects have no `default` network, and destroy then leaves nothing.
        network = compute.Network(
            f"{name}-network",
            project=s.project,
            auto_create_subnetworks=False,
            description="course-vm network",
            opts=child,
        )
        subnet = compute.Subnetwork(
            f"{name}-subnet",
            project=s.project,
            region=s.region,
            network=network.id,
            ip_cidr_range=SUBNET_RANGE,
            private_ip_google_access=True,
            opts=child,
        )
        # New VPC networks deny all ingress; this opens only SSH, only from the configured ranges.
        firewall = compute.Firewall(
            f"{name}-ssh",
            project=s.project,
            network=network.id,
            direction="INGRESS",
            allows=[compute.FirewallAllowArgs(protocol="tcp", ports=["22"])],
            source_ranges=list(s.allowed_ssh_cidrs),
            target_tags=[SSH_TAG],
            description="course-vm: SSH from allowedSshCidrs only",
            opts=child,
        )
        address = compute.Address(
            f"{name}-ip",
            project=s.project,
            region=s.region,
            address_type="EXTERNAL",
            network_tier="PREMIUM",
            labels=labels,
            opts=child,
        )
        metadata = {
            "user-data": pulumi.Output.secret(args.user_data),
            "ssh-keys": f"{s.username}:{args.ssh_public_key} {s.username}",
            "block-project-ssh-keys": "TRUE",
            "enable-oslogin": "FALSE",
            "enable-guest-attributes": "TRUE",
        }
        instance = compute.Instance(
            f"{name}-vm",
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
                    subnetwork=subnet.id,
                    access_configs=[compute.InstanceNetworkInterfaceAccessConfigArgs(nat_ip=address.address)],
                )
            ],
            metadata=metadata,
            tags=[SSH_TAG],
            labels=labels,
            shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            # No service account at all: the VM needs no Google API, so it gets no credentials.
            scheduling=scheduling(s.spot),
            allow_stopping_for_update=True,
            description="course-vm: a course student's VM",
            opts=instance_options(self, depends_on=[firewall]),
        )

        self.host_keys = self.host_key_fingerprint = self.known_hosts = None
        known_hosts_file: str | None = None
        if s.verify:
            # `pulumi up` succeeds only if the checker passes; a new instance is checked again.
            verification = VmVerification(
                f"{name}-verify",
                host=address.address,
                user=s.username,
                identity_file=str(s.ssh_key_path),
                project=s.project,
                zone=s.zone,
                instance_name=instance.name,
                instance_id=instance.instance_id,
                timeout_seconds=s.verify_timeout_seconds,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[instance, firewall]),
            )
            self.host_keys = verification.host_keys
            self.host_key_fingerprint = verification.host_key_fingerprint
            self.known_hosts = verification.known_hosts
            known_hosts_file = str(known_hosts_path(str(s.ssh_key_path)))

        key = shlex.quote(str(s.ssh_key_path))
        self.ip = address.address
        self.instance_name = instance.name
        self.zone = instance.zone
        self.ssh_command = pulumi.Output.concat("ssh -i ", key, " ", s.username, "@", self.ip)
        # With verify, the block waits for the verification: it is given only once the host key is pinned.
        pinned = pulumi.Output.from_input(self.known_hosts if self.known_hosts is not None else "")
        self.ssh_config = pulumi.Output.all(self.ip, pinned).apply(
            lambda values: ssh_config_block(
                args.host_alias, values[0], s.username, str(s.ssh_key_path), known_hosts_file
            )
        )
        outputs: dict[str, object] = {
            "ip": self.ip,
            "sshCommand": self.ssh_command,
            "sshConfig": self.ssh_config,
            "instanceName": self.instance_name,
            "zone": self.zone,
        }
        if s.verify:
            outputs.update(
                hostKeys=self.host_keys, hostKeyFingerprint=self.host_key_fingerprint, knownHosts=self.known_hosts
            )
        self.register_outputs(outputs)
