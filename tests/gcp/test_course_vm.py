"""The Pulumi program under mocks: the resource graph and each security property of the VM.

These are the policy checks a scanner such as checkov makes (public SSH, Shielded VM, project-wide
keys, service-account scopes, secrets in state), asserted on what the engine would receive.
"""

from __future__ import annotations

import json
import shlex
import stat
import subprocess
from pathlib import Path

import pulumi
import pytest
import yaml

from provisioner import stack
from provisioner.access.ssh_config import ssh_config_block
from provisioner.gcp.network import SSH_TAG
from provisioner.gcp.student_vm import RECIPE_LABEL
from provisioner.recipe.metadata import instance_metadata
from tests.conftest import require_tool, validate_cloud_config
from tests.support.outputs import class_outputs, one_vm
from tests.support.pulumi_harness import (
    DISK_LINK_PREFIX,
    DYNAMIC,
    HOST_KEY,
    INSTANCE_ID,
    NETWORK_IP,
    PROJECT_NUMBER,
    STATIC_IP,
    Registration,
    Run,
    run_program,
)

INSTANCE = "gcp:compute/instance:Instance"
FIREWALL = "gcp:compute/firewall:Firewall"
NETWORK = "gcp:compute/network:Network"
SUBNET = "gcp:compute/subnetwork:Subnetwork"
ADDRESS = "gcp:compute/address:Address"
COMPONENT = "course-vm:gcp:CourseVm"
STUDENT_VM = "course-vm:gcp:StudentVm"


def stack_config(tmp_path: Path, **overrides: str) -> dict[str, str]:
    config = {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west1-b",
        "course-vm:allowedSshCidrs": json.dumps(["203.0.113.7/32"]),
        "course-vm:sshKeyPath": str(tmp_path / "keys" / "course-vm"),
    }
    config.update({f"course-vm:{k}": v for k, v in overrides.items()})
    return config


@pytest.fixture
def run(tmp_path: Path) -> Run:
    return run_program(stack_config(tmp_path))


def test_one_component_owns_every_resource(run: Run) -> None:
    types = sorted(r.type for r in run.resources)
    assert types == sorted([COMPONENT, NETWORK, SUBNET, FIREWALL, STUDENT_VM, ADDRESS, INSTANCE, DYNAMIC])
    component = run.one(COMPONENT)
    assert component.name == "course-vm"
    student_vm = run.one(STUDENT_VM)
    assert student_vm.name == "course-vm"
    for resource in run.resources:
        if resource in (component, student_vm):
            continue
        owner = (
            f"{STUDENT_VM}::course-vm" if resource.type in (ADDRESS, INSTANCE, DYNAMIC) else f"{COMPONENT}::course-vm"
        )
        assert resource.parent.endswith(owner), f"{resource.name} is not a child of {owner}"
        assert resource.name.startswith("course-vm-")
    assert student_vm.parent.endswith(f"{COMPONENT}::course-vm")


def test_own_network_not_default(run: Run) -> None:
    network = run.one(NETWORK)
    assert network.inputs["autoCreateSubnetworks"] is False
    subnet = run.one(SUBNET)
    assert subnet.inputs["network"] == network.inputs.get("id", "course-vm-network-id")
    assert subnet.inputs["region"] == "europe-west1"
    nic = run.one(INSTANCE).inputs["networkInterfaces"][0]
    assert nic["subnetwork"] == "course-vm-subnet-id"
    assert "network" not in nic


def test_firewall_opens_only_ssh_from_allowed_ranges_to_the_vm(run: Run) -> None:
    firewall = run.one(FIREWALL)
    assert firewall.inputs["direction"] == "INGRESS"
    assert firewall.inputs["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    assert "denies" not in firewall.inputs
    assert firewall.inputs["sourceRanges"] == ["203.0.113.7/32"]
    assert firewall.inputs["targetTags"] == [SSH_TAG]
    assert run.one(INSTANCE).inputs["tags"] == [SSH_TAG]
    assert run.warnings == []


def test_ssh_open_to_the_internet_warns(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, allowedSshCidrs=json.dumps(["0.0.0.0/0"])))
    assert run.one(FIREWALL).inputs["sourceRanges"] == ["0.0.0.0/0"]
    assert any("open to the whole internet" in w for w in run.warnings), run.warnings


def test_static_ip_is_the_vms_address(run: Run) -> None:
    address = run.one(ADDRESS)
    assert address.inputs["addressType"] == "EXTERNAL"
    assert address.inputs["region"] == "europe-west1"
    nic = run.one(INSTANCE).inputs["networkInterfaces"][0]
    assert nic["accessConfigs"] == [{"natIp": STATIC_IP}]
    assert run.outputs["ip"] == STATIC_IP


def test_instance_is_a_shielded_vm(run: Run) -> None:
    shielded = run.one(INSTANCE).inputs["shieldedInstanceConfig"]
    assert shielded == {"enableSecureBoot": True, "enableVtpm": True, "enableIntegrityMonitoring": True}


def test_instance_has_no_service_account_and_no_broad_scopes(run: Run) -> None:
    inputs = run.one(INSTANCE).inputs
    assert "serviceAccount" not in inputs
    assert "cloud-platform" not in json.dumps(run.one(INSTANCE).raw)


def test_metadata_blocks_project_keys_and_os_login_and_publishes_host_keys(run: Run) -> None:
    metadata = run.one(INSTANCE).inputs["metadata"]
    assert metadata["block-project-ssh-keys"] == "TRUE"
    assert metadata["enable-oslogin"] == "FALSE"
    assert metadata["enable-guest-attributes"] == "TRUE"
    assert "serial-port-enable" not in metadata


def test_ssh_keys_metadata_holds_the_generated_public_key(run: Run, tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "course-vm"
    public = " ".join(key_path.with_name("course-vm.pub").read_text().split()[:2])
    metadata = run.one(INSTANCE).inputs["metadata"]
    assert metadata["ssh-keys"] == f"student:{public} student"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o400


def test_the_instance_gets_exactly_the_recipe_engines_metadata_map(run: Run, tmp_path: Path) -> None:
    # One map for GCE and the local twin: the edge adds nothing and leaves nothing out.
    public = " ".join((tmp_path / "keys" / "course-vm.pub").read_text().split()[:2])
    metadata = run.one(INSTANCE).inputs["metadata"]
    assert metadata == instance_metadata("student", public, metadata["user-data"])


@pytest.mark.integration
def test_user_data_is_a_secret_and_the_private_key_is_nowhere(run: Run, tmp_path: Path) -> None:
    instance = run.one(INSTANCE)
    assert instance.secret_paths == ["metadata.user-data"]
    validate_cloud_config(instance.inputs["metadata"]["user-data"], tmp_path)
    private = (tmp_path / "keys" / "course-vm").read_text()
    body = "".join(private.splitlines()[1:-1])
    everything = json.dumps([r.raw for r in run.resources]) + json.dumps(run.outputs)
    assert "PRIVATE KEY" not in everything
    assert body[20:60] not in everything


@pytest.mark.integration
def test_user_data_is_the_rendered_recipe_for_the_settings(tmp_path: Path) -> None:
    run = run_program(
        stack_config(tmp_path, username="alice", dockerComposeVersion="2.20.0", dockerComposeSha256="a" * 64)
    )
    user_data = run.one(INSTANCE).inputs["metadata"]["user-data"]
    validate_cloud_config(user_data, tmp_path)
    document = yaml.safe_load(user_data)
    assert document["users"][0]["name"] == "alice"
    script = next(f["content"] for f in document["write_files"] if f["path"] == "/usr/local/sbin/course-vm-setup")
    assert "COMPOSE_VERSION=v2.20.0\n" in script
    assert f"COMPOSE_SHA256={'a' * 64}\n" in script
    assert "/download/v2.20.0/docker-compose-linux-x86_64\n" in script


def test_boot_disk_image_size_and_deleted_with_the_vm(tmp_path: Path) -> None:
    run = run_program(
        stack_config(tmp_path, diskSizeGb="40", machineType="n2-standard-8", image="ubuntu-os-cloud/ubuntu-2204-lts")
    )
    instance = run.one(INSTANCE).inputs
    assert instance["machineType"] == "n2-standard-8"
    assert instance["zone"] == "europe-west1-b"
    assert instance["project"] == "course-project-1"
    disk = instance["bootDisk"]
    assert disk["autoDelete"] is True
    assert disk["initializeParams"]["image"] == "ubuntu-os-cloud/ubuntu-2204-lts"
    assert disk["initializeParams"]["size"] == 40


def test_defaults_are_the_course_machine(run: Run) -> None:
    instance = run.one(INSTANCE).inputs
    assert instance["machineType"] == "e2-standard-4"
    assert instance["bootDisk"]["initializeParams"]["size"] == 30
    assert instance["bootDisk"]["initializeParams"]["image"] == "ubuntu-os-cloud/ubuntu-2404-lts-amd64"


def test_a_changed_recipe_replaces_the_vm_visibly(tmp_path: Path) -> None:
    first = run_program(stack_config(tmp_path)).one(INSTANCE)
    second = run_program(stack_config(tmp_path, anacondaVersion="2023.03", anacondaSha256="b" * 64)).one(INSTANCE)
    assert first.replace_on_changes == ['metadata["user-data"]', f'labels["{RECIPE_LABEL}"]']
    assert first.delete_before_replace is True
    # The recipe hash is a plain label, so the preview shows why the VM is replaced.
    assert first.inputs["labels"][RECIPE_LABEL] != second.inputs["labels"][RECIPE_LABEL]
    assert first.inputs["labels"]["managed-by"] == "course-vm"
    assert first.inputs["labels"]["course-vm-stack"] == "dev"


def test_same_settings_give_the_same_recipe(tmp_path: Path) -> None:
    first = run_program(stack_config(tmp_path)).one(INSTANCE)
    second = run_program(stack_config(tmp_path)).one(INSTANCE)
    assert first.inputs["labels"] == second.inputs["labels"]
    assert first.inputs["metadata"] == second.inputs["metadata"]


def test_outputs_say_how_to_connect(run: Run, tmp_path: Path) -> None:
    key = tmp_path / "keys" / "course-vm"
    assert run.outputs["sshCommand"] == (
        f"ssh -i {key} -o UserKnownHostsFile={key}.dev.known_hosts -o StrictHostKeyChecking=yes student@{STATIC_IP}"
    )
    assert run.outputs["sshConfig"] == (
        f"Host course-vm\n    HostName {STATIC_IP}\n    User student\n    IdentityFile {key}\n"
        f"    IdentitiesOnly yes\n    UserKnownHostsFile {key}.dev.known_hosts\n    StrictHostKeyChecking yes\n"
        "    LocalForward localhost:8888 localhost:8888\n    LocalForward localhost:5000 localhost:5000\n"
    )
    assert run.outputs["hostKeys"] == [HOST_KEY]
    assert run.outputs["knownHosts"] == f"{STATIC_IP} {HOST_KEY}"
    assert run.outputs["hostKeyFingerprint"] == "SHA256:fingerprint"
    assert run.outputs["zone"] == "europe-west1-b"
    assert run.outputs["instanceName"].startswith("course-vm-vm")


def test_bad_settings_stop_the_program_before_any_resource(tmp_path: Path) -> None:
    config = stack_config(tmp_path, diskSizeGb="5", username="root")
    with pytest.raises(pulumi.RunError) as raised:
        run_program(config)
    message = str(raised.value)
    assert "2 problems, nothing was created" in message
    assert "diskSizeGb: got '5'" in message
    assert "username: got 'root'" in message
    assert not (tmp_path / "keys").exists(), "no key may be generated for invalid settings"


def test_bad_settings_register_nothing(tmp_path: Path) -> None:
    run = Run()
    with pytest.raises(pulumi.RunError, match="allowedSshCidrs"):
        run_program(stack_config(tmp_path, allowedSshCidrs="[]"), run=run)
    assert run.resources == []


def test_verification_checks_the_new_instance_without_the_private_key(run: Run, tmp_path: Path) -> None:
    verification = run.one(DYNAMIC)
    assert verification.name == "course-vm-verify"
    assert verification.parent.endswith(f"{STUDENT_VM}::course-vm")
    inputs = verification.inputs
    assert {
        k: inputs[k]
        for k in (
            "host",
            "port",
            "user",
            "identity_file",
            "project",
            "zone",
            "instance_id",
            "timeout_seconds",
            "checker_version",
        )
    } == {
        "host": STATIC_IP,
        "port": 22,
        "user": "student",
        "identity_file": str(tmp_path / "keys" / "course-vm"),
        "project": "course-project-1",
        "zone": "europe-west1-b",
        "instance_id": INSTANCE_ID,
        "timeout_seconds": 1800,
        "checker_version": "1",
    }
    assert inputs["instance_name"].startswith("course-vm-vm")
    assert "__provider" in inputs, "the provider travels with the resource, serialized"
    assert "PRIVATE KEY" not in json.dumps(verification.raw)


def test_verify_false_skips_the_check_and_the_pinning(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, verify="false"))
    assert run.of_type(DYNAMIC) == []
    key = tmp_path / "keys" / "course-vm"
    assert run.outputs["sshConfig"] == ssh_config_block("course-vm", STATIC_IP, "student", str(key))
    assert "StrictHostKeyChecking" not in run.outputs["sshConfig"]
    assert run.outputs["sshCommand"] == f"ssh -i {key} student@{STATIC_IP}"
    assert "hostKeys" not in run.outputs


def test_on_demand_by_default(run: Run) -> None:
    assert run.one(INSTANCE).inputs["scheduling"] == {"automaticRestart": True, "onHostMaintenance": "MIGRATE"}


def test_spot_vm_is_stopped_not_deleted_when_preempted(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, spot="true"))
    assert run.one(INSTANCE).inputs["scheduling"] == {
        "provisioningModel": "SPOT",
        "preemptible": True,
        "automaticRestart": False,
        "onHostMaintenance": "TERMINATE",
        "instanceTerminationAction": "STOP",
    }


# A class: one VM per student in one stack.


def by_name(run: Run) -> dict[str, Registration]:
    return {f"{r.type}::{r.name}": r for r in run.resources}


def test_a_class_gets_one_vm_key_user_and_ip_per_student(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, students=json.dumps(["alice", "bob"])))
    assert len(run.of_type(NETWORK)) == len(run.of_type(FIREWALL)) == 1
    instances = {r.name: r for r in run.of_type(INSTANCE)}
    assert set(instances) == {"course-vm-alice-vm", "course-vm-bob-vm"}
    assert {r.name for r in run.of_type(ADDRESS)} == {"course-vm-alice-ip", "course-vm-bob-ip"}
    assert {r.name for r in run.of_type(DYNAMIC)} == {"course-vm-alice-verify", "course-vm-bob-verify"}
    for student in ("alice", "bob"):
        key = tmp_path / "keys" / f"course-vm-{student}"
        assert stat.S_IMODE(key.stat().st_mode) == 0o400
        public = (tmp_path / "keys" / f"course-vm-{student}.pub").read_text().split()
        instance = instances[f"course-vm-{student}-vm"]
        assert instance.inputs["metadata"]["ssh-keys"] == f"{student}:{public[0]} {public[1]} {student}"
        assert instance.inputs["labels"]["course-vm-student"] == student
        [user] = yaml.safe_load(instance.inputs["metadata"]["user-data"])["users"]
        assert user["name"] == student
        outputs = run.outputs["students"][student]
        assert outputs["username"] == student
        assert outputs["identityFile"] == str(key)
        assert outputs["sshConfig"].startswith(f"Host course-vm-{student}\n")
        assert outputs["hostKeys"] == [HOST_KEY]
    assert "ip" not in run.outputs


@pytest.mark.parametrize(
    ("before", "after"),
    [(["alice", "bob"], ["alice", "bob", "carol"]), (["alice", "bob", "carol"], ["alice", "carol"])],
    ids=["adding a student", "removing a student"],
)
def test_a_roster_change_touches_only_that_students_resources(
    tmp_path: Path, before: list[str], after: list[str]
) -> None:
    old = by_name(run_program(stack_config(tmp_path, students=json.dumps(before))))
    new = by_name(run_program(stack_config(tmp_path, students=json.dumps(after))))
    [changed] = set(before) ^ set(after)
    touched = {key for key in old.keys() ^ new.keys()}
    assert touched == {
        f"{STUDENT_VM}::course-vm-{changed}",
        f"{ADDRESS}::course-vm-{changed}-ip",
        f"{INSTANCE}::course-vm-{changed}-vm",
        f"{DYNAMIC}::course-vm-{changed}-verify",
    }
    for key in old.keys() & new.keys():
        assert old[key].raw == new[key].raw, f"{key} changed"
        assert old[key].parent == new[key].parent


def test_another_stacks_host_alias_names_the_stack(tmp_path: Path) -> None:
    single = run_program(stack_config(tmp_path), stack="prod")
    assert single.outputs["sshConfig"].startswith("Host course-vm-prod\n")
    group = run_program(stack_config(tmp_path, students='["alice"]'), stack="prod")
    assert group.outputs["students"]["alice"]["sshConfig"].startswith("Host course-vm-prod-alice\n")


def test_each_stack_and_student_pins_to_a_file_of_its_own(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "course-vm"
    pins = {
        stack: run_program(stack_config(tmp_path), stack=stack).one(DYNAMIC).inputs["known_hosts_file"]
        for stack in ("dev", "prod")
    }
    assert pins == {"dev": f"{key}.dev.known_hosts", "prod": f"{key}.prod.known_hosts"}
    group = run_program(stack_config(tmp_path, students='["alice", "bob"]'), stack="prod")
    assert {r.inputs["known_hosts_file"] for r in group.of_type(DYNAMIC)} == {
        f"{key}-alice.prod.known_hosts",
        f"{key}-bob.prod.known_hosts",
    }
    single = run_program(stack_config(tmp_path), stack="prod")
    assert f"    UserKnownHostsFile {key}.prod.known_hosts\n" in single.outputs["sshConfig"]
    assert single.outputs["knownHostsFile"] == f"{key}.prod.known_hosts"


def test_a_student_with_their_own_key_gets_no_generated_pair_and_the_instructors_key_verifies(
    tmp_path: Path,
) -> None:
    own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
    roster = tmp_path / "roster.csv"
    roster.write_text(f"name,sshPublicKey,email\nalice,{own} alice@laptop,alice@example.org\nbob,,\n")
    run = run_program(stack_config(tmp_path, studentsCsv=str(roster)))
    keys = tmp_path / "keys"
    # The instructor never holds alice's private key: none is generated for her; sshKeyPath itself is.
    # Only bob's generated key is claimed for the stack: sshKeyPath is no student's.
    assert sorted(p.name for p in keys.iterdir()) == [
        ".course-vm-claims.lock",  # one stack at a time claims the folder's keys
        "course-vm",
        "course-vm-bob",
        "course-vm-bob.pub",
        "course-vm-bob.stacks",
        "course-vm.pub",
    ]
    instructor = " ".join((keys / "course-vm.pub").read_text().split()[:2])
    instance = {r.name: r for r in run.of_type(INSTANCE)}["course-vm-alice-vm"]
    assert instance.inputs["metadata"]["ssh-keys"] == f"alice:{own} alice\nalice:{instructor} alice"
    [user] = yaml.safe_load(instance.inputs["metadata"]["user-data"])["users"]
    assert user["ssh_authorized_keys"] == [own, instructor]
    # pulumi up verifies alice's VM as alice, with the instructor's key; her pins are a file of her own.
    verify = {r.name: r for r in run.of_type(DYNAMIC)}["course-vm-alice-verify"]
    assert (verify.inputs["user"], verify.inputs["identity_file"]) == ("alice", str(keys / "course-vm"))
    assert verify.inputs["known_hosts_file"] == f"{keys}/course-vm-alice.dev.known_hosts"
    alice, bob = run.outputs["students"]["alice"], run.outputs["students"]["bob"]
    assert alice["identityFile"] == str(keys / "course-vm")
    assert alice["studentPublicKey"] == own
    assert "studentPublicKey" not in bob and bob["identityFile"] == str(keys / "course-vm-bob")
    [bob_user] = yaml.safe_load(
        {r.name: r for r in run.of_type(INSTANCE)}["course-vm-bob-vm"].inputs["metadata"]["user-data"]
    )["users"]
    assert bob_user["ssh_authorized_keys"] == [" ".join((keys / "course-vm-bob.pub").read_text().split()[:2])]


# The nightly stop schedule.

POLICY = "gcp:compute/resourcePolicy:ResourcePolicy"
ATTACHMENT = "gcp:compute/resourcePolicyAttachment:ResourcePolicyAttachment"
IAM_MEMBER = "gcp:projects/iAMMember:IAMMember"


def test_no_schedule_by_default(run: Run) -> None:
    assert run.of_type(POLICY) == run.of_type(ATTACHMENT) == run.of_type(IAM_MEMBER) == []


def test_nightly_stop_schedules_every_vm_with_the_grant_it_needs(tmp_path: Path) -> None:
    config = stack_config(tmp_path, nightlyStopTime="22:05", timeZone="Europe/Berlin", students='["alice", "bob"]')
    run = run_program(config)
    policy = run.one(POLICY)
    assert policy.inputs["region"] == "europe-west1"
    assert policy.inputs["instanceSchedulePolicy"] == {
        "vmStopSchedule": {"schedule": "5 22 * * *"},
        "timeZone": "Europe/Berlin",
    }
    assert "vmStartSchedule" not in policy.inputs["instanceSchedulePolicy"]
    grant = run.one(IAM_MEMBER)
    assert grant.inputs == {
        "project": "course-project-1",
        "role": "roles/compute.instanceAdmin.v1",
        "member": f"serviceAccount:service-{PROJECT_NUMBER}@compute-system.iam.gserviceaccount.com",
    }
    assert grant.retain_on_delete, "destroying the stack must not revoke a grant other schedules may use"
    attachments = {a.name: a for a in run.of_type(ATTACHMENT)}
    assert set(attachments) == {"course-vm-alice-nightly-stop", "course-vm-bob-nightly-stop"}
    for student, attachment in attachments.items():
        assert attachment.inputs["name"] == "course-vm-nightly-stop-1a2b3c"  # the policy's name, not its link
        assert attachment.inputs["instance"].startswith(student.removesuffix("-nightly-stop") + "-vm")
        assert attachment.inputs["zone"] == "europe-west1-b"
        assert any(d.endswith("::course-vm-schedule-grant") for d in attachment.dependencies)
        assert attachment.parent.endswith(f"{STUDENT_VM}::{student.removesuffix('-nightly-stop')}")
    assert "resourcePolicies" not in run.of_type(INSTANCE)[0].inputs, "attaching must not replace the VM"


# The persistent home disk.

DISK = "gcp:compute/disk:Disk"


def test_no_home_disk_by_default(run: Run) -> None:
    assert run.of_type(DISK) == []
    assert run.one(INSTANCE).inputs.get("attachedDisks", []) == []
    assert "mounts" not in yaml.safe_load(run.one(INSTANCE).inputs["metadata"]["user-data"])


def test_a_home_disk_outlives_the_vm_and_holds_home(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, homeDiskSizeGb="50"))
    disk = run.one(DISK)
    assert disk.name == "course-vm-home"
    assert disk.parent.endswith(f"{STUDENT_VM}::course-vm")
    assert (disk.inputs["size"], disk.inputs["type"], disk.inputs["zone"]) == (50, "pd-balanced", "europe-west1-b")
    assert RECIPE_LABEL not in disk.inputs["labels"], "a new recipe must not touch the home disk"
    instance = run.one(INSTANCE)
    assert instance.inputs["attachedDisks"] == [
        {"source": f"{DISK_LINK_PREFIX}course-vm-home-1a2b3c", "deviceName": "course-vm-home", "mode": "READ_WRITE"}
    ]
    assert instance.inputs["bootDisk"]["autoDelete"] is True
    document = yaml.safe_load(instance.inputs["metadata"]["user-data"])
    assert document["mounts"][0][:2] == ["/dev/disk/by-id/google-course-vm-home", "/home"]


def test_a_new_recipe_replaces_the_vm_but_keeps_the_home_disk(tmp_path: Path) -> None:
    before = run_program(stack_config(tmp_path, homeDiskSizeGb="50"))
    after = run_program(stack_config(tmp_path, homeDiskSizeGb="50", dockerComposeVersion="v2.27.0",
                                     dockerComposeSha256="d" * 64))  # fmt: skip
    assert before.one(INSTANCE).inputs["labels"][RECIPE_LABEL] != after.one(INSTANCE).inputs["labels"][RECIPE_LABEL]
    assert before.one(DISK).raw == after.one(DISK).raw


def test_ssh_command_quotes_a_pin_file_with_a_space_for_the_shell_and_for_ssh(tmp_path: Path) -> None:
    keys = tmp_path / "my keys"
    run = run_program({**stack_config(tmp_path), "course-vm:sshKeyPath": str(keys / "course-vm")})
    pinned = f"{keys}/course-vm.dev.known_hosts"
    assert f"""-o 'UserKnownHostsFile="{pinned}"' -o StrictHostKeyChecking=yes """ in run.outputs["sshCommand"]


# sshAccess iap: no external address, only Google's IAP range, Cloud NAT for the downloads, one grant per VM.

ROUTER = "gcp:compute/router:Router"
NAT = "gcp:compute/routerNat:RouterNat"
TUNNEL_MEMBER = "gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember"
INSTANCE_MEMBER = "gcp:compute/instanceIAMMember:InstanceIAMMember"
IAP = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"


def iap_config(tmp_path: Path, **overrides: str) -> dict[str, str]:
    config = stack_config(tmp_path, sshAccess="iap", **overrides)
    del config["course-vm:allowedSshCidrs"]
    return config


def test_firewall_access_has_no_nat_and_no_grant(run: Run) -> None:
    assert run.of_type(ROUTER) == run.of_type(NAT) == run.of_type(TUNNEL_MEMBER) == run.of_type(INSTANCE_MEMBER) == []
    assert run.outputs["proxyCommand"] == ""


def test_iap_vm_has_no_external_address(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    assert run.of_type(ADDRESS) == []
    [nic] = run.one(INSTANCE).inputs["networkInterfaces"]
    assert nic.get("accessConfigs", []) == []
    assert run.outputs["ip"] == NETWORK_IP  # the internal address: nothing else reaches it


def test_iap_firewall_admits_only_googles_iap_range_on_ssh(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    firewall = run.one(FIREWALL)
    assert firewall.inputs["sourceRanges"] == ["35.235.240.0/20"]
    assert firewall.inputs["allows"] == [{"protocol": "tcp", "ports": ["22"]}]
    assert firewall.inputs["direction"] == "INGRESS"
    assert firewall.inputs["targetTags"] == [SSH_TAG]
    assert run.warnings == []


def test_iap_vms_reach_the_internet_through_cloud_nat(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    router, nat = run.one(ROUTER), run.one(NAT)
    assert router.inputs["region"] == nat.inputs["region"] == "europe-west1"
    assert router.inputs["network"] == "course-vm-network-id"
    assert nat.inputs["router"] == "course-vm-router-1a2b3c"  # the router's auto-name
    assert nat.inputs["natIpAllocateOption"] == "AUTO_ONLY"
    assert nat.inputs["sourceSubnetworkIpRangesToNat"] == "LIST_OF_SUBNETWORKS"
    assert nat.inputs["subnetworks"] == [{"name": "course-vm-subnet-id", "sourceIpRangesToNats": ["ALL_IP_RANGES"]}]
    for resource in (router, nat):
        assert resource.parent.endswith(f"{COMPONENT}::course-vm")
    # The setup downloads at first boot, and its check waits for it: both wait for the NAT.
    nat_urn = next(urn for urn in run.one(INSTANCE).dependencies if urn.endswith("::course-vm-nat"))
    assert nat_urn in run.one(DYNAMIC).dependencies


def test_iap_one_vm_without_student_email_has_no_grant(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    assert run.of_type(TUNNEL_MEMBER) == run.of_type(INSTANCE_MEMBER) == []


def test_iap_one_vm_grants_the_student_email_on_that_instance_only(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path, studentEmail="maria@example.edu"))
    member = run.one(TUNNEL_MEMBER)
    assert member.inputs == {
        "project": "course-project-1",
        "zone": "europe-west1-b",
        "instance": run.outputs["instanceName"],
        "role": "roles/iap.tunnelResourceAccessor",
        "member": "user:maria@example.edu",
    }
    assert member.parent.endswith(f"{STUDENT_VM}::course-vm")


def test_iap_class_grants_each_student_their_own_vm(tmp_path: Path) -> None:
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,alice@example.edu\nbob,bob@example.edu\n")
    run = run_program(iap_config(tmp_path, studentsCsv=str(roster)))
    members = {r.name: r.inputs for r in run.of_type(TUNNEL_MEMBER)}
    assert set(members) == {"course-vm-alice-iap-access", "course-vm-bob-iap-access"}
    for student in ("alice", "bob"):
        granted = members[f"course-vm-{student}-iap-access"]
        assert granted["member"] == f"user:{student}@example.edu"
        assert granted["instance"] == run.outputs["students"][student]["instanceName"]
        assert granted["role"] == "roles/iap.tunnelResourceAccessor"
    assert run.outputs["students"]["alice"]["instanceName"] != run.outputs["students"]["bob"]["instanceName"]


def test_iap_lets_each_student_read_their_own_instance_only(tmp_path: Path) -> None:
    # Older gcloud releases' `start-iap-tunnel INSTANCE` read the instance (compute.instances.get) for its network
    # interface before they open the tunnel, and `gcloud compute ssh --tunnel-through-iap` does: without this grant
    # their tunnel is refused. (gcloud 528 given --zone opens it without reading the instance.)
    roster = tmp_path / "roster.csv"
    roster.write_text("name,email\nalice,alice@example.edu\nbob,bob@example.edu\n")
    run = run_program(iap_config(tmp_path, studentsCsv=str(roster)))
    members = {r.name: r for r in run.of_type(INSTANCE_MEMBER)}
    assert set(members) == {"course-vm-alice-instance-view", "course-vm-bob-instance-view"}
    for student in ("alice", "bob"):
        granted = members[f"course-vm-{student}-instance-view"]
        assert granted.inputs == {
            "project": "course-project-1",
            "zone": "europe-west1-b",
            "instanceName": run.outputs["students"][student]["instanceName"],
            "role": "roles/compute.viewer",
            "member": f"user:{student}@example.edu",
        }
        assert granted.parent.endswith(f"{STUDENT_VM}::course-vm-{student}")


def test_iap_outputs_say_how_to_connect_through_the_tunnel(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    key = tmp_path / "keys" / "course-vm"
    instance = run.outputs["instanceName"]
    pins = f"{key}.dev.known_hosts"
    assert run.outputs["proxyCommand"] == IAP
    assert run.outputs["sshConfig"] == ssh_config_block(
        "course-vm", instance, "student", str(key), pins, proxy_command=IAP
    )
    assert run.outputs["sshCommand"] == (
        f"ssh -i {key} -o UserKnownHostsFile={pins} -o StrictHostKeyChecking=yes "
        f"-o 'ProxyCommand={IAP}' student@{instance}"
    )
    verification = run.one(DYNAMIC).inputs
    assert (verification["host"], verification["proxy_command"]) == (instance, IAP)


def test_the_firewall_graph_is_unchanged_by_iap(tmp_path: Path) -> None:
    old = by_name(run_program(stack_config(tmp_path)))
    assert set(old) == {
        f"{COMPONENT}::course-vm",
        f"{NETWORK}::course-vm-network",
        f"{SUBNET}::course-vm-subnet",
        f"{FIREWALL}::course-vm-ssh",
        f"{STUDENT_VM}::course-vm",
        f"{ADDRESS}::course-vm-ip",
        f"{INSTANCE}::course-vm-vm",
        f"{DYNAMIC}::course-vm-verify",
    }
    assert old[f"{FIREWALL}::course-vm-ssh"].inputs["description"] == "course-vm: SSH from allowedSshCidrs only"
    assert old[f"{DYNAMIC}::course-vm-verify"].inputs["proxy_command"] == ""


SERVICE = "gcp:projects/service:Service"


def test_iap_enables_the_iap_api_and_keeps_it_on_destroy(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path, studentEmail="maria@example.edu"))
    service = run.one(SERVICE)
    assert service.inputs == {"project": "course-project-1", "service": "iap.googleapis.com", "disableOnDestroy": False}
    # The grant is set through the IAP API, and the check's tunnel goes through it.
    for dependent in (run.one(TUNNEL_MEMBER), run.one(DYNAMIC)):
        assert any(urn.endswith("::course-vm-iap-api") for urn in dependent.dependencies), dependent.name


def test_firewall_access_enables_no_api(run: Run) -> None:
    assert run.of_type(SERVICE) == []


@pytest.mark.integration
def test_openssh_reads_the_iap_ssh_command_as_the_host_block(tmp_path: Path) -> None:
    run = run_program(iap_config(tmp_path))
    words = shlex.split(run.outputs["sshCommand"])
    assert words[0] == "ssh"
    out = subprocess.run(
        [require_tool("ssh"), "-G", "-F", "none", *words[1:]], capture_output=True, text=True, check=True
    ).stdout
    seen = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
    assert seen["hostname"] == run.outputs["instanceName"]
    assert seen["proxycommand"] == IAP
    assert seen["userknownhostsfile"] == f"{tmp_path / 'keys' / 'course-vm'}.dev.known_hosts"
    assert seen["user"] == "student"


def test_two_stacks_never_share_a_students_generated_key(tmp_path: Path) -> None:
    # section-a's alex and section-b's alex would get one key (sshKeyPath-alex): each could log in to
    # the other's VM, and `handout` would give the same private key to both.
    from provisioner.access.keys import release_claims

    keys = tmp_path / "keys"
    section_a = run_program(stack_config(tmp_path, students='["alex"]'), stack="section-a")
    assert section_a.outputs["students"]["alex"]["identityFile"] == f"{keys}/course-vm-alex"
    run = Run()
    with pytest.raises(pulumi.RunError) as raised:
        run_program(stack_config(tmp_path, students='["bob", "alex"]'), stack="section-b", run=run)
    assert str(raised.value) == (
        "course-vm settings: 1 problem, nothing was created:\n"
        f"  - {keys}/course-vm-alex is student alex's key of stack section-a; two stacks must not share a "
        "student's key. Fix: pulumi config set sshKeyPath ~/.ssh/course-vm-section-b (a path of this stack's own)"
    )
    assert run.resources == []
    assert not (keys / "course-vm-bob").exists(), "no key is made before the check"
    # A stack of its own keys is fine, and so is section-a again.
    own_path = stack_config(tmp_path, students='["bob", "alex"]', sshKeyPath=str(keys / "course-vm-section-b"))
    section_b = run_program(own_path, stack="section-b")
    assert section_b.outputs["students"]["alex"]["identityFile"] == f"{keys}/course-vm-section-b-alex"
    run_program(stack_config(tmp_path, students='["alex"]'), stack="section-a")
    # Once section-a is gone (`down`), its students' names are free again.
    release_claims("section-a", keys / "course-vm")
    run_program(stack_config(tmp_path, students='["alex"]'), stack="section-c")


def test_the_tests_output_builder_is_what_the_program_exports(tmp_path: Path) -> None:
    # Every other test that needs a stack's outputs takes them from tests/support/outputs.py.
    keys = tmp_path / "keys"
    assert run_program(stack_config(tmp_path)).outputs == one_vm(keys=keys)
    assert run_program(iap_config(tmp_path)).outputs == one_vm(keys=keys, iap=True)
    config = {**stack_config(tmp_path), "course-vm:students": json.dumps(["alice", "bob"])}
    assert run_program(config).outputs == class_outputs("alice", "bob", keys=keys, ip=STATIC_IP)


def test_the_names_and_types_the_driver_reads_are_the_ones_the_program_registers(tmp_path: Path) -> None:
    # provisioner/stack.py names them for the driver, which finds each student's resources by them.
    run = run_program({**stack_config(tmp_path, homeDiskSizeGb="20"), "course-vm:students": json.dumps(["alice"])})
    registered = {(r.type, r.name) for r in run.resources}
    vm = stack.vm_name("alice")
    assert (stack.COURSE_VM_TYPE, stack.COURSE) in registered
    assert (stack.STUDENT_VM_TYPE, vm) in registered
    for type_, role in [
        (stack.INSTANCE_TYPE, stack.INSTANCE_ROLE),
        (stack.ADDRESS_TYPE, stack.ADDRESS_ROLE),
        (stack.HOME_DISK_TYPE, stack.HOME_DISK_ROLE),
        (stack.VERIFICATION_TYPE, stack.VERIFICATION_ROLE),
    ]:
        assert (type_, f"{vm}-{role}") in registered, (type_, role)


def test_the_courses_ports_and_the_agent_reach_the_outputs_and_the_host_block(tmp_path: Path) -> None:
    run = run_program(stack_config(tmp_path, forwardPorts='["3000", "5001:5000"]', forwardAgent="true"))
    keys = tmp_path / "keys"
    assert run.outputs == one_vm(keys=keys, forwards=("3000", "5001:5000"), forward_agent=True)
    assert "    ForwardAgent yes\n    LocalForward localhost:3000 localhost:3000\n" in run.outputs["sshConfig"]
    # Client-side only: the instance's recipe is the one of the defaults.
    assert run.one(INSTANCE).inputs["metadata"] == run_program(stack_config(tmp_path)).one(INSTANCE).inputs["metadata"]
