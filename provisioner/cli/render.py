"""`render`: the user-data `pulumi up` would send for a stack, printed without the Pulumi CLI or the cloud."""

from __future__ import annotations

import argparse
import sys

from provisioner.access.keys import ensure_key_pair
from provisioner.cli import arguments
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.cli.console import progress
from provisioner.cli.up_options import UpOptions, config_change, refused
from provisioner.driver.config import StackConfig
from provisioner.driver.workspace import refuse_stack_files_left_in_checkout
from provisioner.errors import CourseVmError, SettingsError
from provisioner.paths import project_dir
from provisioner.recipe.problems import as_given, set_flag_words
from provisioner.recipe.settings import Settings, parse_settings
from provisioner.recipe.user_data import user_data_for


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "render",
        summary="print the cloud-init user-data for a stack's settings (no Pulumi CLI, no cloud calls)",
        description="Print the cloud-init user-data `up` would send for the stack's settings (a class: one "
        "student's), read from its Pulumi.NAME.yaml in the project folder with --set over them (a stack without "
        "one: the defaults and --set), without the Pulumi CLI or the cloud. Like `up`, it creates the key pair "
        "if it is missing; bad settings stop it as they stop `up`.",
        examples=[
            "course-vm render",
            "course-vm render --set username=alice --set autoStopIdleMinutes=0",
            "course-vm render --stack fall --student alice > alice-user-data.yaml",
        ],
    )
    add_stack_option(parser)
    parser.add_argument("--student", default="", metavar="NAME", help="a class stack: whose user-data")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting, over the stack's stored ones (repeatable), as `up --set` takes it, e.g. username=alice",
    )
    parser.set_defaults(run=render)


def rendered_settings(stack: str, pairs: list[str]) -> Settings:
    """The settings to render: the stack's stored settings (its stack file in the project folder) with the
    --set PAIRS over them, checked as `up` checks them; with no stack file, PAIRS over the defaults, checked
    as `local up` checks them (no project, zone or ranges: the user-data needs none).

    Raises SettingsError (each Fix an `up` command, or with no stack file a --set flag) or CourseVmError for a
    stack file that cannot be used."""
    options = UpOptions(sets=arguments.settings_given(pairs))
    refuse_stack_files_left_in_checkout()
    path = project_dir() / f"Pulumi.{stack}.yaml"
    if path.exists() or path.is_symlink():
        stored = StackConfig.from_stack_file(path)
        # As `up --set` would store them: `KEY=` removes a stored key.
        try:
            return config_change(stored, options).applied(stored).settings()
        except SettingsError as error:
            raise refused(stack, error, options.sets) from None
    progress(f"stack {stack} has no settings in {project_dir()} yet: rendering the defaults and --set")
    try:
        given = config_change(StackConfig(), options).applied(StackConfig()).own()
        return parse_settings(given, None, None, for_gcp=False)
    except SettingsError as error:
        words = [p if isinstance(p, str) else p.in_words(set_flag_words) for p in as_given(error)]
        raise SettingsError(words) from None


def render(args: argparse.Namespace) -> int:
    """Print the user-data `pulumi up` would send for the stack, without the Pulumi CLI or the cloud."""
    settings = rendered_settings(args.stack, args.set)
    seats = {seat.name: seat for seat in settings.seats}
    if args.student not in seats:
        names = ", ".join(seats)
        raise CourseVmError(
            f"--student {args.student}: not on the stack's roster. Fix: one of {names}"
            if args.student
            else f"the stack is a class: pass --student NAME (one of {names})"
        )
    seat = seats[args.student]
    key = ensure_key_pair(seat.ssh_key_path, comment=seat.key_comment)
    sys.stdout.write(
        user_data_for(settings, key.public_key, username=seat.username, student_public_key=seat.ssh_public_key)
    )
    return 0
