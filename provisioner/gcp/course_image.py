"""The course image (`image bake`): a builder VM bakes the recipe's system part, and its disk becomes an image."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
from pulumi_gcp import compute

from provisioner.errors import CourseVmError
from provisioner.gcp.bake_check import BakeCheck
from provisioner.gcp.student_vm import label_value
from provisioner.recipe.bake import render_bake_user_data
from provisioner.recipe.metadata import USER_DATA, bake_metadata
from provisioner.recipe.settings import Settings
from provisioner.stack import COURSE_IMAGE_TYPE, IMAGE_NAMESPACE, command

BUILD, CAPTURE, KEEP = "build", "capture", "keep"
"""The bake's phases: the builder runs and is checked; its disk becomes the image and the builder goes;
only the image is kept (after a failed bake)."""
BUILDER_SUBNET = "10.43.0.0/24"
DESCRIPTION_PREFIX = "course-vm baked image; holds: "
BUILDER_TIMEOUT_SECONDS = 3600


def image_family(stack: str) -> str:
    """The image family the bake for the class stack STACK makes, and its VMs boot from: `course-vm-STACK`."""
    return label_value(f"course-vm-{stack}").replace("_", "-")[:63].rstrip("-")


def image_description(manifest: str) -> str:
    """The image's description: its manifest, one `; `-separated line (labels cannot hold a checksum)."""
    return DESCRIPTION_PREFIX + "; ".join(manifest.splitlines())


def manifest_of(description: str) -> str:
    """The manifest in an image's DESCRIPTION; "" for an image course-vm did not bake."""
    if not description.startswith(DESCRIPTION_PREFIX):
        return ""
    return "\n".join(description[len(DESCRIPTION_PREFIX) :].split("; "))


@dataclass(frozen=True)
class BakedImage:
    """The newest image of a class's family: what its VMs boot from, and what it holds."""

    self_link: str
    manifest: str


def newest_baked_image(project: str, stack: str) -> BakedImage:
    """The newest image of STACK's family in PROJECT. Raises CourseVmError when there is none."""
    family = image_family(stack)
    try:
        found = compute.get_image(family=family, project=project)
    except Exception as error:
        reason = (str(error).strip().splitlines() or ["no answer"])[-1]
        raise CourseVmError(
            f"bakedImage is true, but project {project} has no image of family {family} ({reason}). Fix: "
            f"`{command('image bake', stack)}` first, or set bakedImage to false"
        ) from None
    return BakedImage(found.self_link, manifest_of(found.description or ""))


@dataclass(frozen=True)
class CourseImageArgs:
    """What the bake is made from: the class's settings, the bake's user-data and where the bake stands."""

    settings: Settings
    user_data: str
    """The bake's `#cloud-config` (recipe.bake.render_bake_user_data); stored in state only as a secret."""
    family: str
    phase: str
    """BUILD, CAPTURE or KEEP."""
    source_disk: str = ""
    """The disk the image is made of: in CAPTURE the new builder's; else the one the kept image was made
    of ("" before the first bake)."""
    manifest: str = ""
    """What that disk holds, as its bake's check found it."""
    bake: str = ""
    """This bake's own mark: each bake gets a builder of its own, never one an interrupted bake left."""


class CourseImage(pulumi.ComponentResource):
    """The class's image: a builder VM on a network of its own with no way in (it needs none: nobody logs
    in; it downloads, then reports in a guest attribute), checked by a BakeCheck; then an image of its disk
    in the class's family, which stays until `course-vm image delete`."""

    builder_disk: pulumi.Output[str] | None
    """The builder's boot disk (BUILD); None otherwise."""
    manifest: pulumi.Output[str] | None
    """What the builder's disk holds, as its check found it (BUILD); None otherwise."""
    image: compute.Image | None
    """The image, once a bake was captured; None before."""

    def __init__(self, name: str, args: CourseImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(COURSE_IMAGE_TYPE, name, None, opts)
        s = args.settings
        self.builder_disk = self.manifest = None
        if args.phase == BUILD:
            self.builder_disk, self.manifest = self._builder(name, s, args.user_data, args.bake)
        self.image = None
        if args.source_disk:
            self.image = compute.Image(
                f"{name}-image",
                project=s.project,
                family=args.family,
                source_disk=args.source_disk,
                description=image_description(args.manifest),
                labels=_image_labels(args),
                opts=pulumi.ResourceOptions(parent=self),
            )
        outputs: dict[str, object] = {"family": args.family}
        if self.image is not None:
            outputs["image"] = self.image.self_link
        if self.builder_disk is not None and self.manifest is not None:
            outputs |= {"builderDisk": self.builder_disk, "manifest": self.manifest}
        self.register_outputs(outputs)

    def _builder(
        self, name: str, s: Settings, user_data: str, bake: str
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        """The builder VM, its network and its check: the builder's disk and what it holds, once checked."""
        child = pulumi.ResourceOptions(parent=self)
        network = compute.Network(
            f"{name}-network",
            project=s.project,
            auto_create_subnetworks=False,
            description="course-vm: the bake's builder VM; no firewall rule lets anything in",
            opts=child,
        )
        subnet = compute.Subnetwork(
            f"{name}-subnet", project=s.project, region=s.region, network=network.id, ip_cidr_range=BUILDER_SUBNET,
            opts=child,
        )  # fmt: skip
        metadata = bake_metadata(user_data)
        builder = compute.Instance(
            f"{name}-builder",
            project=s.project,
            zone=s.zone,
            machine_type=s.machine_type,
            boot_disk=compute.InstanceBootDiskArgs(
                auto_delete=True,
                initialize_params=compute.InstanceBootDiskInitializeParamsArgs(
                    image=s.image, size=s.disk_size_gb, type="pd-balanced"
                ),
            ),
            # An ephemeral external address, for the downloads; no firewall rule admits anything to it.
            network_interfaces=[
                compute.InstanceNetworkInterfaceArgs(
                    subnetwork=subnet.id, access_configs=[compute.InstanceNetworkInterfaceAccessConfigArgs()]
                )
            ],
            metadata={k: pulumi.Output.secret(v) if k == USER_DATA else v for k, v in metadata.items()},
            labels={"managed-by": "course-vm", "course-vm-role": "builder", "course-vm-bake": label_value(bake)},
            shielded_instance_config=compute.InstanceShieldedInstanceConfigArgs(
                enable_secure_boot=True, enable_vtpm=True, enable_integrity_monitoring=True
            ),
            # No service account: the bake needs no Google API.
            allow_stopping_for_update=True,
            description="course-vm: the bake's builder VM; it powers itself off when done",
            # A new bake (its mark) or recipe: a new builder, and so a new check, never one left powered off.
            opts=pulumi.ResourceOptions(
                parent=self, replace_on_changes=['labels["course-vm-bake"]', 'metadata["user-data"]']
            ),
        )
        check = BakeCheck(
            f"{name}-check",
            project=s.project,
            zone=s.zone,
            instance_name=builder.name,
            instance_id=builder.instance_id,
            timeout_seconds=BUILDER_TIMEOUT_SECONDS,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[builder]),
        )
        return builder.boot_disk.source, check.manifest


def _image_labels(args: CourseImageArgs) -> dict[str, str]:
    """The image's labels: who made it, for which class, and what it holds (checksums are in its description)."""
    held = {line.split(" ", 1)[0]: line.split(" ") for line in args.manifest.splitlines()}
    labels = {
        "managed-by": "course-vm",
        "course-vm-family": args.family,
        "base-image": label_value(args.settings.image),
    }
    for kind in ("recipe", "anaconda", "docker-compose"):
        if len(held.get(kind, [])) > 1:
            labels[f"course-vm-{kind}"] = label_value(held[kind][1])
    return labels


KEYS = frozenset({"phase", "family", "bake", "sourceDisk", "manifest", "builderDisk", "builderManifest"})
"""The keys `image bake` writes in the bake stack's IMAGE_NAMESPACE (see docs/reference.md, "Baked images")."""
_BAKE = re.compile(r"([0-9]{8}T[0-9]{6}Z)?")
_FAMILY = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DISK = re.compile(r"(https://www\.googleapis\.com/compute/v1/)?projects/[a-z0-9-]+/zones/[a-z0-9-]+/disks/[a-z0-9-]+")


def bake_args(settings: Settings, config: Mapping[str, object]) -> CourseImageArgs:
    """The CourseImage a bake stack's CONFIG (its `course-vm-image:` keys, as `image bake` sets them) asks for.

    Raises CourseVmError naming each key whose value is not one `image bake` writes: the stack's config
    chooses which disk becomes an image.
    """
    values = {key: str(value) for key, value in config.items()}
    phase, family, bake = values.get("phase", ""), values.get("family", ""), values.get("bake", "")
    source_disk, manifest = values.get("sourceDisk", ""), values.get("manifest", "")
    if phase == CAPTURE:
        source_disk, manifest = values.get("builderDisk", ""), values.get("builderManifest", "")
    problems = [f"unknown key {key}" for key in sorted(set(values) - KEYS)]
    if phase not in (BUILD, CAPTURE, KEEP):
        problems.append(f"phase {phase!r} is not {BUILD}, {CAPTURE} or {KEEP}")
    if not _FAMILY.fullmatch(family):
        problems.append(f"family {family!r} is not an image family name")
    for key in ("sourceDisk", "builderDisk"):
        if values.get(key) and not _DISK.fullmatch(values[key]):
            problems.append(f"{key} {values[key]!r} is not a disk of a project's zone")
    if phase == CAPTURE and not (source_disk and manifest):
        problems.append("phase capture needs builderDisk and builderManifest")
    if not _BAKE.fullmatch(bake):
        problems.append(f"bake {bake!r} is not a bake's mark")
    if problems:
        raise CourseVmError(
            f"the bake stack's {IMAGE_NAMESPACE} config is not what `image bake` writes: " + "; ".join(problems)
            + ". Fix: run `course-vm image bake` again rather than setting these keys by hand"
        )  # fmt: skip
    user_data = render_bake_user_data(settings) if phase == BUILD else ""
    return CourseImageArgs(settings, user_data, family, phase, source_disk, manifest, bake)
