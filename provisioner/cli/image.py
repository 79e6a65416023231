"""`image bake`, `image delete`: the class's baked image on GCP, each turned into a typed call of its flow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from provisioner.cli import prerequisites
from provisioner.cli.bake import bake as run_bake
from provisioner.cli.bake import bake_stack, delete_image
from provisioner.cli.console import confirm, progress
from provisioner.cli.lifecycle import YES_HELP
from provisioner.stack import DEFAULT_STACK, command


def register(commands: argparse._SubParsersAction[Any]) -> None:
    image = commands.add_parser("image", help="the class's baked image: every VM boots from it ready (bakedImage)")
    verbs = image.add_subparsers(dest="image_command", required=True)
    bake = verbs.add_parser(
        "bake",
        help="bake the stack's settings into an image (Docker, docker-compose, Anaconda), checked",
        description="A builder VM runs the setup's system part with the stack's settings, checks it (docker "
        "hello-world as a throwaway user, conda, docker-compose) and powers off; its disk becomes the image of "
        "family course-vm-STACK, in a stack of its own (STACK-image), and the builder is deleted. With "
        "`pulumi config set bakedImage true`, `up` then boots every VM of the stack from it.",
        epilog="example: course-vm image bake --stack fall && pulumi config set bakedImage true --stack fall "
        "&& course-vm up --stack fall",
    )
    bake.add_argument("--stack", default=DEFAULT_STACK, help="the class's stack, whose settings are baked")
    bake.add_argument("--yes", action="store_true", help=YES_HELP)
    bake.add_argument("--json", action="store_true", help="print the image, its family and its manifest as JSON")
    bake.set_defaults(run=image_bake)
    delete = verbs.add_parser("delete", help="delete the stack's baked image (VMs made from it keep running)")
    delete.add_argument("--stack", default=DEFAULT_STACK)
    delete.add_argument("--yes", action="store_true", help=YES_HELP)
    delete.set_defaults(run=image_delete)


def image_bake(args: argparse.Namespace) -> int:
    prerequisites.check(args.stack, verb="image bake")
    baked = run_bake(args.stack, ask=lambda question: _ask(question, args.yes), on_output=progress)
    if args.json:
        print(json.dumps({"image": baked.image, "family": baked.family, "manifest": baked.manifest.splitlines()}))
    else:
        print(
            f"Baked {baked.image.rsplit('/', 1)[-1]} (family {baked.family}). Boot the stack's VMs from it: "
            f"`pulumi config set bakedImage true --stack {args.stack}`, then `{command('up', args.stack)}`"
        )
    return 0


def image_delete(args: argparse.Namespace) -> int:
    prerequisites.check(args.stack, verb="image delete")
    if delete_image(args.stack, ask=lambda question: _ask(question, args.yes), on_output=progress):
        print(f"Deleted the baked image of stack {args.stack} (stack {bake_stack(args.stack)} is empty now).")
    else:
        print(f"Stack {args.stack} has no baked image: nothing to delete.")
    return 0


def _ask(question: str, assume_yes: bool) -> bool:
    print(question, flush=True)
    return confirm("Proceed?", assume_yes=assume_yes)
