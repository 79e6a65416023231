"""`pulumi up` succeeds only on the checker's verdict: a dynamic resource that verifies the new VM."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import pulumi
import pulumi.dynamic

from provisioner.errors import CourseVmError
from provisioner.paths import PACKAGE_ROOT

_STACK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
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
    "proxy_command",
)


def known_hosts_path(identity_file: str, stack: str) -> Path:
    """The known_hosts file course-vm owns for one VM: `KEY.STACK.known_hosts`, beside its key.

    Per stack: stacks that share a key must not share pins, or destroying one would remove the
    other's. In a class each student has a key of their own (`KEY-STUDENT`), so a file of their own.
    Raises ValueError for a stack name that is not a plain file name.
    """
    if not _STACK.fullmatch(stack):
        raise ValueError(f"stack name {stack!r} cannot be part of a file name")
    return Path(f"{identity_file}.{stack}.known_hosts")


# What the state of a stack may hold, and this module then edits, is checked first: whoever can write
# the state would otherwise choose which of the user's files `down` or an `up` edits or deletes.
_PIN_LINE = re.compile(
    r"(\[[A-Za-z0-9.:-]+\]:[0-9]{1,5}|[A-Za-z0-9.:-]+) (ssh-|ecdsa-sha2-)[a-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}"
)
"""A pin as course-vm writes it: HOST (or [HOST]:PORT), a key type, the key."""
_KNOWN_HOSTS_LINE = re.compile(
    r"(@(cert-authority|revoked) )?[^\s]+ (ssh-|ecdsa-sha2-|sk-)[A-Za-z0-9@.-]+ [A-Za-z0-9+/]+={0,3}( .*)?"
)
"""Any line of a known_hosts file: hashed (`|1|...`) or listed hosts, a marker, a comment after the key.
An authorized_keys line (a key type first) is none."""
_HOST = re.compile(r"[A-Za-z0-9.:-]+")


def _known_hosts_line(line: str) -> bool:
    return line.startswith("#") or bool(_KNOWN_HOSTS_LINE.fullmatch(line))


def _pins_file(path: str) -> Path:
    """PATH, if it is a known_hosts file course-vm writes: named `*.known_hosts`, a regular file (or
    none yet, never a symlink), every line a host key line. Raises CourseVmError otherwise."""
    pins = Path(path)
    problem = None if pins.name.endswith(".known_hosts") else "its name does not end in .known_hosts"
    if problem is None and pins.is_symlink():
        problem = "it is a symlink"
    elif problem is None and pins.exists():
        lines = pins.read_text(errors="replace").splitlines() if pins.is_file() else ["(not a file)"]
        if any(line.strip() and not _known_hosts_line(line.strip()) for line in lines):
            problem = "it holds lines that are not host keys"
    if problem:
        raise CourseVmError(
            f"{path}, named in the stack's state, is not a known_hosts file course-vm wrote ({problem}); it was left "
            "alone. Fix: check who else can write to the stack's Pulumi backend"
        )
    return pins


def move_pins(olds: dict[str, Any], known_hosts_file: str) -> str:
    """Write the pins OLDS verified into KNOWN_HOSTS_FILE and take them out of the file they were in.

    For stacks made when every stack with one key shared `KEY.known_hosts`: no new check is
    needed, for the keys in state are the ones the checker logged in with. Returns the new path.
    """
    from provisioner.files import write_atomically

    target = _pins_file(known_hosts_file)
    old = _pins_file(olds["known_hosts_file"]) if olds.get("known_hosts_file") else None
    lines = olds["known_hosts"].splitlines()
    for line in lines:
        if not _PIN_LINE.fullmatch(line):
            raise CourseVmError(
                f"{line!r}, in the stack's state, is not a host key line; no pin was moved. Fix: check who else can "
                "write to the stack's Pulumi backend"
            )
    write_atomically(target, "".join(line + "\n" for line in lines), 0o644)
    if old is not None:
        forget_host(old, olds["host"], int(olds.get("port", 22)))
    return known_hosts_file


def forget_host(known_hosts_file: Path, host: str, port: int) -> None:
    """Remove HOST's lines from KNOWN_HOSTS_FILE, and the file once no line is left.

    Only the lines of this VM: stacks made before pins were per stack share one file. Raises
    CourseVmError when KNOWN_HOSTS_FILE is not a pins file (see `_pins_file`) or HOST not a host.
    """
    from provisioner.files import write_atomically

    known_hosts_file = _pins_file(str(known_hosts_file))
    if not _HOST.fullmatch(str(host)):
        raise CourseVmError(f"{host!r}, in the stack's state, is not a host; {known_hosts_file} was left alone")
    try:
        lines = known_hosts_file.read_text().splitlines(keepends=True)
    except FileNotFoundError:
        return
    name = host if port == 22 else f"[{host}]:{port}"
    kept = [line for line in lines if line.split(" ", 1)[0] != name]
    if not any(line.strip() for line in kept):
        known_hosts_file.unlink(missing_ok=True)
    elif kept != lines:
        write_atomically(known_hosts_file, "".join(kept), known_hosts_file.stat().st_mode & 0o777)


def verify(props: dict[str, Any]) -> dict[str, Any]:
    """Learn the VM's host keys from GCE, run the checker, pin the keys; the resource's outputs.

    Raises CourseVmError (no login, host key mismatch, bad input) or CheckFailedError with the
    checker's table, which Pulumi shows as the reason the update failed.
    """
    from provisioner.access.ssh import Target
    from provisioner.checker.checks import check_vm
    from provisioner.files import write_atomically
    from provisioner.gcp.compute_api import GceInstance, published_host_keys

    def progress(message: str) -> None:
        print(f"course-vm: {message}", file=sys.stderr, flush=True)

    deadline = time.monotonic() + float(props["timeout_seconds"])
    published = published_host_keys(GceInstance(props["project"], props["zone"], props["instance_name"]), progress)
    target = Target(
        props["host"],
        int(props["port"]),
        props["user"],
        Path(props["identity_file"]),
        published(deadline),
        published,
        props.get("proxy_command") or "",
    )
    report = check_vm(target, max(deadline - time.monotonic(), 60.0), progress)
    if not report.ok:
        raise CourseVmError("the VM is not ready:\n" + report.table())
    # What the checker logged in with: on first boot the guest agent replaces the keys first published.
    host_keys = report.host_keys
    lines = [k.known_hosts_line(target.host, target.port) for k in host_keys]
    known_hosts = Path(props["known_hosts_file"])
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
    # Pulumi starts can then load it without importing this module, and it puts the directory
    # `provisioner` is imported from (a checkout, or site-packages) on sys.path before it imports the checker.
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
            # A prop a stack made before it existed is absent from OLDS: its default, not a change.
            # (Inline, not a module function: the class is pickled by value, see above.)
            defaults = {"proxy_command": ""}

            def prop(props: dict[str, Any], key: str) -> Any:
                value = props.get(key)
                return defaults.get(key) if value is None else value

            replaces = [key for key in REPLACE_ON if prop(olds, key) != prop(news, key)]
            # A new pin file (a stack made before pins were per stack) is an update: the pins move.
            changed = bool(replaces) or any(olds.get(k) != news.get(k) for k in ("timeout_seconds", "known_hosts_file"))
            return pulumi.dynamic.DiffResult(changes=changed, replaces=replaces, delete_before_replace=True)

        def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.UpdateResult:
            # Only the timeout or the pin file changed (anything else replaces): the verdict stands.
            outs = {**olds, "timeout_seconds": news["timeout_seconds"]}
            if news.get("known_hosts_file") != olds.get("known_hosts_file"):
                outs["known_hosts_file"] = self._import().move_pins(olds, news["known_hosts_file"])
            return pulumi.dynamic.UpdateResult(outs=outs)

        def delete(self, _id: str, props: dict[str, Any]) -> None:
            path = props.get("known_hosts_file")
            if path:
                module = self._import()
                try:
                    module.forget_host(Path(path), props["host"], int(props.get("port", 22)))
                except module.CourseVmError as error:
                    # The VM goes all the same: a pin left behind names a VM that no longer exists.
                    print(f"course-vm: warning: {error}", file=sys.stderr, flush=True)

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
        proxy_command: str,
        user: str,
        identity_file: str,
        project: str,
        zone: str,
        instance_name: pulumi.Input[str],
        instance_id: pulumi.Input[str],
        known_hosts_file: str,
        timeout_seconds: float,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(
            VmVerificationProvider(str(PACKAGE_ROOT)),
            name,
            {
                "host": host,
                "port": 22,
                "proxy_command": proxy_command,
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
                "known_hosts_file": known_hosts_file,
                "report": None,
            },
            opts,
        )
