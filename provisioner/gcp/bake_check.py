"""The bake's verdict as a dynamic resource: the builder's check, read from its guest attribute, then its power-off."""

from __future__ import annotations

import sys
import time
from typing import Any

import pulumi
import pulumi.dynamic

from provisioner.paths import PACKAGE_ROOT

BAKE_CHECK_VERSION = "1"
"""Bump when the check changes: Pulumi does not notice changed provider code by itself."""


def check_bake(props: dict[str, Any]) -> dict[str, Any]:
    """Wait for the builder's verdict and for it to power off; the resource's outputs (the image's manifest).

    Raises CourseVmError with the failed step's lines when the bake failed, UnreachableError when there is
    no verdict, or no power-off, before the timeout.
    """
    from provisioner.errors import CourseVmError, UnreachableError
    from provisioner.gcp.compute_api import GceInstance, bake_verdict
    from provisioner.gcp.instance_power import instance_status
    from provisioner.recipe.bake import parse_verdict

    def progress(message: str) -> None:
        print(f"course-vm: {message}", file=sys.stderr, flush=True)

    deadline = time.monotonic() + float(props["timeout_seconds"])
    instance = GceInstance(props["project"], props["zone"], props["instance_name"])
    passed, detail = parse_verdict(bake_verdict(instance, deadline, progress))
    if not passed:
        raise CourseVmError("the bake failed: " + (" | ".join(detail.splitlines()) or "no step output"))
    progress("the bake passed its check; waiting for the builder to clean itself and power off")
    # Its disk becomes the image: only once the VM has written all of it and stopped.
    while (status := instance_status(instance)) != "TERMINATED":
        if time.monotonic() >= deadline:
            raise UnreachableError(f"the builder {instance.name} is still {status}: it did not power off in time")
        time.sleep(5)
    return {**props, "manifest": detail}


def _provider_class() -> Any:
    # Inside a function so that dill pickles the class by value (see verification.py).
    class BakeCheckProvider(pulumi.dynamic.ResourceProvider):
        def __init__(self, project_dir: str) -> None:
            self.project_dir = project_dir

        def _import(self) -> Any:
            if self.project_dir not in sys.path:
                sys.path.insert(0, self.project_dir)
            import provisioner.gcp.bake_check

            return provisioner.gcp.bake_check

        def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
            outputs = self._import().check_bake(props)
            return pulumi.dynamic.CreateResult(id_=f"{props['instance_id']}-baked", outs=outputs)

        def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
            keys = ("project", "zone", "instance_name", "instance_id", "check_version")
            replaces = [key for key in keys if olds.get(key) != news.get(key)]
            return pulumi.dynamic.DiffResult(changes=bool(replaces), replaces=replaces, delete_before_replace=True)

    return BakeCheckProvider


BakeCheckProvider = _provider_class()


class BakeCheck(pulumi.dynamic.Resource):
    """The builder's verdict: `pulumi up` fails with its failed step's lines unless the bake passed its
    check, and ends only once the builder has powered off."""

    manifest: pulumi.Output[str]
    """What the baked disk holds, as the builder wrote it (recipe.user_data.image_manifest)."""

    def __init__(
        self,
        name: str,
        *,
        project: str,
        zone: str,
        instance_name: pulumi.Input[str],
        instance_id: pulumi.Input[str],
        timeout_seconds: float,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            BakeCheckProvider(str(PACKAGE_ROOT)),
            name,
            {
                "project": project,
                "zone": zone,
                "instance_name": instance_name,
                "instance_id": instance_id,
                "timeout_seconds": timeout_seconds,
                "check_version": BAKE_CHECK_VERSION,
                "manifest": None,
            },
            opts,
        )
