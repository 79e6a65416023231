"""`local ...`'s options and help: each command of the local QEMU VM, and the function of local.py it runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisioner.checker.checks import DEFAULT_TIMEOUT, NEW_VM_TIMEOUT
from provisioner.cli import arguments
from provisioner.cli.arguments import Commands, add_command
from provisioner.cli.local import (
    local_check,
    local_down,
    local_image_bake,
    local_image_build,
    local_list,
    local_metadata_server,
    local_ssh,
    local_up,
)
from provisioner.local.image import DEBIAN_MIRROR

NAME_HELP = "the local VM's name: several may exist side by side"


def register(commands: Commands) -> None:
    local = add_command(
        commands,
        "local",
        summary="the course VM in a local QEMU VM",
        description="The course VM in a local QEMU VM on Linux, with no cloud account: the same recipe and "
        "checker as on GCE. From a `local image build` image the VM is a GCE twin, which boots as a GCE VM does.",
        examples=[
            "course-vm local up  # boots a VM with the recipe, prints the check table",
            "course-vm local ssh",
            "course-vm local down",
        ],
    ).add_commands("local_command")
    _register_image(local)
    _register_up(local)
    _register_check(local)
    _register_ssh_down_and_list(local)
    _register_metadata_server(local)


def _register_image(local: Commands) -> None:
    image = add_command(
        local,
        "image",
        summary="local VM images",
        description="Local VM images: a Debian 13 GCE twin built with debootstrap, and images baked from it "
        "that boot with the course's system part installed.",
        examples=['sudo "$(command -v course-vm)" local image build', "course-vm local image bake"],
    ).add_commands("image_command")
    build = add_command(
        image,
        "build",
        summary="build a Debian 13 image that boots as on GCE, with debootstrap (needs root); prints its path",
        description="Build a Debian 13 image that boots as a GCE VM does (cloud-init, Google's guest agent) "
        "with debootstrap, into the invoking user's ~/.cache/course-vm/images; prints its directory, for "
        "`local up --image`. It needs root.",
        examples=['sudo "$(command -v course-vm)" local image build'],
    )
    build.add_argument("--mirror", default=DEBIAN_MIRROR, metavar="URL", help="the Debian mirror")
    build.set_defaults(run=local_image_build)
    bake = add_command(
        image,
        "bake",
        summary="bake the course's system part (Docker, docker-compose, Anaconda) into an image, checked, for "
        "`local up --image`; prints its path",
        description="Boot a VM from a `local image build` image that runs the setup's system part, checks it "
        "(docker hello-world as a throwaway user, conda, docker-compose), cleans itself and powers off; its "
        "disk becomes the baked image. A VM from it (`local up --image PATH`) does only the student's part.",
        examples=["course-vm local image bake --set artifactMirrorUrl=http://169.254.2.2:8000"],
    )
    bake.add_argument(
        "--image", type=Path, metavar="PATH", help="the image to bake from (default: the one `local image build` makes)"
    )
    _add_set_option(bake, "as `local up --set`: the releases to bake (e.g. anacondaVersion=..., anacondaSha256=...)")
    _add_vm_options(bake)
    bake.set_defaults(run=local_image_bake)


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_vm_options(parser: argparse.ArgumentParser) -> None:
    """The QEMU options of `local up` and `local image bake`."""
    parser.add_argument(
        "--memory", type=arguments.whole(256, 1 << 20), default=4096, metavar="MB", help="the VM's memory"
    )
    parser.add_argument("--cpus", type=arguments.whole(1, 256), default=2, metavar="N", help="the VM's CPUs")
    parser.add_argument(
        "--disk-size",
        type=arguments.disk_size,
        default="30G",
        metavar="SIZE",
        help="the VM's virtual disk size, sparse",
    )
    parser.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="auto: KVM if it really starts the guest, else software emulation",
    )
    parser.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=NEW_VM_TIMEOUT,
        metavar="SECONDS",
        help="one deadline for booting, logging in and the setup",
    )


def _register_up(local: Commands) -> None:
    up = add_command(
        local,
        "up",
        summary="boot a VM with the course recipe and check it (exit status as `check`)",
        description="Boot a local VM with the course recipe, then check it as `check` checks a GCE VM (its "
        "exit status is the check's), and write its `Host course-vm-local-NAME` entry into "
        "~/.ssh/course-vm.config.",
        examples=[
            "course-vm local up",
            "course-vm local up --name second --set username=alice --home-disk ~/course-home.qcow2",
        ],
    )
    up.add_argument("--name", default="default", help=NAME_HELP)
    up.add_argument(
        "--image",
        type=Path,
        metavar="PATH",
        help="an image from `local image build` or `local image bake`, or a disk image (default: Ubuntu 24.04's "
        "cloud image, downloaded once)",
    )
    _add_set_option(up, "a course-vm setting, as in Pulumi.yaml (e.g. username=alice, artifactMirrorUrl=URL)")
    up.add_argument(
        "--home-disk",
        type=Path,
        metavar="PATH",
        help="keep /home on this disk image (created if missing, homeDiskSizeGb or 10 GB); "
        "`local down` keeps it, so the next VM gets the student's work back",
    )
    _add_vm_options(up)
    up.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    up.set_defaults(run=local_up)


def _register_check(local: Commands) -> None:
    check = add_command(
        local,
        "check",
        summary="check a running local VM again",
        description="Check a running local VM again, as `check` checks a GCE VM (the same exit statuses).",
        examples=["course-vm local check", "course-vm local check --name second --json"],
    )
    check.add_argument("--name", default="default", help=NAME_HELP)
    check.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"as `check --timeout` (default: {DEFAULT_TIMEOUT:.0f}; a VM whose setup runs needs up to "
        f"{NEW_VM_TIMEOUT:.0f})",
    )
    check.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    check.set_defaults(run=local_check)


def _register_ssh_down_and_list(local: Commands) -> None:
    ssh = add_command(
        local,
        "ssh",
        summary="log in to a local VM (host key pinned)",
        description="Log in to a local VM with its host key pinned, or run a command there.",
        examples=["course-vm local ssh", "course-vm local ssh -- docker ps", "course-vm local ssh --print"],
    )
    ssh.add_argument("--name", default="default", help=NAME_HELP)
    ssh.add_argument("--print", action="store_true", help="print the ssh command instead of running it")
    ssh.add_argument("remote_command", nargs="*", metavar="COMMAND", help="a command to run instead of a shell")
    ssh.set_defaults(run=local_ssh)

    down = add_command(
        local,
        "down",
        summary="stop a local VM and remove its files",
        description="Stop a local VM (QEMU and its metadata server) and delete its disk and its ~/.ssh entry; "
        "a --home-disk is kept.",
        examples=["course-vm local down", "course-vm local down --name second"],
    )
    down.add_argument("--name", default="default", help=NAME_HELP)
    down.set_defaults(run=local_down)

    add_command(
        local,
        "list",
        summary="the local VMs",
        description="The local VMs, one a line: name, state, SSH address, accelerator.",
        examples=["course-vm local list"],
    ).set_defaults(run=local_list)


def _register_metadata_server(local: Commands) -> None:
    metadata = add_command(
        local,
        "metadata-server",
        summary="serve a stand-in for GCE's metadata server on 127.0.0.1 until Ctrl-C; prints its URL first",
        description="Serve a stand-in for GCE's metadata server on 127.0.0.1 until Ctrl-C, for trying guest "
        "software against it: an instance whose attributes are the file's JSON object. Its base URL is the "
        "first line printed.",
        examples=["course-vm local metadata-server --attributes attributes.json --port 8080"],
    )
    metadata.add_argument(
        "--attributes",
        type=Path,
        required=True,
        metavar="FILE.json",
        help='the instance attributes, a JSON object of strings, e.g. {"user-data": "#cloud-config\\n..."}',
    )
    metadata.add_argument(
        "--port",
        type=arguments.port_or_any,
        default=0,
        metavar="PORT",
        help="the port to serve on (default: a free one)",
    )
    metadata.set_defaults(run=local_metadata_server)
