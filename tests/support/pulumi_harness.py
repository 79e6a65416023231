"""Runs the Pulumi program (__main__.py) under the SDK's mocks and records every registration.

The mocks stand in for the Pulumi engine and the GCP provider (neither the CLI nor GCP can be
reached here): each resource gets its inputs back as outputs, plus the computed values a real
provider would add (an address for the static IP, a name for the instance).
"""

from __future__ import annotations

import logging
import runpy
from dataclasses import dataclass, field
from typing import Any

import pulumi
from google.protobuf import json_format
from pulumi.runtime import mocks as pulumi_mocks

from tests.conftest import ROOT

SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (Pulumi's marker for a secret value)
SIG_KEY = "4dabf18193072939515e22adb298388d"
STATIC_IP = "34.78.1.2"
NETWORK_IP = "10.42.0.2"
"""The instance's internal address, which GCE assigns from the subnet."""
INSTANCE_ID = "4242424242"
PROJECT_NUMBER = "123456789012"
DISK_LINK_PREFIX = "https://www.googleapis.com/compute/v1/projects/course-project-1/zones/europe-west1-b/disks/"
DYNAMIC = "pulumi-python:dynamic:Resource"
# What the verification would pin (the mocks stand in for the checker's run as well).
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"


@dataclass
class Registration:
    """One resource as the engine saw it: type, name, inputs, options and which inputs are secret."""

    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    replace_on_changes: list[str]
    delete_before_replace: bool
    secret_paths: list[str]
    raw: dict[str, Any]
    retain_on_delete: bool = False
    dependencies: list[str] = field(default_factory=list)


@dataclass
class Run:
    """What one run of the program registered, exported and logged."""

    resources: list[Registration] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def of_type(self, type_: str) -> list[Registration]:
        return [r for r in self.resources if r.type == type_]

    def one(self, type_: str) -> Registration:
        found = self.of_type(type_)
        assert len(found) == 1, f"expected one {type_}, found {len(found)}"
        return found[0]


def _secret_paths(value: Any, path: str = "") -> list[str]:
    if isinstance(value, dict):
        if value.get(SIG_KEY) == SECRET_SIG:
            return [path]
        return [p for k, v in value.items() for p in _secret_paths(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _secret_paths(v, f"{path}[{i}]")]
    return []


IMAGE_LINK_PREFIX = "https://www.googleapis.com/compute/v1/projects/course-project-1/global/images/"


class _Mocks(pulumi.runtime.Mocks):
    def __init__(self, images: dict[str, str] | None = None) -> None:
        self.images = images or {}
        """The images GCE has, by family: each one's description (a baked image's holds its manifest)."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        outputs = dict(args.inputs)
        if args.typ == "gcp:compute/address:Address":
            outputs["address"] = STATIC_IP
        if args.typ in ("gcp:compute/instance:Instance", "gcp:compute/resourcePolicy:ResourcePolicy"):
            outputs.setdefault("name", args.name + "-1a2b3c")  # the engine's auto-name
            outputs["instanceId"] = INSTANCE_ID
        if args.typ == "gcp:compute/router:Router":
            outputs.setdefault("name", args.name + "-1a2b3c")
        if args.typ == "gcp:compute/instance:Instance":
            outputs["networkInterfaces"] = [{**nic, "networkIp": NETWORK_IP} for nic in outputs["networkInterfaces"]]
        if args.typ == "gcp:compute/disk:Disk":
            outputs["selfLink"] = f"{DISK_LINK_PREFIX}{args.name}-1a2b3c"
        if args.typ == "gcp:compute/instance:Instance":
            # GCE names an instance's boot disk after the instance.
            outputs["bootDisk"] = {**outputs["bootDisk"], "source": f"{DISK_LINK_PREFIX}{outputs['name']}"}
        if args.typ == "gcp:compute/image:Image":
            outputs["selfLink"] = f"{IMAGE_LINK_PREFIX}{args.name}-1a2b3c"
        if args.typ == DYNAMIC:
            # Pinned under the name the checker connects to: the address, or under iap the instance name.
            host = outputs.get("host") or STATIC_IP
            outputs.update(
                host_keys=[HOST_KEY], host_key_fingerprint="SHA256:fingerprint", known_hosts=f"{host} {HOST_KEY}"
            )
        outputs.setdefault("id", f"{args.name}-id")
        return f"{args.name}-id", outputs

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        if args.token == "gcp:organizations/getProject:getProject":  # noqa: S105 (an invoke token, not a secret)
            return {"projectId": args.args.get("projectId"), "number": PROJECT_NUMBER}, []
        if args.token == "gcp:compute/getImage:getImage":  # noqa: S105 (an invoke token, not a secret)
            family, project = args.args.get("family"), args.args.get("project")
            if family not in self.images:
                # As the provider answers: a failure with GCE's 404 for a family with no image.
                resource = f"projects/{project}/global/images/family/{family}"
                return {}, [("", f"googleapi: Error 404: The resource '{resource}' was not found, notFound")]
            name = f"{family}-1a2b3c"
            return {
                "name": name,
                "family": family,
                "selfLink": IMAGE_LINK_PREFIX + name,
                "description": self.images[family],
            }, []
        return {}, []


class _Monitor(pulumi_mocks.MockMonitor):
    def __init__(self, run: Run, mocks: _Mocks) -> None:
        super().__init__(mocks)
        self.run = run

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 (the gRPC method's name)
        raw = json_format.MessageToDict(request.object)
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        if request.type != "pulumi:pulumi:Stack":
            self.run.resources.append(
                Registration(
                    type=request.type,
                    name=request.name,
                    inputs=pulumi.runtime.rpc.deserialize_properties_unwrap_secrets(request.object)[0],
                    parent=request.parent,
                    replace_on_changes=list(request.replaceOnChanges),
                    delete_before_replace=request.deleteBeforeReplace,
                    secret_paths=_secret_paths(raw),
                    raw=raw,
                    retain_on_delete=request.retainOnDelete,
                    dependencies=list(request.dependencies),
                )
            )
        return response


class _ListHandler(logging.Handler):
    def __init__(self, sink: list[str]) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record.getMessage())


def run_program(
    config: dict[str, str], stack: str = "dev", run: Run | None = None, images: dict[str, str] | None = None
) -> Run:
    """Run __main__.py with CONFIG (full keys, e.g. `course-vm:diskSizeGb`) and return what it did.

    What is recorded goes into RUN (a new one by default). IMAGES are the image families GCE has (each
    newest image's description). Exceptions the program raises (pulumi.RunError for bad settings) propagate.
    """
    run = Run() if run is None else run
    logger = logging.getLogger(f"course-vm-test-{id(run)}")
    logger.propagate = False
    logger.addHandler(_ListHandler(run.warnings))
    mocks = _Mocks(images)
    pulumi.runtime.set_mocks(
        mocks, project="course-vm", stack=stack, preview=False, logger=logger, monitor=_Monitor(run, mocks)
    )
    pulumi.runtime.set_all_config(config)

    @pulumi.runtime.test  # type: ignore[untyped-decorator]
    def program() -> pulumi.Output[None]:
        module = runpy.run_path(str(ROOT / "__main__.py"), run_name="__pulumi_test__")
        # What __main__.py exports: one VM's outputs, or a class's under `students`; a bake stack's image.
        settings = module["settings"]
        exported: dict[str, Any] = {"project": settings.project}
        if module.get("image_args") is not None:
            image = module["image"]
            exported["family"] = module["image_args"].family
            if image.image is not None:
                exported["image"] = image.image.self_link
            if image.builder_disk is not None:
                exported.update(builderDisk=image.builder_disk, manifest=image.manifest)
            return pulumi.Output.from_input(exported).apply(run.outputs.update)
        course = module["course"]
        if settings.students:
            exported["students"] = {name: vm.outputs() for name, vm in course.vms.items()}
        else:
            exported.update(course.vms[""].outputs())
        return pulumi.Output.from_input(exported).apply(run.outputs.update)

    program()
    return run
