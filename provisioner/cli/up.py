"""`up`: the options kept, the preview shown, the cloud checked, then the stack's VMs made and their entries written."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace

from provisioner.access.ssh_config import host_alias
from provisioner.cli.console import Confirm, declined
from provisioner.cli.ssh_entries import aliases, write_entries
from provisioner.driver.config import CIDRS_KEY
from provisioner.driver.engine_errors import RAW_CLI_NOTE
from provisioner.driver.plan import Action, Plan, failed_students
from provisioner.driver.session import EngineInterruptedError, EngineRunError, StackSession, stack_file_config
from provisioner.driver.verifications import record_verifications
from provisioner.driver.workspace import OnOutput, Workspace
from provisioner.errors import CourseVmError, EngineError, SettingsError
from provisioner.gcp.quotas import Existing
from provisioner.paths import PROJECT_DIR
from provisioner.recipe.problems import as_given
from provisioner.recipe.settings import Settings
from provisioner.stack import StackOutputs, VmOutputs

CloudCheck = Callable[[str, Settings, int, Sequence[Existing]], None]
"""Given the stack's name and settings, how many VMs the previewed change creates and the VMs it updates or
replaces (as they are now), raises when the cloud cannot take it (see prerequisites.compute_engine_ready);
runs after the preview, before the question."""


@dataclass(frozen=True)
class UpOptions:
    """What `up` was told on its command line; what is given is kept in the stack's config."""

    project: str | None = None
    zone: str | None = None
    allowed: Sequence[str] = ()
    """IPv4 ranges that replace the stored allowedSshCidrs (--allow)."""
    added: Sequence[str] = ()
    """IPv4 ranges appended to them, each once (--add-allow)."""

    def given(self) -> list[str]:
        """The flags that were given, as `declined` names them."""
        flags = (("--project", self.project), ("--zone", self.zone), ("--allow", self.allowed))
        return [flag for flag, value in (*flags, ("--add-allow", self.added)) if value]


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
    ready: Callable[[bool], None] | None = None, on_output: OnOutput = print,
) -> StackOutputs:  # fmt: skip
    """Keep OPTIONS in the stack's config, preview the changes, CHECK the cloud, ask CONFIRM, then create
    or update the stack's VMs and write their `Host` entries; the stack's VMs.

    A changed range list is said in one line `allowedSshCidrs: OLD -> NEW` before the preview; a no
    keeps the options in the config. After a preview without changes no update runs. One student's
    failure does not stop the others' VMs (Pulumi's continue-on-error). Entries of students no longer
    on the roster are removed. READY is told whether the stack uses IAP before anything is created,
    and raises what this machine lacks (see prerequisites.check).

    Raises SettingsError when the stack's settings are refused (before any preview), CourseVmError
    when the answer is no (nothing changed), EngineError when Pulumi fails (PartialUpError when it
    failed for some students of a class: see after_failed_update), and what READY and CHECK raise.
    """
    if ready is not None and not Workspace.installed():
        # Named with whatever else is missing; the stack file says whether gcloud's login is needed too.
        ready(stack_file_config(PROJECT_DIR, stack_name).iap)
    session = StackSession.open(stack_name, missing_ok=True)
    if ready is not None:
        ready(session.config().iap)
    session.create()
    session.select()
    keep_options(session, options, on_output)
    try:
        settings = session.config().settings()
    except SettingsError as error:
        raise SettingsError(as_given(error), note=RAW_CLI_NOTE) from None
    plan = session.preview(project=options.project)
    if entries_change(settings, session):
        plan = replace(plan, entries=True)
    # The preview names every VM in the state, also those a failed first `up` left out of the outputs.
    before = aliases(stack_name, session.state().names() | set(plan.students()))
    if check is not None:
        changed = plan.students(Action.UPDATE, Action.REPLACE)
        check(stack_name, settings, plan.created, session.state().existing_of(changed) if changed else [])
    if not confirm(plan):
        raise declined("up", options.given())
    if plan.changes:
        try:
            log = session.update(on_output, project=options.project)
        except EngineRunError as error:
            # A failed update keeps the old outputs, so only its events say whose verification failed.
            record_verifications(stack_name, error.log)
            raise after_failed_update(stack_name, session, error, plan, before) from None
        except EngineInterruptedError as interrupted:
            record_verifications(stack_name, interrupted.log)  # those that ended before Pulumi cancelled
            raise
        record_verifications(stack_name, log)
    outputs = session.outputs()
    problems = write_entries(stack_name, outputs.vms, before)
    if problems:
        raise CourseVmError(" | ".join(str(problem) for problem in problems))
    return outputs


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
    new = list(options.allowed) if options.allowed else list(old)
    for cidr in options.added:
        if cidr not in new:
            new.append(cidr)
    values = {key: value for key, value in (("gcp:project", options.project), ("gcp:zone", options.zone)) if value}
    lists = {CIDRS_KEY: new} if new != old else {}
    if values or lists:
        session.store(values, lists)
    if lists:
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
