"""`pulumi up` succeeds only on the checker's verdict: a dynamic resource that verifies the new VM."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

from provisioner.paths import PROJECT_DIR

CHECKER_VERSION = "1"
"""Bump when the checks change: Pulumi does not notice changed provider code by itself."""
# A change to any of these runs the checker again (on a new resource, so a failure never hides).
REPLACE_ON = (
    "host",
    "port",
    "user",
    "identity_file",
    "project",
    "zone",
    "instance_name",
    "instance_id",
    "checker_version",
)


def known_hosts_path(identity_file: str) -> Path:
    """The known_hosts file course-vm owns for a key: `KEY.known_hosts`, beside the key."""
    return Path(identity_file + ".known_hosts")


def verify(props: dict[str, Any]) -> dict[str, Any]:
    """Learn the VM's host keys from GCE, run the checker, pin the keys; the resource's outputs.

    Raises CourseVmError (no login, host key mismatch, bad input) or CheckFailedError with the
    checker's table, which Pulumi shows as the reason the update failed.
    """
    from provisioner.access.ssh import Target
    from provisioner.access.ssh_config import write_atomically
    from provisioner.checker.checks import check_vm
    from provisioner.errors import CourseVmError
    from provisioner.gcp.compute_api import GceInstance, published_host_keys

    def progress(message: str) -> None:
        print(f"course-vm: {message}", file=sys.stderr, flush=True)

    deadline = time.monotonic() + float(props["timeout_seconds"])
    published = published_host_keys(GceInstance(props["project"], props["zone"], props["instance_name"]), progress)
    target = Target(
        props["host"], int(props["port"]), props["user"], Path(props["identity_file"]), published(deadline), published
    )
    report = check_vm(target, max(deadline - time.monotonic(), 60.0), progress)
    if not report.ok:
        raise CourseVmError("the VM is not ready:\n" + report.table())
    # What the checker logged in with: on first boot the guest agent replaces the keys first published.
    host_keys = report.host_keys
    lines = [k.known_hosts_line(target.host, target.port) for k in host_keys]
    known_hosts = known_hosts_path(props["identity_file"])
    write_atomically(known_hosts, "".join(line + "\n" for line in lines), 0o644)
    return {
        **props,
        "host_keys": [str(k) for k in host_keys],
        "host_key_fingerprint": host_keys[0].fingerprint,
        "known_hosts": "\n".join(lines),
        "known_hosts_file": str(known_hosts),
        "report": json.dumps(report.as_json()),
    }


def _provider_class() -> Any:
    # Defined inside a function so that dill pickles the class by value: the provider process that
    # Pulumi starts can then load it without importing this module, and it puts the project
    # directory on sys.path before it imports the checker.
    class VmVerificationProvider(pulumi.dynamic.ResourceProvider):
        def __init__(self, project_dir: str) -> None:
            self.project_dir = project_dir

        def _import(self) -> Any:
            if self.project_dir not in sys.path:
                sys.path.insert(0, self.project_dir)
            import provisioner.gcp.verification

            return provisioner.gcp.verification

        def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
            outputs = self._import().verify(props)
            return pulumi.dynamic.CreateResult(id_=f"{props['instance_id']}-verified", outs=outputs)

        def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
            replaces = [key for key in REPLACE_ON if olds.get(key) != news.get(key)]
            changed = bool(replaces) or olds.get("timeout_seconds") != news.get("timeout_seconds")
            return pulumi.dynamic.DiffResult(changes=changed, replaces=replaces, delete_before_replace=True)

        def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
            # Only the timeout changed (anything else replaces): the verdict stands.
            return pulumi.dynamic.UpdateResult(outs={**olds, "timeout_seconds": news["timeout_seconds"]})

        def delete(self, _id: str, props: dict[str, Any]) -> None:
            path = props.get("known_hosts_file")
            if path:
                Path(path).unlink(missing_ok=True)

    return VmVerificationProvider


VmVerificationProvider = _provider_class()


class VmVerification(pulumi.dynamic.Resource):
    """Runs the checker against a new VM; `pulumi up` fails with its diagnosis if the VM is not right.

    Only the key's path enters state, never the key. Outputs pin the VM's host keys.
    """

    host_keys: pulumi.Output[list[str]]
    host_key_fingerprint: pulumi.Output[str]
    known_hosts: pulumi.Output[str]
    known_hosts_file: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        host: pulumi.Input[str],
        user: str,
        identity_file: str,
        project: str,
        zone: str,
        instance_name: pulumi.Input[str],
        instance_id: pulumi.Input[str],
        timeout_seconds: float,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            VmVerificationProvider(str(PROJECT_DIR)),
            name,
            {
                "host": host,
                "port": 22,
                "user": user,
                "identity_file": identity_file,
                "project": project,
                "zone": zone,
                "instance_name": instance_name,
                "instance_id": instance_id,
                "timeout_seconds": timeout_seconds,
                "checker_version": CHECKER_VERSION,
                "host_keys": None,
                "host_key_fingerprint": None,
                "known_hosts": None,
                "known_hosts_file": None,
                "report": None,
            },
            opts,
        )
