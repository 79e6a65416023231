"""`handout`: one folder per student of a class, with what they need to reach their VM from their own machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from provisioner.access.handout import (
    Handout,
    HandoutError,
    build_handout,
    cannot_write,
    own_out_folder,
    write_handout,
)
from provisioner.access.keys import key_claims
from provisioner.access.ssh_config import host_alias
from provisioner.cli.arguments import Commands, add_command, add_stack_option
from provisioner.cli.console import confirm
from provisioner.driver.session import StackSession
from provisioner.errors import CourseVmError, DeclinedError
from provisioner.stack import VmOutputs


def register(commands: Commands) -> None:
    parser = add_command(
        commands,
        "handout",
        summary="write one folder per student: their ssh entry, their VM's pinned host keys, and their key if "
        "course-vm made it",
        description="Write DIR/NAME/ for each student of a class stack (or those named by --student), from the "
        "stack's outputs: their ssh Host entry, their VM's pinned host keys, and their private key if "
        "course-vm made it. Nothing of another student's is in any folder.\n"
        "\n"
        "Exit status: 0 every folder written; 2 bad input (no such stack, not a class, unknown student, a "
        "VM without pinned host keys: the other students' folders are still written); 7 a folder not replaced "
        "(the answer was no).",
        examples=[
            "course-vm handout --stack fall --out handouts",
            "course-vm handout --stack fall --out handouts --student alice --yes  # alice's folder again",
        ],
    )
    add_stack_option(parser)
    parser.add_argument(
        "--student", action="append", metavar="NAME", help="only this student's folder (repeatable; default: all)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="where the students' folders go")
    parser.add_argument("--yes", action="store_true", help="replace students' existing folders without asking")
    parser.set_defaults(run=handout)


def handout(args: argparse.Namespace) -> int:
    """Write each chosen student's folder under --out; an existing one is replaced only after a yes.

    Every folder that can be made is written; the students whose folder cannot be are then one
    error, a line each (exit 2).
    """
    out = own_out_folder(args.out)
    outputs = StackSession.open(args.stack, reads_only=True).outputs()
    if not outputs.is_class:
        raise CourseVmError(
            f"stack {args.stack} is not a class (it has no `students`): its one VM's ssh entry is already in "
            "~/.ssh/course-vm.config. Fix: name a class stack with --stack, or set `studentsCsv` and run `course-vm up`"
        )
    outputs.require_vms(args.stack)
    chosen = outputs.chosen(args.student, args.stack)
    made: list[Handout] = []
    failed: dict[str, CourseVmError] = {}
    for name, vm in chosen.items():
        folder = out / name
        try:
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise HandoutError(f"{name}: {folder} is not a folder. Fix: move it away, or pass another --out")
            made.append(_handout(args.stack, name, vm))
        except OSError as error:
            failed[name] = cannot_write(name, folder, error)
        except CourseVmError as error:
            failed[name] = error
    existing = [h for h in made if _holds_files(out / h.student)]
    if existing:
        print(f"These folders exist and would be replaced: {', '.join(str(out / h.student) for h in existing)}")
        if not confirm("Replace them?", assume_yes=args.yes):
            raise DeclinedError(
                "not confirmed: no folder was written or replaced. Fix: run it again and answer y, or add --yes, "
                "or pass another --out"
            )
    if made and own_out_folder(args.out, create=True) != out:
        raise HandoutError(f"--out {args.out} now leads elsewhere than {out}: nothing was written. Fix: run it again")
    for made_one in made:
        # One folder that cannot be written (a file of it held open on Windows) keeps no one else from theirs.
        try:
            write_handout(out / made_one.student, made_one)
        except CourseVmError as error:
            failed[made_one.student] = error
            continue
        alias = made_one.alias
        print(f"{made_one.student}: {out / made_one.student} (README.txt: `ssh -F ~/.ssh/{alias}.config {alias}`)")
    if failed:
        ordered = [(n, failed[n]) for n in chosen if n in failed]
        lines = [str(error) if str(error).startswith(f"{n}:") else f"{n}: {error}" for n, error in ordered]
        combined = CourseVmError(f"{len(failed)} of {len(chosen)} folders not written:\n" + "\n".join(lines))
        combined.exit_code = max(e.exit_code for e in failed.values())
        raise combined
    return 0


def _holds_files(folder: Path) -> bool:
    """Whether writing FOLDER would replace something: it holds files, or cannot be looked into."""
    try:
        return folder.is_dir() and any(folder.iterdir())
    except OSError:
        return True


def _handout(stack_name: str, student: str, vm: VmOutputs) -> Handout:
    """STUDENT's hand-out; their generated private key is read from the instructor's copy (identityFile)."""
    alias = host_alias(stack_name, student)
    if vm.student_public_key:
        return build_handout(student, alias, vm, None)
    identity = vm.identity_file
    # A generated key is sshKeyPath-NAME (Settings.seats): a key of another name is never handed out.
    if not identity or not Path(identity).name.endswith(f"-{student}"):
        raise HandoutError(
            f"{student}: the stack's key for this student ({identity!r}) is not one course-vm generated for them "
            "(sshKeyPath-NAME), so it is not handed out. Fix: run `course-vm up` again with this course-vm"
        )
    path = Path(identity).expanduser()
    # The state names the file, so only a key `up` claimed for this student of this stack is read.
    claims = key_claims(path)
    if (stack_name, student) not in claims and not any(other != stack_name for other, _ in claims):
        raise HandoutError(
            f"{student}: {path} is not a key `course-vm up` made for student {student} of stack {stack_name} (no "
            f"claim in {path.name}.stacks), so it is not handed out. Fix: run `course-vm up --stack {stack_name}`, "
            "then hand out again"
        )
    # `up` refuses a key another stack claims; a key shared before it did is still never handed out.
    for other, _ in claims:
        if other != stack_name:
            raise HandoutError(
                f"{student}: {path} is student {student}'s key of stack {other} too, and one key would log in to "
                f"both stacks' VMs, so it is not handed out. Fix: pulumi config set --stack {stack_name} sshKeyPath "
                f"~/.ssh/course-vm-{stack_name} (a path of this stack's own; it replaces the VMs), run "
                f"`course-vm up --stack {stack_name}`, then hand out again"
            )
    try:
        private_key = path.read_bytes()
    except OSError as error:
        raise HandoutError(
            f"{student}: cannot read their private key {path} ({error.strerror}). Fix: restore it from a backup, or "
            "remove the key pair and run `course-vm up` (a new pair replaces the VM)"
        ) from None
    return build_handout(student, alias, vm, private_key)
