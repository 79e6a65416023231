"""`local ...`'s options and help: each command of the local QEMU VM, and the function of local.py it runs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from provisioner.checker.checks import DEFAULT_TIMEOUT, NEW_VM_TIMEOUT
from provisioner.cli import arguments
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


def register(commands: argparse._SubParsersAction[Any]) -> None:
    local = commands.add_parser("local", help="the course VM in a local QEMU VM").add_subparsers(
        dest="local_command", required=True
    )
    _register_image(local)
    _register_up(local)
    _register_check(local)
    _register_ssh_down_and_list(local)
    _register_metadata_server(local)


def _register_image(local: argparse._SubParsersAction[Any]) -> None:
    image = local.add_parser("image", help="local VM images").add_subparsers(dest="image_command", required=True)
    build = image.add_parser(
        "build", help="build a Debian 13 image that boots as on GCE, with debootstrap (needs root); prints its path"
    )
    build.add_argument("--mirror", default=DEBIAN_MIRROR, help=f"Debian mirror (default {DEBIAN_MIRROR})")
    build.set_defaults(run=local_image_build)
    bake = image.add_parser(
        "bake",
        help="bake the course's system part (Docker, docker-compose, Anaconda) into an image, checked, for "
        "`local up --image`; prints its path",
        description="Boot a VM from a `local image build` image that runs the setup's system part, checks it "
        "(docker hello-world as a throwaway user, conda, docker-compose), cleans itself and powers off; its "
        "disk becomes the baked image. A VM from it (`local up --image PATH`) does only the student's part.",
        epilog="example: course-vm local image bake --set artifactMirrorUrl=http://169.254.2.2:8000",
    )
    bake.add_argument("--image", type=Path, help="the image to bake from (default: the one `local image build` makes)")
    _add_set_option(bake, "as `local up --set`: the releases to bake (e.g. anacondaVersion=..., anacondaSha256=...)")
    _add_vm_options(bake)
    bake.set_defaults(run=local_image_bake)


def _add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def _add_vm_options(parser: argparse.ArgumentParser) -> None:
    """The QEMU options of `local up` and `local image bake`."""
    parser.add_argument("--memory", type=arguments.whole(256, 1 << 20), default=4096, metavar="MB")
    parser.add_argument("--cpus", type=arguments.whole(1, 256), default=2)
    parser.add_argument(
        "--disk-size", type=arguments.disk_size, default="30G", help="virtual disk size (default 30G; sparse)"
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
        help=f"one deadline for booting, logging in and the setup (default {NEW_VM_TIMEOUT:.0f})",
    )


def _register_up(local: argparse._SubParsersAction[Any]) -> None:
    up = local.add_parser("up", help="boot a VM with the course recipe and check it (exit status as `check`)")
    up.add_argument("--name", default="default", help="several VMs may exist side by side (default: default)")
    up.add_argument(
        "--image",
        type=Path,
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
    up.add_argument("--json", action="store_true")
    up.set_defaults(run=local_up)


def _register_check(local: argparse._SubParsersAction[Any]) -> None:
    check = local.add_parser("check", help="check a running local VM again")
    check.add_argument("--name", default="default")
    check.add_argument(
        "--timeout",
        type=arguments.seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"as `check --timeout` (default {DEFAULT_TIMEOUT:.0f}; a VM whose setup runs needs up to "
        f"{NEW_VM_TIMEOUT:.0f})",
    )
    check.add_argument("--json", action="store_true")
    check.set_defaults(run=local_check)


def _register_ssh_down_and_list(local: argparse._SubParsersAction[Any]) -> None:
    ssh = local.add_parser("ssh", help="log in to a local VM (host key pinned)")
    ssh.add_argument("--name", default="default")
    ssh.add_argument("--print", action="store_true", help="print the ssh command instead of running it")
    ssh.add_argument("remote_command", nargs="*", metavar="COMMAND", help="a command to run instead of a shell")
    ssh.set_defaults(run=local_ssh)

    down = local.add_parser("down", help="stop a local VM and remove its files")
    down.add_argument("--name", default="default")
    down.set_defaults(run=local_down)

    local.add_parser("list", help="the local VMs").set_defaults(run=local_list)


def _register_metadata_server(local: argparse._SubParsersAction[Any]) -> None:
    metadata = local.add_parser(
        "metadata-server",
        help="serve a stand-in for GCE's metadata server on 127.0.0.1 until Ctrl-C; prints its URL first",
    )
    metadata.add_argument(
        "--attributes",
        type=Path,
        required=True,
        metavar="FILE.json",
        help='the instance attributes, a JSON object of strings, e.g. {"user-data": "#cloud-config\\n..."}',
    )
    metadata.add_argument(
        "--port", type=arguments.port_or_any, default=0, help="the port to serve on (default: a free one)"
    )
    metadata.set_defaults(run=local_metadata_server)
