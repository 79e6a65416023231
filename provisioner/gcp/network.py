"""What a course's VMs share: their network, the SSH firewall, Cloud NAT and IAP under iap, the nightly stop."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute, organizations, projects

from provisioner.recipe.settings import IAP_RANGE, Settings

SSH_TAG = "course-vm-ssh"
SUBNET_RANGE = "10.42.0.0/24"
# The role Google documents for the Compute Engine Service Agent to start and stop scheduled VMs.
SCHEDULE_ROLE = "roles/compute.instanceAdmin.v1"


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
    """What every StudentVm shares: the network, the SSH firewall, the nightly schedule and Cloud NAT, if any."""

    network: compute.Network
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


def shared_by_vms(name: str, s: Settings, opts: pulumi.ResourceOptions) -> SharedByVms:
    """The resources every VM of course NAME shares, children of OPTS' parent."""
    # Its own network: many projects have no `default` network, and destroy then leaves nothing.
    network = compute.Network(
        f"{name}-network",
        project=s.project,
        auto_create_subnetworks=False,
        description="course-vm network",
        opts=opts,
    )
    subnet = compute.Subnetwork(
        f"{name}-subnet",
        project=s.project,
        region=s.region,
        network=network.id,
        ip_cidr_range=SUBNET_RANGE,
        private_ip_google_access=True,
        opts=opts,
    )
    firewall = ssh_firewall(name, s, network, opts)
    nat = cloud_nat(name, s, network, subnet, opts) if s.iap else None
    # Tunnels and their grants go through the IAP API; kept on destroy, for other things may use it.
    iap_api = (
        projects.Service(
            f"{name}-iap-api", project=s.project, service="iap.googleapis.com", disable_on_destroy=False, opts=opts
        )
        if s.iap
        else None
    )
    schedule = nightly_stop(name, s, opts) if s.nightly_stop_time else None
    return SharedByVms(network, subnet, firewall, schedule, nat, iap_api)


def ssh_firewall(name: str, s: Settings, network: compute.Network, opts: pulumi.ResourceOptions) -> compute.Firewall:
    """New VPC networks deny all ingress; this opens only SSH, only from the configured ranges (under iap,
    only from Google's IAP range: nothing else can reach a VM without an external address)."""
    return compute.Firewall(
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
        opts=opts,
    )


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
