"""The Pulumi CLI, driven for `up`, `down` and `status` (Automation API) and read for a stack's outputs."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from provisioner.access.keys import release_claims
from provisioner.access.ssh_config import add_host, host_alias, remove_host, ssh_config_block
from provisioner.cli.prerequisites import PULUMI_INSTALL, MissingPrerequisiteError
from provisioner.errors import CourseVmError, EngineError, SettingsError
from provisioner.gcp.quotas import Existing
from provisioner.paths import FROM_CHECKOUT, ON_WINDOWS, PROGRAM_DIR, PROJECT_DIR, state_home
from provisioner.recipe.roster import student_name_problem
from provisioner.recipe.rules import Problems
from provisioner.recipe.settings import DEFAULT_STACK, PROJECT, SETTINGS, Settings, command, settings_from_pulumi

INSTALL_HINT = PULUMI_INSTALL


class StackLike(Protocol):
    """The part of pulumi.automation.Stack these commands use (a fake stands in for it in tests)."""

    def get_all_config(self) -> Mapping[str, Any]: ...
    def set_config(self, key: str, value: Any, *, path: bool = False) -> None: ...
    def remove_config(self, key: str, *, path: bool = False) -> None: ...
    def preview(self, *, on_event: Callable[[Any], Any] | None = None) -> Any: ...
    def preview_destroy(self, *, on_event: Callable[[Any], Any] | None = None) -> Any: ...
    def up(
        self, *, on_output: Callable[[str], Any] | None = None, on_event: Callable[[Any], Any] | None = None,
        continue_on_error: bool | None = None,
    ) -> Any: ...  # fmt: skip
    def destroy(
        self, *, on_output: Callable[[str], Any] | None = None, on_event: Callable[[Any], Any] | None = None
    ) -> Any: ...
    def outputs(self) -> Mapping[str, Any]: ...
    def export_stack(self) -> Any: ...


class StackOpener(Protocol):
    """Opens the stack NAME; with create=False a stack that does not exist is an error, not a new stack."""

    def __call__(self, name: str, *, create: bool = True) -> StackLike: ...


Confirm = Callable[["Plan"], bool]
"""Shown the plan, says whether to go on (a plan without changes needs no question)."""
CloudCheck = Callable[[str, Settings, int, Sequence[Existing]], None]
"""Given the stack's name and settings, how many VMs the previewed change creates and the VMs it updates or
replaces (as they are now), raises when the cloud
cannot take it (see prerequisites.compute_engine_ready); runs after the preview, before CONFIRM."""
CIDRS_KEY = "allowedSshCidrs"


def state_dir() -> Path:
    """course-vm's own Pulumi backend: a local file backend, and the passphrase of its stacks."""
    return state_home() / "pulumi"


def passphrase_file() -> Path:
    """The passphrase course-vm generates once for the stacks of its own backend (mode 0600)."""
    return state_dir() / "passphrase"


def chosen_backend() -> str | None:
    """The backend the user chose: PULUMI_BACKEND_URL, else the one `pulumi login` selected; None if neither."""
    if os.environ.get("PULUMI_BACKEND_URL"):
        return os.environ["PULUMI_BACKEND_URL"]
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        current = json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        return None
    return str(current) if current else None


def is_own_backend(url: str) -> bool:
    """Whether URL (`file:///...` or `file://~/...`) is course-vm's own backend, reached through `pulumi login`."""
    if not url.startswith("file://"):
        return False
    path = Path(os.path.expanduser(urllib.parse.unquote(url[len("file://") :])))
    return path.resolve() == state_dir().resolve()


def _user_passphrase() -> bool:
    # An empty PULUMI_CONFIG_PASSPHRASE is a passphrase too (Pulumi accepts it).
    return "PULUMI_CONFIG_PASSPHRASE" in os.environ or bool(os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"))


def backend_environment() -> dict[str, str]:
    """What the Pulumi CLI gets on top of the user's environment: one rule for where stacks live.

    A backend the user chose (PULUMI_BACKEND_URL, or `pulumi login`) is used as it is, with their
    own passphrase settings (PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE), so that
    course-vm and the raw `pulumi` CLI see the same stacks the same way. Without one, stacks go to
    course-vm's own local backend ($XDG_STATE_HOME/course-vm/pulumi, no account needed), whose
    secrets are encrypted with the passphrase file course-vm generates there, unless the user set
    a passphrase. `course-vm env` prints the lines that reach it from the raw CLI.
    """
    chosen = chosen_backend()
    environment: dict[str, str] = {}
    if chosen is None:
        state_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        environment["PULUMI_BACKEND_URL"] = state_dir().as_uri()
    if (chosen is None or is_own_backend(chosen)) and not _user_passphrase():
        passphrase = passphrase_file()
        if not passphrase.exists():
            passphrase.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
        environment["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return environment


def state_error(stack_name: str, text: str, environment: Mapping[str, str]) -> CourseVmError | None:
    """The course-vm error for a Pulumi passphrase failure in TEXT (the CLI's error output), given the
    ENVIRONMENT course-vm added (backend_environment); None when TEXT is about something else."""
    ours = environment.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    fix = (
        "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE (a file holding the stack's passphrase) "
        "or PULUMI_CONFIG_PASSPHRASE"
    )
    if "passphrase must be set" in text:
        return MissingPrerequisiteError(
            f"stack {stack_name} on {chosen_backend()} keeps its secrets with a passphrase, and none is set "
            "(course-vm brings its own only to its own backend). "
            f"{fix}: the one typed at `pulumi stack init`"
        )
    if "incorrect passphrase" in text:
        given = f"course-vm's passphrase file {ours}" if ours else "the passphrase you set"
        return CourseVmError(
            f"{given} does not decrypt stack {stack_name}'s secrets: the stack was made with another "
            f"passphrase (e.g. one typed at `pulumi stack init`). {fix}: the one the stack was made with"
        )
    return None


def project_directory() -> Path:
    """The project directory Pulumi runs in (PROJECT_DIR), ready to run the program.

    A checkout is ready as it is. For an installed copy, PROJECT_DIR gets the packaged Pulumi.yaml
    (its python runtime set to the interpreter course-vm is installed in) and __main__.py, written
    again when an upgrade changed them; the stack files beside them stay the user's.
    """
    if FROM_CHECKOUT:
        return PROJECT_DIR
    PROJECT_DIR.mkdir(parents=True, exist_ok=True)
    in_virtualenv = sys.prefix != sys.base_prefix
    project_file = installed_project_file(
        (PROGRAM_DIR / "Pulumi.yaml").read_text(), sys.prefix if in_virtualenv else None
    )
    _write_if_changed(PROJECT_DIR / "Pulumi.yaml", project_file)
    _write_if_changed(PROJECT_DIR / "__main__.py", (PROGRAM_DIR / "__main__.py").read_text())
    return PROJECT_DIR


def installed_project_file(text: str, virtualenv: str | None) -> str:
    """The checkout's Pulumi.yaml TEXT with its runtime's `virtualenv: venv` made VIRTUALENV, an absolute
    path (Pulumi takes one), or removed when course-vm is installed outside a virtualenv (see runtime_environment)."""
    line = "    virtualenv: venv\n"
    if line not in text:
        raise CourseVmError(f"the packaged Pulumi.yaml has no `{line.strip()}` line. Fix: reinstall course-vm")
    # JSON's double-quoted string is YAML too, and keeps a Windows path's backslashes.
    return text.replace(line, f"    virtualenv: {json.dumps(virtualenv)}\n" if virtualenv else "")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def runtime_environment() -> dict[str, str]:
    """For an installed copy outside a virtualenv: the python Pulumi runs the program with (this one)."""
    if FROM_CHECKOUT or sys.prefix != sys.base_prefix:
        return {}
    return {"PULUMI_PYTHON_CMD": sys.executable}


def open_stack(name: str, *, create: bool = True) -> StackLike:
    """The stack NAME of this project, created if needed (CREATE), through the Pulumi CLI.

    Its secrets are decrypted once here, so a passphrase that does not fit is one clear error
    before anything changes. Raises CourseVmError when the CLI is not installed, the passphrase is
    missing or wrong, or (create=False) there is no stack NAME; the engine's other failures become
    an EngineError.
    """
    if shutil.which("pulumi") is None:
        raise MissingPrerequisiteError(
            f"the Pulumi CLI is not installed, and `up`, `down` and `status` drive it. Fix: {INSTALL_HINT}"
        )
    from pulumi import automation

    work_dir = str(project_directory())
    environment = backend_environment()
    options = automation.LocalWorkspaceOptions(work_dir=work_dir, env_vars={**environment, **runtime_environment()})
    with engine_errors(f"open stack {name}", name, [], again=None):
        try:
            if create:
                stack: StackLike = automation.create_or_select_stack(name, work_dir=work_dir, opts=options)
            else:
                try:
                    stack = automation.select_stack(name, work_dir=work_dir, opts=options)
                except automation.StackNotFoundError:
                    workspace = automation.LocalWorkspace(work_dir=work_dir, env_vars=options.env_vars)
                    raise no_such_stack(name, [summary.name for summary in workspace.list_stacks()]) from None
            stack.outputs()
        except automation.CommandError as error:
            mapped = state_error(name, str(error), environment)
            if mapped is None:
                raise
            raise mapped from None
    return stack


def no_such_stack(name: str, existing: Sequence[str]) -> CourseVmError:
    """The error for a stack NAME that `status` or `down` was asked about and that does not exist."""
    if existing:
        there, fix = f"the stacks that exist: {', '.join(sorted(existing))}", "name one of them with --stack"
    else:
        there, fix = (
            "no stack exists yet",
            f"create it with `course-vm up --stack {name} --project YOUR-PROJECT-ID`",
        )
    return CourseVmError(f"there is no stack {name} ({there}); nothing was created or deleted. Fix: {fix}")


def _values(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in outputs.items()}


def _vms(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return dict(outputs.get("students") or ({"": outputs} if outputs.get("ip") else {}))


def host_aliases(stack_name: str, outputs: Mapping[str, Any]) -> set[str]:
    """The `Host` names of a stack's VMs: its one VM's, or each student's."""
    return {host_alias(stack_name, student) for student in _vms(outputs)}


def host_entries(stack_name: str, outputs: Mapping[str, Any]) -> tuple[dict[str, str], list[CourseVmError]]:
    """The `Host` blocks of a stack's VMs by alias, and the VMs whose values an ssh config cannot hold.

    Built from each VM's fields (address, login, key, pin file; under sshAccess iap the instance
    name and the ProxyCommand), each checked: never from the `sshConfig` text, which anyone who can
    write the stack's state could turn into a `Match exec`.
    """
    blocks: dict[str, str] = {}
    problems: list[CourseVmError] = []
    for student, vm in _vms(outputs).items():
        alias = host_alias(stack_name, student)
        proxy = vm.get("proxyCommand") or None
        host = vm.get("instanceName") if proxy else vm.get("ip")
        try:
            blocks[alias] = ssh_config_block(
                alias,
                host,
                vm.get("username"),
                vm.get("identityFile"),
                vm.get("knownHostsFile") or None,
                proxy_command=proxy,
            )
        except CourseVmError as error:
            problems.append(error)
    return blocks, problems


def up(
    stack_name: str, project: str | None, zone: str | None, allowed_cidrs: Sequence[str], *, confirm: Confirm,
    opener: StackOpener = open_stack, on_output: Callable[[str], Any] = print, added_cidrs: Sequence[str] = (),
    check: CloudCheck | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Preview the changes, CHECK the cloud, ask CONFIRM, then create or update the stack's VMs and
    write their `Host` entries.

    Settings given here are stored in the stack's config (before the preview, which needs them;
    a no keeps them there); the rest keep their values or defaults. ALLOWED_CIDRS replace the
    stored `allowedSshCidrs`, ADDED_CIDRS are appended to them (each once); a changed list is
    said in one line `allowedSshCidrs: OLD -> NEW` before the preview. CHECK gets the settings
    the preview validated and the number of VMs it creates, before anything is asked or changed.
    After a preview without changes no update runs: the current outputs stand.
    One student's failure does not stop the others' VMs (Pulumi's continue-on-error). Entries of
    students no longer on the roster are removed. Raises CourseVmError when the Pulumi CLI is
    missing or the answer is no (nothing changed), EngineError when Pulumi fails (PartialUpError
    when it failed for some students of a class: the others' entries are written, see
    after_failed_update), SettingsError when the program refuses the stack's settings, and what
    CHECK raises.
    """
    from pulumi.automation import ConfigValue

    stack = opener(stack_name)
    with engine_errors(f"store the settings in stack {stack_name}", stack_name, [], project=project):
        config = {key: str(getattr(value, "value", value)) for key, value in stack.get_all_config().items()}
        old = stored_cidrs(config)
        new = list(allowed_cidrs) if allowed_cidrs else list(old)
        for cidr in added_cidrs:
            if cidr not in new:
                new.append(cidr)
        if project:
            stack.set_config("gcp:project", ConfigValue(project))
            config["gcp:project"] = project
        if zone:
            stack.set_config("gcp:zone", ConfigValue(zone))
            config["gcp:zone"] = zone
        if new != old:
            stack.remove_config(CIDRS_KEY)
            for index, cidr in enumerate(new):
                stack.set_config(f"{CIDRS_KEY}[{index}]", ConfigValue(cidr), path=True)
            config[f"{PROJECT}:{CIDRS_KEY}"] = json.dumps(new)
            on_output(f"{CIDRS_KEY}: {', '.join(old) or '(none)'} -> {', '.join(new) or '(none)'}")
        before = host_aliases(stack_name, _values(stack.outputs()))
    events: list[Any] = []
    with engine_errors(f"preview the changes to stack {stack_name}", stack_name, events, project=project):
        stack.preview(on_event=events.append)
    plan = plan_from_events(events)
    # The preview names every VM in the state, also those a failed first `up` left out of the outputs.
    before |= {host_alias(stack_name, vm.student) for vm in plan.vms}
    if check is not None:
        changed = [vm.student for vm in plan.vms if vm.action in ("update", "replace")]
        check(stack_name, settings_of(config), plan.created, existing_vms(stack, changed) if changed else [])
    if not confirm(plan):
        flags = (("--project", project), ("--zone", zone), ("--allow", allowed_cidrs), ("--add-allow", added_cidrs))
        raise declined("up", [flag for flag, value in flags if value])
    if plan.changes:
        events = []
        try:
            with engine_errors(f"update stack {stack_name}", stack_name, events, project=project):
                result = stack.up(on_output=on_output, on_event=events.append, continue_on_error=True)
        except EngineError as error:
            raise after_failed_update(stack_name, stack, error, events, plan, before) from None
        finally:
            # A failed update keeps the old outputs, so only its events say whose verification failed.
            record_verifications(stack_name, events)
        outputs = _values(result.outputs)
    else:
        with engine_errors(f"read the outputs of stack {stack_name}", stack_name, []):
            outputs = _values(stack.outputs())
    after, problems = host_entries(stack_name, outputs)
    for alias, block in after.items():
        add_host(alias, block)
    # A VM whose values were refused loses its old block too: it may name an old address.
    for alias in (before | host_aliases(stack_name, outputs)) - after.keys():
        remove_host(alias)
    if problems:
        raise CourseVmError(" | ".join(str(problem) for problem in problems))
    return outputs


def stored_cidrs(config: Mapping[str, str]) -> list[str]:
    """The `allowedSshCidrs` of a stack's CONFIG (`pulumi config --json`: a list is its JSON text)."""
    text = config.get(f"{PROJECT}:{CIDRS_KEY}", "")
    try:
        value = json.loads(text) if text else []
    except ValueError:
        value = [text]  # one range set without --path
    return [str(cidr) for cidr in value] if isinstance(value, list) else [str(value)]


def settings_of(config: Mapping[str, str]) -> Settings:
    """The Settings the program builds from a stack's CONFIG (every key, `course-vm:` and `gcp:`).

    Raises SettingsError as the program would.
    """
    prefix = f"{PROJECT}:"
    own = {key[len(prefix) :]: value for key, value in config.items() if key.startswith(prefix)}
    return settings_from_pulumi(own, lambda key: config.get(f"gcp:{key}"))


def key_path_of(config: Mapping[str, str]) -> Path | None:
    """The `sshKeyPath` of a stack's CONFIG as the program reads it; None when the program refuses it."""
    row = next(setting for setting in SETTINGS if setting.key == "sshKeyPath")
    problems = Problems()
    path = row.rule(problems, row, config.get(f"{PROJECT}:{row.key}", row.default))
    return None if problems.lines else Path(path)


def down(
    stack_name: str, *, confirm: Confirm, opener: StackOpener = open_stack, on_output: Callable[[str], Any] = print
) -> None:
    """Preview what the stack's destruction deletes, ask CONFIRM, destroy it all and remove its `Host` entries.

    Never creates a stack. Raises CourseVmError when there is no stack STACK_NAME or the answer is
    no (nothing deleted), EngineError when Pulumi fails.
    """
    stack = opener(stack_name, create=False)
    events: list[Any] = []
    with engine_errors(f"preview the deletion of stack {stack_name}", stack_name, events, again="down"):
        aliases = {host_alias(stack_name), *host_aliases(stack_name, _values(stack.outputs()))}
        config = {key: str(getattr(value, "value", value)) for key, value in stack.get_all_config().items()}
        stack.preview_destroy(on_event=events.append)
    plan = plan_from_events(events)
    # The preview names every VM in the state, also those a failed first `up` left out of the outputs.
    aliases |= {host_alias(stack_name, vm.student) for vm in plan.vms}
    if not confirm(plan):
        raise declined("down")
    if plan.changes:
        events = []
        with engine_errors(f"delete stack {stack_name}", stack_name, events, again="down"):
            stack.destroy(on_output=on_output, on_event=events.append)
    for alias in aliases:
        remove_host(alias)
    # Its VMs are gone: `status` must not say that some may exist, and its students' names are free again.
    verifications_file(stack_name).unlink(missing_ok=True)
    if (key := key_path_of(config)) is not None:
        try:
            retired = release_claims(stack_name, key)
        except (OSError, CourseVmError) as error:
            on_output(f"the VMs are gone, but their students' keys beside {key} were not retired ({error})")
        else:
            if retired:
                on_output(
                    f"retired {len(retired)} students' generated keys (renamed to KEY.retired-...), so that a "
                    "later class gets new ones"
                )


def status(stack_name: str, *, opener: StackOpener = open_stack) -> dict[str, Any]:
    """The stack's outputs with each VM as its state has it (see with_state): empty when nothing
    exists. Raises CourseVmError when there is no such stack."""
    stack = opener(stack_name, create=False)
    with engine_errors(f"read the outputs of stack {stack_name}", stack_name, [], again="status"):
        outputs = _values(stack.outputs())
    return with_state(outputs, state_of(stack))


class PartialUpError(EngineError):
    """An update of a class that failed for some students: what failed, and what the others' VMs are."""

    def __init__(self, message: str, outputs: Mapping[str, Any], failed: Sequence[str]) -> None:
        super().__init__(message)
        self.outputs = dict(outputs)
        """The stack's outputs as its state has them (see with_state): the VMs that finished, under `students`."""
        self.failed = tuple(failed)
        """The students whose VM did not finish, sorted."""


def after_failed_update(
    stack_name: str, stack: StackLike, error: EngineError, events: Sequence[Any], plan: Plan, before: set[str]
) -> EngineError:
    """What an update of a class that failed part way leaves, said: ERROR, or a PartialUpError naming
    the students whose VM failed, once the `Host` blocks of the VMs that finished are written.

    The VMs that finished are read from the stack's state (see state_vms): its outputs are the last
    successful update's. A student failed when a step of one of their VM's resources failed (EVENTS)
    or their VM has no outputs in the state; their block is left as it was. ERROR stands as it is
    for a stack's one VM, an update that failed before any step, or a state that cannot be read.
    """
    planned = {vm.student for vm in plan.vms if vm.action != "delete"}
    stepped = any(getattr(event, "resource_pre_event", None) is not None for event in events)
    state = state_of(stack) if stepped and any(planned) else None
    if state is None:
        return error
    outputs = with_state(state.root, state)
    students: dict[str, Any] = dict(outputs.get("students") or {})
    failed = sorted((failed_students(events) | state.unfinished | (planned - set(students))) - {""})
    if not failed:
        return error
    finished = {name: vm for name, vm in students.items() if name not in failed}
    after, problems = host_entries(stack_name, {"students": finished})
    for alias, block in after.items():
        add_host(alias, block)
    kept = {host_alias(stack_name, name) for name in failed}
    for alias in (before | host_aliases(stack_name, {"students": finished})) - after.keys() - kept:
        remove_host(alias)
    said, _, fix = str(error).rpartition("\nFix: ")
    names = ", ".join(failed)
    total = len(set(students) | set(failed))
    checkable = [name for name in failed if name in students]
    look = f"`course-vm render --stack {stack_name} --student {failed[0]}` prints the recipe a VM was given"
    if checkable:
        look += f"; `course-vm check --stack {stack_name} --student {checkable[0]}` checks one again"
    unwritten = "".join(f"\n{problem}" for problem in problems)
    message = (
        f"{len(failed)} of {total} VMs of stack {stack_name} did not finish: {names}. The others' ssh entries are "
        f"written (the table above).{unwritten}\n{said}\nFix: {fix}: it retries what did not finish ({names}) and "
        f"leaves the VMs that finished as they are. To look into one first: {look}"
    )
    return PartialUpError(message, outputs, failed)


def failed_students(events: Iterable[Any]) -> set[str]:
    """The students ("" for a stack's one VM) one of whose VM's resources an update's EVENTS say failed:
    a failed step, or an error naming a resource under their StudentVm."""
    parents: dict[str, str] = {}
    failed: set[str] = set()
    for event in events:
        diagnostic = getattr(event, "diagnostic_event", None)
        if diagnostic is not None and diagnostic.severity == "error" and diagnostic.urn:
            failed.add(diagnostic.urn)
        for kind in ("resource_pre_event", "res_outputs_event", "res_op_failed_event"):
            step = getattr(event, kind, None)
            if step is None:
                continue
            state = step.metadata.new or step.metadata.old
            if state is not None and state.parent:
                parents[step.metadata.urn] = state.parent
            if kind == "res_op_failed_event":
                failed.add(step.metadata.urn)
    students: set[str] = set()
    for urn in failed:
        seen: set[str] = set()
        while urn and urn not in seen and _urn_type(urn) != STUDENT_VM:
            seen.add(urn)
            urn = parents.get(urn, "")
        if urn and _urn_type(urn) == STUDENT_VM:
            students.add(student_of(urn, parents.get(urn, "")))
    return students


def declined(command: str, stored: Sequence[str] = ()) -> CourseVmError:
    """The answer was no. STORED: the options `up` had already kept in the stack's settings (the
    preview needs them there); a later `up` applies them, so say so."""
    kept = (
        f" The stack's settings keep what {', '.join(stored)} gave; a later `up` previews them again." if stored else ""
    )
    return CourseVmError(
        f"not confirmed: nothing was created, changed or deleted in the cloud.{kept} Fix: run `course-vm {command}` "
        "again and answer y (first copy off the VM what you need that would be lost)"
    )


# Each VM's last verification, as `up` saw it in the engine's events: the stack's outputs cannot
# tell. An update in which one verification fails fails as a whole (continue-on-error only lets
# the other VMs go on), and Pulumi keeps the outputs of the last update that succeeded: a first
# `up` leaves no `students` output at all, a later one the previous fingerprints. So a VM whose
# check failed looks like one never checked, or like one that passed.

VERIFICATION = "pulumi-python:dynamic:Resource"
PASSED, FAILED, OFF = "passed", "failed", "off"
_GONE = {"delete", "delete-replaced", "discard", "discard-replaced", "read-discard", "remove-pending-replace"}


@dataclass(frozen=True)
class Verification:
    """How one VM's last verification (`pulumi up`'s checker run, provisioner/gcp/verification.py) ended."""

    result: str
    """passed, failed, or off (the stack has verify=false)."""
    at: str | None = None
    """When, ISO 8601 in UTC (2026-11-27T14:00:00Z); None when not known (passed before course-vm kept the time)."""
    detail: str = ""
    """Why it failed: the checker's error as the engine reported it."""


def verifications_file(stack_name: str) -> Path:
    """Where `up` keeps each VM of stack STACK_NAME's last verification (see record_verifications)."""
    return state_home() / "verifications" / f"{urllib.parse.quote(stack_name, safe='')}.json"


def recorded_verifications(stack_name: str) -> dict[str, Verification]:
    """Each VM's last verification by student ("" for a stack's one VM), as `up` recorded it on this
    machine; empty when it recorded none (or its file is unreadable: a cache, not a source of truth)."""
    try:
        recorded = json.loads(verifications_file(stack_name).read_text())
        return {str(student): Verification(**fields) for student, fields in recorded.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def record_verifications(stack_name: str, events: Iterable[Any]) -> None:
    """Keep what an update's EVENTS say about each VM's verification (see verifications_from_events)
    in the stack's verifications file (mode 0600), beside what earlier updates said of other VMs.

    A file that cannot be written is left as it is: `status` then says it does not know.
    """
    from provisioner.access.ssh_config import write_atomically

    before = recorded_verifications(stack_name)
    now = verifications_from_events(events, before)
    if not now:
        return
    path = verifications_file(stack_name)
    document = {student: asdict(verification) for student, verification in {**before, **now}.items()}
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomically(path, json.dumps(document, indent=2, sort_keys=True) + "\n", 0o600)
    except OSError:
        return


def verifications_from_events(events: Iterable[Any], before: Mapping[str, Verification]) -> dict[str, Verification]:
    """What an update's engine EVENTS say about each VM's verification, by student.

    A verification that ran and passed (its outputs came) or failed (an error naming it) is what it
    says, at the event's time; one left as it was ("same") passed before, at BEFORE's time if known.
    A VM whose instance is there but that has no verification has verify=false. VMs the update did
    not reach are left out: their last verification is still the one BEFORE says.
    """
    outcome: dict[str, Verification] = {}
    failures: dict[str, str] = {}
    instances: set[str] = set()
    verified: set[str] = set()
    for event in events:
        diagnostic = getattr(event, "diagnostic_event", None)
        if diagnostic is not None and diagnostic.severity == "error" and diagnostic.urn:
            failures[diagnostic.urn] = _COLOUR.sub("", diagnostic.message).strip()
        for kind in ("resource_pre_event", "res_outputs_event", "res_op_failed_event"):
            step = getattr(event, kind, None)
            if step is None:
                continue
            metadata = step.metadata
            op = str(getattr(metadata.op, "value", metadata.op))
            found = _verification_of(metadata.urn, metadata.type)
            if found is None:
                continue
            student, role = found
            if role == "vm":
                if kind == "res_outputs_event" and op not in _GONE:
                    instances.add(student)
                continue
            if op not in _GONE:
                verified.add(student)
            when: str | None = _when(getattr(event, "timestamp", 0))
            if kind == "res_op_failed_event" and op not in _GONE:
                outcome[student] = Verification(FAILED, when, failures.get(metadata.urn, ""))
            elif kind == "res_outputs_event" and op not in _GONE and outcome.get(student, PASSED) != FAILED:
                if op in ("same", "update"):
                    earlier = before.get(student)
                    when = earlier.at if earlier is not None and earlier.result == PASSED else None
                outcome[student] = Verification(PASSED, when)
    for student in instances - verified:
        outcome[student] = Verification(OFF)
    return outcome


def _verification_of(urn: str, type_: str) -> tuple[str, str] | None:
    """(student, "verify" or "vm") for a VM's verification or instance URN; None for anything else."""
    name = urn.rsplit("::", 1)[-1]
    for role, wanted in (("verify", VERIFICATION), ("vm", INSTANCE)):
        if type_ == wanted and name.endswith(f"-{role}"):
            # A VM is named `course-vm-STUDENT`, or `course-vm` alone (see _vm_change).
            vm = name.removesuffix(f"-{role}")
            return (vm.removeprefix("course-vm-") if vm != "course-vm" else ""), role
    return None


def _when(timestamp: int | float | None) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# The preview, summarised per VM: what the student will find, not what Pulumi does to each resource.

STUDENT_VM = "course-vm:gcp:StudentVm"
INSTANCE = "gcp:compute/instance:Instance"
HOME_DISK = "gcp:compute/disk:Disk"
# A replacement is several engine steps on one URN; delete-before-replace emits all of them.
REPLACING = {"replace", "create-replacement", "delete-replaced", "discard-replaced", "import-replacement"}
CHANGING = {"create", "update", "delete"}


@dataclass(frozen=True)
class VmChange:
    """What a preview does to one student's VM."""

    student: str
    """The student's name; "" for the stack's one VM."""
    action: str
    """create, update, replace (a new instance, a new boot disk), delete, or same."""
    home_disk: str | None
    """The fate of its /home disk (homeDiskSizeGb): kept, created, lost; None without one."""


@dataclass(frozen=True)
class Plan:
    """A preview, per VM, and the changes to what the VMs share (network, firewall, schedule)."""

    vms: tuple[VmChange, ...]
    shared: tuple[tuple[str, str], ...] = ()
    """(resource name, action) of each changed resource outside any VM."""

    @property
    def changes(self) -> bool:
        return bool(self.shared) or any(vm.action != "same" for vm in self.vms)

    @property
    def created(self) -> int:
        """How many new VMs the plan makes; a replaced VM is deleted first, so it adds nothing."""
        return sum(vm.action == "create" for vm in self.vms)


def _op(metadata: Any) -> str:
    op = str(getattr(metadata.op, "value", metadata.op))
    return "replace" if op in REPLACING else op if op in CHANGING else "same"


def plan_from_events(events: Iterable[Any]) -> Plan:
    """The per-VM plan of a preview's engine events (pulumi.automation.EngineEvent, or alike)."""
    steps: dict[str, tuple[str, str, str]] = {}  # URN -> (type, op, parent URN)
    for event in events:
        pre = getattr(event, "resource_pre_event", None)
        if pre is None:
            continue
        metadata = pre.metadata
        state = metadata.new or metadata.old
        if steps.get(metadata.urn, ("", ""))[1] == "replace":
            continue
        steps[metadata.urn] = (metadata.type, _op(metadata), state.parent if state else "")

    def vm_of(urn: str) -> str | None:
        # By the URNs' own types, so a VM whose component has no step of its own is still found.
        seen: set[str] = set()
        while urn and urn not in seen:
            if _urn_type(urn) == STUDENT_VM:
                return urn
            seen.add(urn)
            urn = steps[urn][2] if urn in steps else ""
        return None

    children: dict[str, dict[str, list[str]]] = {}
    shared: list[tuple[str, str]] = []
    for urn, (type_, op, _parent) in steps.items():
        vm = vm_of(urn)
        if vm is None:
            if op != "same" and not type_.startswith("pulumi:") and not type_.startswith("course-vm:"):
                shared.append((urn.rsplit("::", 1)[-1], op))
        else:
            found = children.setdefault(vm, {})
            if vm != urn:
                found.setdefault(type_, []).append(op)
    vms = [_vm_change(urn, steps, found) for urn, found in children.items()]
    return Plan(tuple(sorted(vms, key=lambda vm: vm.student)), tuple(sorted(shared)))


def student_of(vm_urn: str, parent: str) -> str:
    """The student whose StudentVm VM_URN is ("" for a stack's one VM), given its PARENT's URN.

    A VM is named `COURSE-STUDENT` after the CourseVm that holds it (`course-vm` in __main__.py),
    and a stack's one VM `COURSE`.
    """
    name, course = vm_urn.rsplit("::", 1)[-1], parent.rsplit("::", 1)[-1] if parent else "course-vm"
    return name.removeprefix(f"{course}-") if name != course else ""


def _urn_type(urn: str) -> str:
    """The type of the resource URN names: `urn:pulumi:STACK::PROJECT::PARENT-TYPE$...$TYPE::NAME`."""
    parts = urn.split("::", 3)
    return parts[2].rsplit("$", 1)[-1] if len(parts) == 4 else ""


def _vm_change(urn: str, steps: Mapping[str, tuple[str, str, str]], children: Mapping[str, list[str]]) -> VmChange:
    _type, own, parent = steps.get(urn, (STUDENT_VM, "same", ""))
    student = student_of(urn, parent)
    instance = children.get(INSTANCE, [])
    if own in ("create", "delete"):
        action = own
    elif "replace" in instance or "delete" in instance or "create" in instance:
        action = "replace"
    elif own == "update" or any(op != "same" for ops in children.values() for op in ops):
        action = "update"
    else:
        action = "same"
    disks = children.get(HOME_DISK, [])
    home = None
    if disks:
        home = "lost" if {"delete", "replace"} & set(disks) else "created" if "create" in disks else "kept"
    return VmChange(student, action, home)


# The Pulumi engine's failures, as one error: what failed, the engine's own lines, a next step.

_SETTINGS = re.compile(r"course-vm settings: \d+ problems?, nothing was created:")
_COLOUR = re.compile(r"<\{%[^%]*%\}>")


@contextmanager
def engine_errors(
    doing: str, stack_name: str, events: Sequence[Any], *, project: str | None = None, again: str | None = "up"
) -> Iterator[None]:
    """Turn the Pulumi CLI's failures inside into an EngineError (SettingsError for the program's settings).

    DOING says what failed ("update stack dev"); EVENTS are the engine events seen so far, whose
    error diagnostics are the engine's clearest lines; AGAIN is the command to run again (None: the same).
    """
    from pulumi.automation import errors

    try:
        yield
    except errors.CommandError as error:
        diagnostics = [
            _COLOUR.sub("", event.diagnostic_event.message)
            for event in events
            if getattr(event, "diagnostic_event", None) is not None and event.diagnostic_event.severity == "error"
        ]
        concurrent = isinstance(error, errors.ConcurrentUpdateError)
        raise engine_error(doing, stack_name, str(error), diagnostics, project, concurrent, again) from None


RAW_CLI_NOTE = (
    'The pulumi commands above reach this stack after `eval "$(course-vm env)"` '
    "(PowerShell: `course-vm env | Out-String | Invoke-Expression`)."
)
"""What `up` adds to the program's settings problems: their Fix lines are raw pulumi commands."""


def engine_error(
    doing: str, stack_name: str, text: str, diagnostics: Sequence[str], project: str | None, concurrent: bool,
    again: str | None,
) -> CourseVmError:  # fmt: skip
    """The error for a failed Pulumi CLI command whose CommandError reads TEXT (`code:`, `stdout:`, `stderr:`)."""
    everything = "\n".join([text, *diagnostics])
    problems = settings_problems(everything)
    if problems:
        return SettingsError(problems, note=RAW_CLI_NOTE)
    stderr = text.rsplit("\n stderr: ", 1)[-1]
    lines = engine_lines([line for message in diagnostics for line in message.splitlines()], error_lines(stderr))
    said = "\n".join(f"  {line}" for line in lines) or "  (the Pulumi CLI said nothing more)"
    rerun = f"`course-vm {again}` again" if again else "the same command again"
    fix = next_step(everything, stack_name, project, concurrent, rerun)
    return EngineError(f"Pulumi could not {doing}:\n{said}\nFix: {fix}")


def settings_problems(text: str) -> list[str]:
    """The problems of the program's SettingsError in the engine's output, as the program listed them."""
    lines = text.splitlines()
    for index, line in enumerate(lines):
        if _SETTINGS.search(line):
            problems = []
            for following in lines[index + 1 :]:
                if not following.strip().startswith("- "):
                    break
                problems.append(following.strip()[2:])
            return problems
    return []


def error_lines(stderr: str) -> list[str]:
    """The `error:` lines of the CLI's stderr, each with the indented lines that continue it."""
    kept: list[str] = []
    inside = False
    for line in stderr.splitlines():
        if line.lstrip().startswith("error:"):
            inside = True
        elif not (inside and line[:1].isspace() and line.strip()):
            inside = False
        if inside:
            kept.append(line)
    return kept


def engine_lines(*groups: Sequence[str]) -> list[str]:
    """GROUPS of the engine's lines, stripped, without duplicates or a Python traceback's frames."""
    kept: list[str] = []
    for group in groups:
        traceback_indent: int | None = None
        for line in group:
            indent = len(line) - len(line.lstrip())
            text = line.strip()
            if text == "Traceback (most recent call last):":
                traceback_indent = indent
                continue
            if traceback_indent is not None:
                if indent > traceback_indent or text.startswith('File "'):
                    continue
                traceback_indent = None
            if text and text not in kept:
                kept.append(text)
    return kept


def next_step(text: str, stack_name: str, project: str | None, concurrent: bool, again: str) -> str:
    """What to do about the failure the engine's TEXT describes."""
    if concurrent or "currently locked by" in text or "Another update is currently in progress" in text:
        # course-vm env sets up the shell (POSIX or PowerShell) for the raw CLI: backend, passphrase, directory.
        return (
            f"if no other `up` or `down` of stack {stack_name} is still running, clear its lock with "
            f"`pulumi cancel --yes --stack {stack_name}` in a shell set up by `course-vm env` "
            '(`eval "$(course-vm env)"`; PowerShell: `course-vm env | Out-String | Invoke-Expression`), '
            f"then run {again}"
        )
    api = re.search(r"apis/api/([\w.-]+)/overview\?project=([\w-]+)", text)
    named = re.search(r"has not been used in project ([\w-]+)", text)
    if api or named or "SERVICE_DISABLED" in text or "accessNotConfigured" in text:
        service = api.group(1) if api else "compute.googleapis.com"
        where = api.group(2) if api else named.group(1) if named else project or "YOUR-PROJECT-ID"
        return (
            f"enable the API with `gcloud services enable {service} --project {where}`, wait a minute, then run {again}"
        )
    if re.search(r"QUOTA_EXCEEDED|quotaExceeded|Quota '[^']*' exceeded|quota exceeded", text, re.IGNORECASE):
        page = "https://console.cloud.google.com/iam-admin/quotas" + (f"?project={project}" if project else "")
        return f"ask for more quota at {page}, or use another zone (--zone) or a smaller machineType; then run {again}"
    credentials = (
        "could not find default credentials",
        "application default credentials",
        "invalid_grant",
        "oauth2: cannot fetch token",
        "reauthentication",
        "invalid_rapt",
        "unauthenticated",
    )
    if any(marker in text.lower() for marker in credentials):
        return f"log in for applications with `gcloud auth application-default login`, then run {again}"
    return f"act on the engine's lines above, then run {again}"


def stack_outputs(project_dir: Path, stack_name: str | None) -> dict[str, Any]:
    """The stack's outputs with each VM as the stack's state has it (see with_state), read with the
    Pulumi CLI (`stack output`, then `stack export`). Raises CourseVmError when that is not possible."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise MissingPrerequisiteError(
            f"the Pulumi CLI is needed to read the stack's outputs and is not installed. Fix: {PULUMI_INSTALL}"
        )
    if not project_dir.is_dir():
        raise CourseVmError(f"no stack yet: {project_dir} does not exist. Fix: run `course-vm up` first")
    command = [pulumi, "stack", "output", "--json", "--show-secrets", *(["--stack", stack_name] if stack_name else [])]
    # The backend `up` uses: without it the CLI would look for the stack somewhere else.
    added = backend_environment()
    environment = {**os.environ, **added}
    result = subprocess.run(command, cwd=project_dir, env=environment, capture_output=True, text=True, check=False)
    mapped = state_error(stack_name or "(selected)", result.stderr, added) if result.returncode else None
    if mapped is not None:
        raise mapped
    stack = stack_name or DEFAULT_STACK
    if result.returncode != 0:
        if "no stack named" in result.stderr or "no stack selected" in result.stderr:
            backend = added.get("PULUMI_BACKEND_URL") or chosen_backend()
            raise CourseVmError(
                f"there is no stack {stack} on {backend}. Fix: `course-vm status --stack NAME` "
                f"names the stacks that exist; `course-vm up --stack {stack}` creates this one"
            )
        raise CourseVmError(
            f"`pulumi stack output` failed: {result.stderr.strip()}. Fix: `course-vm status --stack {stack}` "
            "shows whether the stack exists; `course-vm up --stack NAME` creates it"
        )
    outputs = with_state(
        json.loads(result.stdout or "{}"), exported_state(pulumi, project_dir, stack_name, environment)
    )
    missing = [] if outputs.get("students") else [k for k in ("ip", "username", "identityFile") if not outputs.get(k)]
    if missing:
        raise CourseVmError(f"the stack has no {', '.join(missing)} output. Fix: `course-vm up --stack {stack}` first")
    return dict(outputs)


# Each VM as the stack's state has it. Pulumi keeps a failed update's stack outputs as they were
# (pulumi/pulumi#15754, #16289): after a first `up` none, after a later one the last successful
# update's. But each StudentVm registers its own outputs (register_outputs), and the engine
# checkpoints them as it gets them, in an update that fails too (pkg/resource/deploy/
# step_executor.go ExecuteRegisterResourceOutputs -> the backend's SnapshotManager
# .RegisterResourceOutputs, which persists the snapshot), so `pulumi stack export` holds every VM
# that finished. A StudentVm that did not finish registered nothing: a new
# one has no outputs, an older one keeps its previous ones (a same step retains the old outputs).

# Pulumi's marker of a secret value (SIG_KEY: SIG), not secrets.
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"  # noqa: S105
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105
STACK_RESOURCE = "pulumi:pulumi:Stack"
ADDRESS = "gcp:compute/address:Address"


@dataclass(frozen=True)
class StateVms:
    """The VMs of a stack's exported state (see state_vms)."""

    vms: dict[str, dict[str, Any]]
    """Each VM's own outputs by student ("" for a stack's one VM): those that have an address."""
    unfinished: frozenset[str]
    """The students whose VM is in the state without outputs: its first update did not finish."""
    root: dict[str, Any]
    """The stack's outputs as the state keeps them (the last successful update's)."""
    project: str | None
    """The project the VMs' resources are in."""


def _plain(value: Any) -> Any:
    """VALUE of an exported deployment with each secret as its value: `--show-secrets` writes one as
    {SIG_KEY: SIG, "plaintext": its JSON text}, without it {SIG_KEY: SIG, "ciphertext": ...} (None here)."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            try:
                return _plain(json.loads(value["plaintext"]))
            except (KeyError, TypeError, ValueError):
                return None
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def state_vms(deployment: Mapping[str, Any]) -> StateVms | None:
    """The VMs of DEPLOYMENT (the `deployment` of `pulumi stack export`: `resources`, each with `urn`,
    `type`, `parent`, `outputs`); None when it holds no StudentVm (no VM yet, or a foreign layout)."""
    resources = [r for r in deployment.get("resources") or [] if isinstance(r, dict) and not r.get("delete")]
    vms: dict[str, dict[str, Any]] = {}
    unfinished: set[str] = set()
    root: dict[str, Any] = {}
    project = None
    for resource in resources:
        outputs = _plain(resource.get("outputs") or {})
        if not isinstance(outputs, dict):
            continue
        if resource.get("type") == STUDENT_VM:
            student = student_of(str(resource.get("urn", "")), str(resource.get("parent") or ""))
            if outputs.get("ip"):
                vms[student] = outputs
            else:
                unfinished.add(student)
        elif resource.get("type") == STACK_RESOURCE:
            root = outputs
        elif (
            resource.get("type") in (INSTANCE, ADDRESS) and project is None and isinstance(outputs.get("project"), str)
        ):
            project = outputs["project"]
    if not vms and not unfinished:
        return None
    return StateVms(vms, frozenset(unfinished), root, project)


def with_state(outputs: Mapping[str, Any], state: StateVms | None) -> dict[str, Any]:
    """A stack's OUTPUTS with each VM as its STATE has it (None: OUTPUTS as they are).

    A VM's own outputs replace its entry under `students` (for a stack's one VM, the outputs
    themselves), a student whose VM the state no longer holds is left out, one that only the state
    holds is added; `project` comes from the VMs' resources when the outputs have none.
    """
    merged = dict(outputs)
    if state is None:
        return merged
    if not merged.get("project") and state.project:
        merged["project"] = state.project
    named = {name: vm for name, vm in state.vms.items() if name}
    if named or state.unfinished - {""}:
        known = set(state.vms) | state.unfinished
        kept = {name: vm for name, vm in (outputs.get("students") or {}).items() if name in known}
        merged["students"] = {**kept, **named}
    elif "" in state.vms:
        merged.update(state.vms[""])
    return merged


def existing_vms(stack: StackLike, students: Collection[str]) -> list[Existing]:
    """The machine type and disk GB (boot and home) that STUDENTS' VMs have now, from STACK's state
    (`pulumi stack export`); those it does not show are left out, and an unreadable state shows none."""
    from pulumi.automation import errors

    try:
        deployment = getattr(stack.export_stack(), "deployment", None)
    except (errors.CommandError, ValueError):
        return []
    resources = [r for r in (deployment or {}).get("resources") or [] if isinstance(r, dict) and not r.get("delete")]
    owner = {
        str(r.get("urn")): student_of(str(r.get("urn", "")), str(r.get("parent") or ""))
        for r in resources
        if r.get("type") == STUDENT_VM
    }
    machine: dict[str, str] = {}
    disk_gb: dict[str, int] = {}
    for resource in resources:
        student = owner.get(str(resource.get("parent")))
        outputs = resource.get("outputs")
        if student is None or not isinstance(outputs, dict):
            continue
        try:
            if resource.get("type") == INSTANCE:
                machine[student] = str(outputs["machineType"]).rsplit("/", 1)[-1]
                disk_gb[student] = disk_gb.get(student, 0) + int(outputs["bootDisk"]["initializeParams"]["size"])
            elif resource.get("type") == HOME_DISK:
                disk_gb[student] = disk_gb.get(student, 0) + int(outputs["size"])
        except (KeyError, TypeError, ValueError):
            continue  # a state of another shape: that VM is not compared
    return [Existing(machine[name], disk_gb.get(name, 0)) for name in students if name in machine]


def state_of(stack: StackLike) -> StateVms | None:
    """The VMs of STACK's state (`pulumi stack export`, through the Automation API); None when it cannot
    be read (the commands then go on with the outputs alone)."""
    from pulumi.automation import errors

    try:
        exported = stack.export_stack()
    except (errors.CommandError, ValueError):
        return None
    deployment = getattr(exported, "deployment", None)
    return state_vms(deployment) if isinstance(deployment, Mapping) else None


def exported_state(
    pulumi: str, project_dir: Path, stack_name: str | None, environment: Mapping[str, str]
) -> StateVms | None:
    """The VMs of the stack's state, read with the Pulumi CLI PULUMI (`stack export`, without secrets:
    a VM's outputs hold none); None when it cannot be read (the outputs then stand alone)."""
    command = [pulumi, "stack", "export", *(["--stack", stack_name] if stack_name else [])]
    result = subprocess.run(command, cwd=project_dir, env=environment, capture_output=True, text=True, check=False)
    try:
        exported = json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:
        return None
    deployment = exported.get("deployment") if isinstance(exported, dict) else None
    return state_vms(deployment) if isinstance(deployment, Mapping) else None


def stack_vms(
    outputs: dict[str, Any], only: Sequence[str] | None = None, stack_name: str | None = None
) -> dict[str, dict[str, Any]]:
    """The stack's VMs in its outputs, by student name ("" for a stack's one VM); ONLY: those named.

    Raises CourseVmError for a name not on the roster, and for a student's name no roster can hold:
    anyone who can write the stack's state can write any name there (`..` would be a hand-out folder).
    """
    students = outputs.get("students")
    changed = (
        "someone changed the stack's outputs or state, so course-vm acts on none of its VMs. Fix: check who else "
        "can write to the stack's Pulumi backend, then run `course-vm up` for the stack to write its outputs again "
        "from the roster"
    )
    if students and not isinstance(students, dict):
        raise CourseVmError(f"the stack's `students` output is no mapping of names to VMs: {changed}")
    for name in students or ():
        why = student_name_problem(name)
        if why:
            shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
            raise CourseVmError(
                f"the stack's outputs name a student {shown}, which is no student's name ({why}): {changed}"
            )
    vms: dict[str, dict[str, Any]] = dict(students or {"": outputs})
    unknown = [name for name in only or () if name not in vms]
    if unknown:
        known = ", ".join(name for name in vms if name) or "(none: the stack is not a class)"
        # A student on the roster whose first `up` did not finish has no VM in the stack yet.
        raise CourseVmError(
            f"no student {', '.join(unknown)} among the stack's VMs. Fix: one of {known} (a student just added "
            f"to the roster, or whose VM's first `course-vm up` did not finish, has none yet: run "
            f"`{command('up', stack_name or DEFAULT_STACK)}`)"
        )
    return {name: vms[name] for name in only or vms}


def raw_cli_lines(*, windows: bool = ON_WINDOWS) -> list[str]:
    """Shell lines that give the raw `pulumi` CLI what course-vm gives it: the same backend, the same
    passphrase, the same Python for the program, the same project directory (PowerShell's syntax on
    Windows, POSIX sh elsewhere)."""
    environment = {**backend_environment(), **runtime_environment()}
    chosen = chosen_backend()
    lines = [
        f"# course-vm's own backend; or once for all shells: pulumi login {state_dir().as_uri()}"
        if chosen is None
        else f"# your Pulumi backend {chosen}: course-vm uses it with your own passphrase settings, as pulumi does"
    ]
    for name, value in environment.items():
        lines.append(
            f"$env:{name} = '{value.replace(chr(39), chr(39) * 2)}'"
            if windows
            else f"export {name}={shlex.quote(value)}"
        )
    directory = str(project_directory())
    lines.append(
        f"Set-Location '{directory.replace(chr(39), chr(39) * 2)}'" if windows else f"cd {shlex.quote(directory)}"
    )
    return lines
