"""The GCP edge: the course VMs as ComponentResources, and everything they need."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute, iap, organizations, projects

from provisioner.access.proxy import iap_proxy_command
from provisioner.access.ssh_config import ssh_config_block
from provisioner.gcp.verification import VmVerification, known_hosts_path
from provisioner.recipe.metadata import USER_DATA, instance_metadata
from provisioner.recipe.settings import IAP_RANGE, Seat, Settings
from provisioner.recipe.user_data import HOME_DISK_NAME, recipe_hash

SSH_TAG = "course-vm-ssh"
SUBNET_RANGE = "10.42.0.0/24"
RECIPE_LABEL = "course-vm-recipe"
# The role Google documents for the Compute Engine Service Agent to start and stop scheduled VMs.
SCHEDULE_ROLE = "roles/compute.instanceAdmin.v1"
# The role that lets a Google account open an IAP TCP tunnel; granted on one instance, it opens only that one.
TUNNEL_ROLE = "roles/iap.tunnelResourceAccessor"
# gcloud's GA `start-iap-tunnel INSTANCE` first reads the instance (compute.instances.get) to find its network
# interface: without it the tunnel is refused. The least predefined role with that permission, granted on
# the one instance, so it reads that instance and nothing else. (A custom role with only compute.instances.get
# would be narrower, but it is project-wide state the instructor needs roles/iam.roleAdmin to create, and a
# deleted custom role's ID cannot be reused for weeks, which breaks `destroy` then `up`.)
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


@dataclass(frozen=True)
class CourseVmArgs:
    """What the course's VMs are built from: validated settings and one StudentVmArgs per VM."""

    settings: Settings
    vms: tuple[StudentVmArgs, ...]


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
    """The course's VMs on their own network behind an SSH-only firewall; `pulumi destroy` removes all.

    One StudentVm per seat: a student's own VM, or one per student of a class. Adding or removing a
    student adds or removes only that student's StudentVm; the network is shared.
    """

    vms: dict[str, StudentVm]
    """Each seat's VM, by student name ("" for a stack without `students`)."""

    def __init__(self, name: str, args: CourseVmArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("course-vm:gcp:CourseVm", name, None, opts)
        s = args.settings
        child = pulumi.ResourceOptions(parent=self)

        if s.ssh_open_to_internet and not s.iap:
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
        # New VPC networks deny all ingress; this opens only SSH, only from the configured ranges
        # (under iap, only from Google's IAP range: nothing else can reach a VM without an external address).
        firewall = compute.Firewall(
            f"{name}-ssh",
            project=s.project,
            network=network.id,
            direction="INGRESS",
            allows=[compute.FirewallAllowArgs(protocol="tcp", ports=["22"])],
            source_ranges=[IAP_RANGE] if s.iap else list(s.allowed_ssh_cidrs),
            target_tags=[SSH_TAG],
            description="course-vm: SSH through Identity-Aware Proxy only"
            if s.iap
            else "course-vm: SSH from allowedSshCidrs only",
            opts=child,
        )
        nat = cloud_nat(name, s, network, subnet, child) if s.iap else None
        # Tunnels and their grants go through the IAP API; kept on destroy, for other things may use it.
        iap_api = (
            projects.Service(
                f"{name}-iap-api", project=s.project, service="iap.googleapis.com", disable_on_destroy=False, opts=child
            )
            if s.iap
            else None
        )
        schedule = nightly_stop(name, s, child) if s.nightly_stop_time else None
        # Named by the student, not by position: a roster change never renames anyone else's VM.
        self.vms = {
            vm.seat.name: StudentVm(
                f"{name}-{vm.seat.name}" if vm.seat.name else name,
                SharedByVms(subnet, firewall, schedule, nat, iap_api),
                vm,
                s,
                opts=child,
            )
            for vm in args.vms
        }
        self.register_outputs({"network": network.id, "vms": {seat: vm.instance_name for seat, vm in self.vms.items()}})


def cloud_nat(
    name: str, s: Settings, network: compute.Network, subnet: compute.Subnetwork, opts: pulumi.ResourceOptions
) -> compute.RouterNat:
    """Outbound internet for VMs without an external address (sshAccess iap): the setup downloads
    packages, Docker images, Anaconda and docker-compose. Only outbound: NAT lets nothing in.

    Cloud NAT costs per VM-hour using it and per GiB it carries, plus its external address (README).
    """
    router = compute.Router(
        f"{name}-router",
        project=s.project,
        region=s.region,
        network=network.id,
        description="course-vm: Cloud NAT for VMs without an external address",
        opts=opts,
    )
    return compute.RouterNat(
        f"{name}-nat",
        project=s.project,
        region=s.region,
        router=router.name,
        nat_ip_allocate_option="AUTO_ONLY",
        source_subnetwork_ip_ranges_to_nat="LIST_OF_SUBNETWORKS",
        subnetworks=[compute.RouterNatSubnetworkArgs(name=subnet.id, source_ip_ranges_to_nats=["ALL_IP_RANGES"])],
        opts=opts,
    )


@dataclass(frozen=True)
class NightlyStop:
    """The instance schedule every VM is attached to, and the grant that lets GCE act on it."""

    policy: compute.ResourcePolicy
    grant: projects.IAMMember


def nightly_stop(name: str, s: Settings, opts: pulumi.ResourceOptions) -> NightlyStop:
    """An instance schedule that stops the VMs every day at nightlyStopTime, with its IAM grant.

    GCE's Compute Engine Service Agent performs scheduled stops and needs permission to stop
    instances. The grant is kept when the stack is destroyed (retain_on_delete): removing a
    project-wide binding could break schedules that other VMs in the project rely on.
    """
    hour, minute = s.nightly_stop_time.split(":")
    policy = compute.ResourcePolicy(
        f"{name}-nightly-stop",
        project=s.project,
        region=s.region,
        description=f"course-vm: stop the course VMs every day at {s.nightly_stop_time} {s.time_zone}",
        instance_schedule_policy=compute.ResourcePolicyInstanceSchedulePolicyArgs(
            vm_stop_schedule=compute.ResourcePolicyInstanceSchedulePolicyVmStopScheduleArgs(
                schedule=f"{int(minute)} {int(hour)} * * *"
            ),
            time_zone=s.time_zone,
        ),
        opts=opts,
    )
    project = organizations.get_project_output(project_id=s.project)
    grant = projects.IAMMember(
        f"{name}-schedule-grant",
        project=s.project,
        role=SCHEDULE_ROLE,
        member=project.number.apply(lambda n: f"serviceAccount:service-{n}@compute-system.iam.gserviceaccount.com"),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(retain_on_delete=True)),
    )
    return NightlyStop(policy, grant)


@dataclass(frozen=True)
class SharedByVms:
    """What every StudentVm shares: the subnet, the SSH firewall, the nightly schedule and Cloud NAT, if any."""

    subnet: compute.Subnetwork
    firewall: compute.Firewall
    nightly_stop: NightlyStop | None
    nat: compute.RouterNat | None = None
    """Under sshAccess iap only: how a VM without an external address downloads its setup."""
    iap_api: projects.Service | None = None
    """Under sshAccess iap only: the IAP API, which tunnels and their grants go through."""

    def ready(self) -> list[pulumi.Resource]:
        """What a VM's first boot and its check need: SSH let in, and under iap a way out to the
        internet and the IAP API."""
        return [self.firewall, *(r for r in (self.nat, self.iap_api) if r is not None)]


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
        super().__init__("course-vm:gcp:StudentVm", name, None, opts)
        labels = vm_labels(pulumi.get_stack(), args.seat.name, args.user_data)
        # Under iap no external address at all: IAP reaches the VM on its internal one.
        address = (
            None
            if s.iap
            else compute.Address(
                f"{name}-ip",
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
            # On this instance only: the student can tunnel to their own VM and to no other.
            iap.TunnelInstanceIAMMember(
                f"{name}-iap-access",
                project=s.project,
                zone=s.zone,
                instance=instance.name,
                role=TUNNEL_ROLE,
                member=f"user:{args.seat.email}",
                opts=pulumi.ResourceOptions(parent=self, depends_on=[r for r in (shared.iap_api,) if r is not None]),
            )
            # What gcloud reads before it opens the tunnel; the student can already see all of it from inside.
            compute.InstanceIAMMember(
                f"{name}-instance-view",
                project=s.project,
                zone=s.zone,
                instance_name=instance.name,
                role=INSTANCE_READ_ROLE,
                member=f"user:{args.seat.email}",
                opts=pulumi.ResourceOptions(parent=self),
            )
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
        self._outputs = self._export(args, address, instance, verification)
        self.register_outputs(self._outputs)

    def _home_disk(self, name: str, s: Settings, labels: dict[str, str]) -> list[compute.InstanceAttachedDiskArgs]:
        """The disk that holds /home, as the instance attaches it.

        Its own resource, not the instance's: a replaced VM (a new recipe) gets the same disk, and
        with it the student's home. Without the recipe label, which would churn it.
        """
        home = compute.Disk(
            f"{name}-home",
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
            f"{name}-verify",
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
        self.ssh_config = pulumi.Output.all(host, pinned).apply(
            lambda values: ssh_config_block(
                args.host_alias, values[0], seat.username, key_path, values[1] or None, proxy_command=proxy or None
            )
        )
        outputs: dict[str, object] = {
            "ip": self.ip,
            "proxyCommand": proxy,
            "sshCommand": self.ssh_command,
            "sshConfig": self.ssh_config,
            "instanceName": self.instance_name,
            "zone": self.zone,
            "username": seat.username,
            "identityFile": key_path,
        }
        if seat.ssh_public_key:
            # The student brought their own key: `identityFile` is the instructor's, never handed out.
            outputs["studentPublicKey"] = seat.ssh_public_key
        if verification is not None:
            outputs.update(
                hostKeys=self.host_keys,
                hostKeyFingerprint=self.host_key_fingerprint,
                knownHosts=self.known_hosts,
                knownHostsFile=self.known_hosts_file,
            )
        return outputs

    def outputs(self) -> dict[str, object]:
        """The stack outputs for this VM: how to reach it, and (with verify) its pinned host keys."""
        return dict(self._outputs)


def _internal_ip(interfaces: list[compute.outputs.InstanceNetworkInterface]) -> str:
    return interfaces[0].network_ip or ""
