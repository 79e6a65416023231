"""`image bake`, `image delete`: the class's baked image on GCP, each turned into a typed call of its flow."""

from __future__ import annotations

import argparse
import json

from provisioner.cli import prerequisites
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.cli.bake import bake as run_bake
from provisioner.cli.bake import bake_stack, delete_image
from provisioner.cli.console import confirm, progress
from provisioner.cli.lifecycle import YES_HELP
from provisioner.stack import command


def register(commands: Commands) -> None:
    image = add_command(
        commands,
        "image",
        summary="the class's baked image: every VM boots from it ready (bakedImage)",
        description="A stack's baked image: Docker, docker-compose and Anaconda installed and checked once, "
        "so that every VM of the stack boots from it ready and does only the student's part of the setup.",
        examples=[
            "course-vm image bake --stack fall && pulumi config set bakedImage true --stack fall",
            "course-vm image delete --stack fall",
        ],
    )
    verbs = image.add_commands("image_command")
    bake = add_command(
        verbs,
        "bake",
        summary="bake the stack's settings into an image (Docker, docker-compose, Anaconda), checked",
        description="A builder VM runs the setup's system part with the stack's settings, checks it (docker "
        "hello-world as a throwaway user, conda, docker-compose) and powers off; its disk becomes the image of "
        "family course-vm-STACK, in a stack of its own (STACK-image), and the builder is deleted. With "
        "`pulumi config set bakedImage true`, `up` then boots every VM of the stack from it.",
        examples=[
            "course-vm image bake --stack fall  # once, ~10 minutes; again after a settings or course-vm change",
            "pulumi config set bakedImage true --stack fall",
            "course-vm up --stack fall  # each VM now does only the student's part",
        ],
    )
    add_stack_option(bake)
    bake.add_argument("--yes", action="store_true", help=YES_HELP)
    bake.add_argument("--json", action="store_true", help="print the image, its family and its manifest as JSON")
    bake.set_defaults(run=image_bake)
    delete = add_command(
        verbs,
        "delete",
        summary="delete the stack's baked image (VMs made from it keep running)",
        description="Delete the stack's baked image, after Pulumi's preview and a yes, leaving its stack "
        "(STACK-image) empty. VMs made from the image keep running; an image is billed for its storage "
        "while it exists.",
        examples=["course-vm image delete --stack fall"],
    )
    add_stack_option(delete)
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
