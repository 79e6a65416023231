"""`up`: the options kept (see up_options.py), the preview shown, the cloud checked, then the stack's VMs made and
their entries written."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from provisioner.access.ssh_config import host_alias
from provisioner.cli.console import Confirm, declined
from provisioner.cli.ssh_entries import aliases, write_entries
from provisioner.cli.up_options import UpOptions, checked_options, config_change, refused
from provisioner.driver.config import CIDRS_KEY
from provisioner.driver.events import EngineLog, StepKind
from provisioner.driver.plan import Action, Plan, failed_students
from provisioner.driver.session import EngineInterruptedError, EngineRunError, StackSession
from provisioner.driver.verifications import record_verifications
from provisioner.driver.workspace import OnOutput, Workspace
from provisioner.errors import CourseVmError, EngineError, InterruptionError, SettingsError
from provisioner.gcp.quotas import Existing
from provisioner.recipe.settings import Settings
from provisioner.stack import VERIFICATION_TYPE, StackOutputs, VmOutputs, command

CloudCheck = Callable[[str, Settings, int, Sequence[Existing]], None]
"""Given the stack's name and settings, how many VMs the previewed change creates and the VMs it updates or
replaces (as they are now), raises when the cloud cannot take it (see prerequisites.compute_engine_ready);
runs after the preview, before the question."""


class PartialUpError(EngineError):
    """An update of a class that failed for some students: what failed, and what the others' VMs are."""

    def __init__(self, message: str, outputs: StackOutputs, failed: Sequence[str]) -> None:
        super().__init__(message)
        self.outputs = outputs
        """The stack's VMs as its state has them: those that finished."""
        self.failed = tuple(failed)
        """The students whose VM did not finish, sorted."""


def up(
    stack_name: str, options: UpOptions, *, confirm: Confirm, check: CloudCheck | None = None,
    ready: Callable[[bool], None] | None = None, on_output: OnOutput = print, on_progress: OnOutput | None = None,
) -> StackOutputs:  # fmt: skip
    """Keep OPTIONS in the stack's config, preview the changes, CHECK the cloud, ask CONFIRM, then create
    or update the stack's VMs and write their `Host` entries; the stack's VMs.

    A changed range list is said in one line `allowedSshCidrs: OLD -> NEW` before the preview; a no
    keeps the options in the config. After a preview without changes no update runs. One student's
    failure does not stop the others' VMs (Pulumi's continue-on-error). Entries of students no longer
    on the roster are removed. READY is told whether the stack uses IAP before anything is created,
    and raises what this machine lacks (see prerequisites.check); ON_PROGRESS is told when the preview starts.
    Ctrl-C raises InterruptionError saying what
    is true for the stage it came in (see interrupted_up).

    Raises SettingsError when the stack's settings are refused (before any preview), CourseVmError
    when the answer is no (nothing changed), EngineError when Pulumi fails (PartialUpError when it
    failed for some students of a class: see after_failed_update), and what READY and CHECK raise.
    """
    stage = Stage()
    try:
        return _up(stage, stack_name, options, confirm, check, ready, on_output, on_progress)
    except EngineInterruptedError as interrupted:
        if stage.now == "update":  # a preview the engine cancelled changed nothing
            record_verifications(stack_name, interrupted.log)  # those that ended before Pulumi cancelled
            stage.now = "verification" if verifying(interrupted.log) else "update"
        raise InterruptionError(interrupted_up(stack_name, stage.now, options)) from None
    except KeyboardInterrupt:
        raise InterruptionError(interrupted_up(stack_name, stage.now, options)) from None


@dataclass
class Stage:
    """Where `up` is: what a Ctrl-C now leaves (see interrupted_up)."""

    now: str = "check"


def _up(
    stage: Stage, stack_name: str, options: UpOptions, confirm: Confirm, check: CloudCheck | None,
    ready: Callable[[bool], None] | None, on_output: OnOutput, on_progress: OnOutput | None,
) -> StackOutputs:  # fmt: skip
    planned = checked_options(stack_name, options)
    if ready is not None and not Workspace.installed():
        # Named with whatever else is missing; the stack file says whether gcloud's login is needed too.
        ready(planned.iap)
    session = StackSession.open(stack_name, missing_ok=True)
    planned = config_change(session.config(), options).applied(session.config())
    if ready is not None:
        ready(planned.iap)
    try:
        # What the Pulumi CLI reads (secrets too) is checked before anything is stored.
        planned.settings()
    except SettingsError as error:
        raise refused(stack_name, error, options.sets) from None
    stage.now = "store"
    session.create()
    session.select()
    keep_options(session, options, on_output)
    stage.now = "preview"
    if on_progress is not None:
        on_progress(f"previewing the changes to stack {stack_name}")
    settings = session.config().settings()
    plan = session.preview(project=options.project)
    if entries_change(settings, session):
        plan = replace(plan, entries=True)
    # The preview names every VM in the state, also those a failed first `up` left out of the outputs.
    before = aliases(stack_name, session.state().names() | set(plan.students()))
    stage.now = "cloud"
    if check is not None:
        changed = plan.students(Action.UPDATE, Action.REPLACE)
        check(stack_name, settings, plan.created, session.state().existing_of(changed) if changed else [])
    stage.now = "prompt"
    if not confirm(plan):
        raise declined("up", options.given())
    stage.now = "update"
    if plan.changes:
        try:
            log = session.update(on_output, project=options.project)
        except EngineRunError as error:
            # A failed update keeps the old outputs, so only its events say whose verification failed.
            record_verifications(stack_name, error.log)
            raise after_failed_update(stack_name, session, error, plan, before) from None
        record_verifications(stack_name, log)
    stage.now = "entries"
    outputs = session.outputs()
    problems = write_entries(stack_name, outputs.vms, before)
    if problems:
        raise CourseVmError(" | ".join(str(problem) for problem in problems))
    return outputs


def verifying(log: EngineLog) -> bool:
    """Whether the engine, when LOG ends, was running only VMs' verifications: every VM was made."""
    pending: dict[str, str] = {}
    for step in log.steps:
        if step.kind is StepKind.PRE:
            pending[step.urn] = step.type
        else:
            pending.pop(step.urn, None)
    return bool(pending) and set(pending.values()) == {VERIFICATION_TYPE}


def interrupted_up(stack_name: str, stage: str, options: UpOptions) -> str:
    """What is true after Ctrl-C in `up`'s STAGE, and how to go on."""
    up, down = command("up", stack_name), command("down", stack_name)
    kept = f" The stack's settings keep what {', '.join(options.given())} gave." if options.given() else ""
    return (
        "interrupted: "
        + {
            "check": "nothing was changed: the settings and this machine were being checked",
            "store": "nothing was changed in the cloud"
            + (f"; the stack's settings may keep some of what {', '.join(options.given())} gave" if kept else "")
            + f". `{up}` starts again",
            "preview": f"a preview changes nothing in the cloud.{kept} `{up}` previews again",
            "cloud": f"nothing was changed in the cloud (its API and quotas were being read).{kept} `{up}` reads "
            "them again",
            "prompt": f"nothing was created, changed or deleted in the cloud.{kept} `{up}` asks again",
            "update": f"Pulumi may have created, changed or deleted some of stack {stack_name}'s resources before it "
            f"stopped. `{up}` finishes the job; `{down}` removes what exists",
            "verification": f"the VMs were made; Pulumi stopped while checking them (their setup goes on). `{up}` "
            f"checks them again and finishes the job; `{down}` removes them",
            "entries": f"the VMs are ready, but their ssh entries may not be written. `{up}` writes them (it changes "
            "nothing else)",
        }[stage]
    )


def entries_change(settings: Settings, session: StackSession) -> bool:
    """Whether SETTINGS forward other ports, or the agent otherwise, than the stack's outputs say its VMs' ssh
    entries do (outputs from before forwardPorts forward Jupyter's port alone), or the outputs name a student
    no roster can hold: an update writes them again from the settings."""
    try:
        outputs = session.outputs()
    except CourseVmError:
        return True
    forwards = tuple(forward.text for forward in settings.forward_ports)
    return any(
        (vm.forward_ports, vm.forward_agent) != (forwards, settings.forward_agent) for vm in outputs.vms.values()
    )


def keep_options(session: StackSession, options: UpOptions, on_output: OnOutput) -> None:
    """Store what OPTIONS give in the stack's config (the preview reads it there); a changed range list is said."""
    old = session.config().cidrs()
    change = config_change(session.config(), options)
    if change.removed:
        session.remove(change.removed)
    if change.values or change.lists:
        session.store(change.values, change.lists)
    if CIDRS_KEY in change.lists:
        new = change.lists[CIDRS_KEY]
        on_output(f"{CIDRS_KEY}: {', '.join(old) or '(none)'} -> {', '.join(new) or '(none)'}")


def after_failed_update(
    stack_name: str, session: StackSession, error: EngineRunError, plan: Plan, before: Collection[str]
) -> EngineError:
    """What an update of a class that failed part way leaves, said: ERROR, or a PartialUpError naming the
    students whose VM failed, once the `Host` entries of the VMs that finished are written.

    The VMs that finished are read from the stack's state (see driver/state.py): its outputs are the
    last successful update's. A student failed when a step of one of their VM's resources failed
    (the error's events) or their VM has no outputs in the state; their entry is left as it was.
    ERROR stands as it is for a stack's one VM, an update that failed before any step, or a state
    that cannot be read.
    """
    planned = {vm.student for vm in plan.vms if vm.action is not Action.DELETE}
    if not (error.log.stepped and any(planned)):
        return error
    try:
        state = session.state()
        outputs = session.outputs()
    except CourseVmError:
        return error
    if state.own is None:
        return error
    failed = sorted((failed_students(error.log) | state.unfinished | (planned - set(outputs.vms))) - {""})
    if not failed:
        return error
    finished = {name: vm for name, vm in outputs.vms.items() if name not in failed}
    problems = write_entries(stack_name, finished, set(before) - aliases(stack_name, failed))
    return PartialUpError(_partial_message(stack_name, error, failed, outputs.vms, problems), outputs, failed)


def _partial_message(
    stack_name: str, error: EngineError, failed: Sequence[str], vms: Mapping[str, VmOutputs],
    problems: Sequence[CourseVmError],
) -> str:  # fmt: skip
    """The message of a PartialUpError; VMS: every VM of the state, also a failed one that has outputs (checkable)."""
    said, _, fix = str(error).rpartition("\nFix: ")
    names = ", ".join(failed)
    total = len(set(vms) | set(failed))
    checkable = [name for name in failed if name in vms]
    look = f"`course-vm render --stack {stack_name} --student {failed[0]}` prints the recipe a VM was given"
    if checkable:
        look += f"; `course-vm check --stack {stack_name} --student {checkable[0]}` checks one again"
    unwritten = "".join(f"\n{problem}" for problem in problems)
    return (
        f"{len(failed)} of {total} VMs of stack {stack_name} did not finish: {names}. The others' ssh entries are "
        f"written (the table above).{unwritten}\n{said}\nFix: {fix}: it retries what did not finish ({names}) and "
        f"leaves the VMs that finished as they are. To look into one first: {look}"
    )


def class_table(stack_name: str, vms: Mapping[str, VmOutputs], failed: Collection[str] = ()) -> str:
    """One line per student: ssh alias, address, key file and whether `pulumi up` verified the VM;
    the FAILED students' VMs did not finish (no ssh entry was written for them)."""
    rows = [("STUDENT", "SSH", "IP", "KEY", "VERIFIED")]
    for name in [*vms, *(name for name in failed if name not in vms)]:
        vm = vms.get(name) or VmOutputs()
        alias, key = host_alias(stack_name, name), vm.identity_file or "-"
        ip = address_cell(vm.ip or "-", vm.iap)
        verified = vm.host_key_fingerprint or "no (verify=false)"
        rows.append((name, alias, ip, key, "FAILED: see below" if name in failed else verified))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)) + "  " + row[-1] for row in rows]
    # Not "give each student their key": a student who brought their own key is reached with the instructor's.
    handout = f"Hand each student their folder: `course-vm handout --stack {stack_name} --out DIR`"
    if failed:
        lines.append(
            f"{len(rows) - 1 - len(failed)} of {len(rows) - 1} VMs ready (not {', '.join(failed)}). {handout} "
            f"(the ready ones); `course-vm up --stack {stack_name}` again retries the others."
        )
    else:
        lines.append(f"{len(vms)} VMs. {handout}; `course-vm check` checks them all again.")
    return "\n".join(lines)


def address_cell(ip: object, iap: bool) -> str:
    """A VM's address as the tables show it: an iap VM's is internal, reached only through the tunnel."""
    return f"{ip} (internal: IAP)" if iap else str(ip)
