"""`local ...`: the course VM in a local QEMU VM: image, up, check, ssh, down, list, metadata-server."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from provisioner.access.host_keys import HostKey
from provisioner.access.keys import KeyOption, ensure_key_pair
from provisioner.access.ssh import HostKeySource
from provisioner.checker.checks import Report, check_vm
from provisioner.cli import arguments
from provisioner.cli.check import report_with_hint
from provisioner.cli.console import print_report, progress
from provisioner.errors import CourseVmError, InterruptionError, MissingPrerequisiteError, SettingsError
from provisioner.gcp.compute_api import GceInstance, bake_verdict, published_host_keys
from provisioner.local import vm as local_vm
from provisioner.local.bake import bake_image
from provisioner.local.image import Image, build_debian_image, image_at, ubuntu_cloud_image
from provisioner.local.metadata_server import MetadataServer, TwinInstance, random_instance_id
from provisioner.recipe.bake import stale_lines
from provisioner.recipe.metadata import instance_metadata
from provisioner.recipe.problems import as_given, set_flag_words
from provisioner.recipe.settings import Settings, parse_settings
from provisioner.recipe.user_data import GCE_HOME_DISK_DEVICE, image_manifest, user_data_for


def _local_settings(pairs: Sequence[str]) -> Settings:
    """The settings `--set KEY=VALUE` PAIRS give. Raises SettingsError with every problem, worded for --set."""
    try:
        return parse_settings(arguments.settings_given(pairs), None, None, for_gcp=False)
    except SettingsError as error:
        words = [p if isinstance(p, str) else p.in_words(set_flag_words) for p in as_given(error)]
        raise SettingsError(words) from None


SET_SSH_KEY_PATH = KeyOption(
    "sshKeyPath",
    "--set sshKeyPath={}",
    "--set sshKeyPath=~/.ssh/id_ed25519 (a private key), or leave it out to have ~/.ssh/course-vm made",
)
"""`local up --set sshKeyPath=PATH`, as an error about the key names it."""


def local_up(args: argparse.Namespace) -> int:
    """Boot a local VM with the course recipe, then check it like `check` does."""
    started = time.monotonic()
    deadline = started + args.timeout
    local_vm.vm_directory(args.name)  # a bad --name stops it before the key, the home disk or the image
    settings = _local_settings(args.set)
    key = ensure_key_pair(settings.ssh_key_path, comment=f"{settings.username}@course-vm", option=SET_SSH_KEY_PATH)
    home = local_vm.ensure_home_disk(args.home_disk, settings.home_disk_size_gb or 10) if args.home_disk else None
    image = image_at(args.image) if args.image else ubuntu_cloud_image(progress)
    # A GCE twin finds its home disk where GCE puts it, so it runs exactly the user-data GCE gets.
    device = (GCE_HOME_DISK_DEVICE if image.gce else local_vm.LOCAL_HOME_DISK_DEVICE) if home else ""
    # From a baked image the VM does the student's part alone (bakedImage=true on another image: its first step fails).
    baked = image.manifest is not None or settings.baked_image
    stale = (
        stale_lines(image.manifest, image_manifest(settings.anaconda, settings.docker_compose))
        if image.manifest
        else []
    )
    if stale:
        progress(
            "warning: image out of date: bake again (`local image bake`), or its setup fails at once: "
            + "; ".join(stale)
        )
    user_data = user_data_for(settings, key.public_key, home_disk_device=device, baked=baked)
    attributes = instance_metadata(settings.username, key.public_key, user_data)
    vm = _boot(args, image, attributes, settings, home, deadline)
    report = _pin_and_check(args.name, vm, deadline)
    progress(
        f"`ssh {vm.host_alias}` (or `local ssh --name {args.name}`) logs in; "
        f"`local down --name {args.name}` removes the VM and its ssh config entry"
    )
    return print_report(report, args.json)


def _boot(
    args: argparse.Namespace,
    image: Image,
    attributes: dict[str, str],
    settings: Settings,
    home: Path | None,
    deadline: float,
) -> local_vm.LocalVm:
    """The VM `local up` ARGS asks for, booted from IMAGE with the instance metadata ATTRIBUTES, for the
    SETTINGS' user to log in to with their key (and its Host entry's ports); on Ctrl-C, what it started is stopped.

    Raises InterruptionError on Ctrl-C, and what `local_vm.boot` raises.
    """
    try:
        return local_vm.boot(
            args.name,
            image,
            attributes,
            user=settings.username,
            identity=settings.ssh_key_path,
            forwards=tuple(forward.text for forward in settings.forward_ports),
            forward_agent=settings.forward_agent,
            memory_mb=args.memory,
            cpus=args.cpus,
            disk_size=args.disk_size,
            accel=args.accel,
            home_disk=home,
            deadline=deadline,
            progress=progress,
        )
    except KeyboardInterrupt:
        # Mid-boot the VM holds nothing yet (no setup ran, no key pinned) while QEMU holds cores and
        # memory in a session of its own, which Ctrl-C does not reach: stop what this command started.
        try:
            local_vm.down(args.name)
        except OSError as error:
            raise InterruptionError(
                f"interrupted while local VM {args.name} was booting; removing it failed ({error}). "
                f"Fix: `course-vm local down --name {args.name}`"
            ) from None
        raise InterruptionError(
            f"interrupted while local VM {args.name} was booting: stopped it; nothing is left running"
        ) from None


def _pin_and_check(name: str, vm: local_vm.LocalVm, deadline: float) -> Report:
    """The report of the booted VM (called NAME), its host keys pinned first, within DEADLINE.

    Raises InterruptionError on Ctrl-C, leaving the VM running, and what `check_vm` raises.
    """
    try:
        published = pinning(vm)
        keys = published(deadline)
        progress(f"host keys pinned: {keys[0].fingerprint}")
        target = replace(vm.target(), host_keys=keys, published=published)
        return check_vm(target, max(deadline - time.monotonic(), 60.0), progress)
    except KeyboardInterrupt:
        # Booted, the VM runs its setup whatever the checker does; it may be what the user wanted
        # (the check is only the waiting), so it is left running, with the commands to go on.
        raise InterruptionError(
            f"interrupted: the local VM {name} is still running (its setup goes on). "
            f"`course-vm local check --name {name}` checks it again; "
            f"`course-vm local down --name {name}` removes it"
        ) from None


def host_key_source(vm: local_vm.LocalVm) -> HostKeySource:
    """Where a local VM publishes its host keys: a twin in its guest attributes, read through the
    Compute API client that reads a GCE VM's (from the twin's Compute API view); else its console."""
    twin = vm.twin
    if twin is None:
        return vm.console_host_keys
    instance = GceInstance(twin.project, twin.zone, twin.instance)
    return published_host_keys(instance, progress, api=twin.compute_api, token=lambda: twin.token)


def pinning(vm: local_vm.LocalVm) -> HostKeySource:
    """VM's host key source, pinning what it reads at once: what the VM publishes out of band is what
    `local ssh` and plain ssh trust too, and a twin's guest agent replaces its first keys."""
    source = host_key_source(vm)
    pinned = vm.host_keys

    def published(deadline: float) -> tuple[HostKey, ...]:
        nonlocal pinned
        keys = source(deadline)
        if keys != pinned:
            vm.pinned(keys)
            pinned = keys
        return keys

    return published


def local_check(args: argparse.Namespace) -> int:
    vm = local_vm.load(args.name)
    if not vm.running():
        raise CourseVmError(
            f"local VM {args.name!r} is not running. Fix: `local down --name {args.name}`, "
            f"then `local up --name {args.name}`"
        )
    target = replace(vm.target(), published=pinning(vm))
    return report_with_hint(check_vm(target, args.timeout, progress), args.json)


def local_ssh(args: argparse.Namespace) -> int:
    command = local_vm.load(args.name).ssh_command() + list(args.remote_command)
    if args.print:
        print(shlex.join(command))
        return 0
    if shutil.which(command[0]) is None:
        raise MissingPrerequisiteError(
            f"{command[0]} is not installed. Fix: install the OpenSSH client (sudo apt-get install openssh-client), "
            f"or log in with another client: {shlex.join(command)}"
        )
    os.execvp(command[0], command)  # noqa: S606 (replaces this process with ssh, by design)


def local_down(args: argparse.Namespace) -> int:
    if not local_vm.down(args.name, progress):
        raise CourseVmError(f"no local VM named {args.name!r}")
    print(f"removed local VM {args.name}")
    return 0


NO_LOCAL_VMS = "no local VMs. Create one: course-vm local up"
"""What `local list` says when there is none, as `status` says of a stack without VMs."""


def local_list(_args: argparse.Namespace) -> int:
    """One line per local VM (name, state, login, accelerator); a line saying how to make one if there is none."""
    names = local_vm.names()
    if not names:
        print(NO_LOCAL_VMS)
    for name in names:
        vm = local_vm.load(name)
        state = "running" if vm.running() else "stopped"
        print(f"{name}\t{state}\t{vm.user}@127.0.0.1:{vm.ssh_port}\t{vm.accel}")
    return 0


def local_image_build(args: argparse.Namespace) -> int:
    image = build_debian_image(progress, mirror=args.mirror)
    print(image.disk.parent)
    return 0


def bake_verdict_of(vm: local_vm.LocalVm, deadline: float) -> str:
    """What the bake's twin VM published in its guest attribute course-vm/bake, read through the Compute API
    client that reads a GCE builder's."""
    twin = vm.twin
    if twin is None:
        raise CourseVmError("the bake's VM is no GCE twin: it has no metadata server to report through")
    instance = GceInstance(twin.project, twin.zone, twin.instance)
    return bake_verdict(instance, deadline, progress, api=twin.compute_api, token=lambda: twin.token, poll_seconds=2)


def local_image_bake(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    settings = _local_settings(args.set)  # before the image is built or the VM booted
    base = image_at(args.image) if args.image else build_debian_image(progress)
    try:
        image = bake_image(
            base, settings, bake_verdict_of, deadline=deadline, memory_mb=args.memory, cpus=args.cpus,
            disk_size=args.disk_size, accel=args.accel, progress=progress,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise InterruptionError("interrupted: the bake's VM was stopped and removed; nothing was kept") from None
    print(image.disk.parent)
    return 0


_JSON_TYPES = {bool: "true/false", int: "a number", float: "a number", list: "a list", dict: "an object"}


def _read_attributes(path: Path) -> dict[str, str]:
    """The instance attributes in the JSON file PATH. Raises CourseVmError, naming every key whose value is
    not a string (GCE's metadata values are all strings)."""
    try:
        document = json.loads(path.read_text())
    except OSError as error:
        raise CourseVmError(f"--attributes {path}: cannot read it ({error.strerror})") from None
    except ValueError as error:
        raise CourseVmError(f"--attributes {path}: not JSON ({error})") from None
    if not isinstance(document, dict):
        raise CourseVmError(
            f"--attributes {path}: expected a JSON object of names and string values, "
            f"got {_JSON_TYPES.get(type(document), 'null')}"
        )
    bad = [
        f"{key!r} is {_JSON_TYPES.get(type(value), 'null')}"
        for key, value in document.items()
        if not isinstance(value, str)
    ]
    if bad:
        raise CourseVmError(
            f"--attributes {path}: every value must be a string, as in GCE's metadata: {'; '.join(bad)}. "
            'Fix: quote them, e.g. "enable-oslogin": "FALSE"'
        )
    return document


def local_metadata_server(args: argparse.Namespace) -> int:
    """Serve a twin instance with the attributes of --attributes until interrupted."""
    twin = TwinInstance(
        name="course-vm-twin", instance_id=random_instance_id(), attributes=_read_attributes(args.attributes)
    )
    try:
        server = MetadataServer(twin, port=args.port, log=progress)
    except OSError as error:
        raise CourseVmError(
            f"cannot serve on 127.0.0.1:{args.port} ({error.strerror}). Fix: choose another --port, or leave it out"
        ) from None
    # Ctrl-C ends it: the server closes (answering any held request), then the command exits 0.
    with contextlib.suppress(KeyboardInterrupt), server:
        print(server.url, flush=True)
        progress(
            f"serving instance {twin.name} (project {twin.project_id}, zone {twin.zone}); its Compute API view: "
            f"{server.compute_api} with the header `Authorization: Bearer {server.token}`. Ctrl-C stops it"
        )
        threading.Event().wait()
    return 0
