"""One command's session with a stack: its config, state and outputs read at most once, its changes made once."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import NoReturn

from provisioner.driver.config import StackConfig
from provisioner.driver.engine_errors import (
    RAW_CLI_NOTE,
    engine_error,
    is_missing_stack,
    no_such_stack,
    passphrase_error,
)
from provisioner.driver.events import EngineLog, read_event_log
from provisioner.driver.plan import Plan, plan_of
from provisioner.driver.state import StackState, walk
from provisioner.driver.workspace import CliError, CliResult, OnOutput, Workspace
from provisioner.errors import CourseVmError, EngineError
from provisioner.recipe.names import student_name_problem
from provisioner.recipe.problems import error_from_json
from provisioner.stack import PROBLEMS_VARIABLE, StackOutputs


class EngineRunError(EngineError):
    """An update the engine failed: its error, and the events it wrote (which VMs' steps failed)."""

    def __init__(self, error: EngineError, log: EngineLog) -> None:
        super().__init__(str(error))
        self.log = log


class EngineInterruptedError(KeyboardInterrupt):
    """Ctrl-C while the engine ran: the events it wrote until it had cancelled (whose verifications ended)."""

    def __init__(self, log: EngineLog) -> None:
        super().__init__()
        self.log = log


class StackSession:
    """Stack NAME through WORKSPACE, for one command: what it reads it reads once and keeps; after a
    change (`update`, `destroy`) the state is read again when asked for. NAME None: the stack selected
    in the Pulumi CLI (the one `up`, `down` or `status` last used, or `pulumi stack select` chose)."""

    def __init__(self, workspace: Workspace, name: str | None) -> None:
        self.workspace = workspace
        self.name = name
        self._state: StackState | None = None
        self._config: StackConfig | None = None

    @property
    def _stack(self) -> list[str]:
        return ["--stack", self.name] if self.name is not None else []

    @property
    def said_name(self) -> str:
        """The stack's name as messages say it."""
        return self.name if self.name is not None else "(the selected one)"

    @classmethod
    def open(cls, name: str | None, *, missing_ok: bool = False, reads_only: bool = False) -> StackSession:
        """The session of stack NAME, its state read (a passphrase that does not fit is one clear error
        before anything changes). With MISSING_OK a stack that does not exist is no error: `exists` is
        then False, until `create`.

        Raises MissingPrerequisiteError when the Pulumi CLI is missing (READS_ONLY words it for a
        command that only reads), CourseVmError when there is no such stack (without MISSING_OK) or the
        passphrase is missing or wrong, EngineError when the CLI fails otherwise.
        """
        session = cls(Workspace.open(reads_only=reads_only), name)
        session._read_state(missing_ok=missing_ok)
        return session

    exists = True
    """Whether the stack exists on the backend (see `open`'s MISSING_OK)."""

    def create(self) -> None:
        """Create the stack (`pulumi stack init`, which selects it too), if it does not exist yet."""
        if not self.exists:
            self._run(["stack", "init", *self._stack[1:]], doing="create")
            self.exists = True
            self._selected = True
            self._config = None  # the stack file that was there before keeps its config

    _selected = False

    def select(self) -> None:
        """Make the stack the one the Pulumi CLI works on when told no other (`pulumi stack select`), as
        `up`, `down` and `status` always have: the raw `pulumi config` lines of their fixes then reach it."""
        if not self._selected and self.name is not None:
            self._run(["stack", "select", *self._stack], doing="select")
            self._selected = True

    def state(self) -> StackState:
        """The stack's state, walked (`pulumi stack export --show-secrets`)."""
        if self._state is None:
            self._read_state(missing_ok=False)
        assert self._state is not None
        return self._state

    def _read_state(self, *, missing_ok: bool) -> None:
        args = ["stack", "export", "--show-secrets", *self._stack]
        try:
            result = self.workspace.run(args)
        except CliError as error:
            if missing_ok and self.name is not None and is_missing_stack(error.result):
                self.exists = False
                self._state = StackState()
                # What `stack init` keeps of a stack file that is there already (none: no config).
                self._config = stack_file_config(self.workspace.directory, self.name)
                return
            self._failed(error.result, doing="read")
        try:
            exported = json.loads(result.stdout or "{}")
        except ValueError:
            exported = {}
        deployment = exported.get("deployment") if isinstance(exported, dict) else None
        self._state = walk(deployment if isinstance(deployment, Mapping) else {})

    def outputs(self) -> StackOutputs:
        """The stack's VMs, each as its state has it (see StackOutputs.parse). Raises CourseVmError for a
        student's name no roster can hold."""
        return self.state().outputs(student_name_problem)

    def config(self) -> StackConfig:
        """The stack's config (`pulumi config --json --show-secrets`)."""
        if self._config is None:
            result = self._run(["config", "--json", "--show-secrets", *self._stack], doing="read the config of")
            try:
                self._config = StackConfig.from_cli(json.loads(result.stdout or "{}"))
            except ValueError:
                self._config = StackConfig()
        return self._config

    def remove(self, keys: Sequence[str]) -> None:
        """Remove KEYS (full keys) from the stack's config."""
        for key in keys:
            self._run(["config", "rm", key, *self._stack], doing="store the settings in")
        self._config = StackConfig(
            {k: v for k, v in self.config().values.items() if k not in keys}, self.config().secret
        )

    def store(
        self, values: Mapping[str, str], lists: Mapping[str, Sequence[str]], secret: Collection[str] = ()
    ) -> None:
        """Set VALUES (full keys; those in SECRET encrypted, as `--secret`) and replace the lists LISTS (own keys)
        in the stack's config."""
        pairs: list[tuple[str, str]] = []
        for key, items in lists.items():
            self._run(["config", "rm", key, *self._stack], doing="store the settings in")
            pairs += [("--plaintext", f"{key}[{index}]={item}") for index, item in enumerate(items)]
        pairs = [
            ("--secret" if key in secret else "--plaintext", f"{key}={value}") for key, value in values.items()
        ] + pairs
        if pairs:
            flags = [part for pair in pairs for part in pair]
            self._run(["config", "set-all", "--path", *flags, *self._stack], doing="store the settings in")
        config = self.config().with_changes(values, lists)
        self._config = StackConfig(config.values, config.secret | (frozenset(secret) & set(values)))

    def preview(self, *, project: str | None = None) -> Plan:
        """What an update would do, per VM (`pulumi preview`); nothing changes."""
        return plan_of(self._engine(["preview"], doing="preview the changes to", project=project))

    def preview_destroy(self) -> Plan:
        """What `destroy` would delete, per VM; nothing changes."""
        return plan_of(self._engine(["destroy", "--preview-only"], doing="preview the deletion of", again="down"))

    def update(self, on_output: OnOutput, *, project: str | None = None, each_vm: bool = True) -> EngineLog:
        """Create or update the stack's resources (`pulumi up`), with EACH_VM one VM's failure keeping none of
        the others from finishing (without it the first failure stops the update, deleting nothing); its
        events. Raises EngineRunError with the events when it fails."""
        self._state = None
        args = ["up", "--yes", "--skip-preview", *(["--continue-on-error"] if each_vm else [])]
        return self._engine(args, doing="update", project=project, on_output=on_output)

    def destroy(self, on_output: OnOutput) -> None:
        """Delete every resource of the stack (`pulumi destroy`)."""
        self._state = None
        self._engine(["destroy", "--yes", "--skip-preview"], doing="delete", again="down", on_output=on_output)

    def _engine(
        self, args: list[str], *, doing: str, project: str | None = None, again: str | None = "up",
        on_output: OnOutput | None = None,
    ) -> EngineLog:  # fmt: skip
        """Run the engine (`pulumi ARGS`: preview, up, destroy) with an event log and a file for the program's
        problems; its events. Its failure is course-vm's error: the SettingsError the program handed
        over, a passphrase or missing-stack error, or else EngineRunError (DOING stack NAME) with the events.
        """
        with tempfile.TemporaryDirectory(prefix="course-vm-") as private:
            events, problems = Path(private) / "events.jsonl", Path(private) / "problems.json"
            extra = {"PULUMI_DEBUG_COMMANDS": "true", PROBLEMS_VARIABLE: str(problems)}
            try:
                self.workspace.run([*args, *self._stack, "--event-log", str(events)], on_output, extra)
            except CliError as error:
                log = read_event_log(events)
                self._refused(error.result, problems)
                name = self.said_name
                failed = engine_error(f"{doing} stack {name}", name, error.result, log, project=project, again=again)
                raise EngineRunError(failed, log) from None
            except KeyboardInterrupt:
                raise EngineInterruptedError(read_event_log(events)) from None
            return read_event_log(events)

    def _refused(self, result: CliResult, problems: Path) -> None:
        """Raise what the failed RESULT means before the engine did anything: the program's SettingsError (its
        PROBLEMS file), a passphrase that does not fit, a stack that does not exist."""
        try:
            refused = error_from_json(json.loads(problems.read_text()), note=RAW_CLI_NOTE)
        except (OSError, ValueError):
            refused = None  # none handed over (the program got no further, or is not this one): the engine's lines
        if refused is not None:
            raise refused
        self._raise_state_error(result)

    def _run(self, args: list[str], *, doing: str) -> CliResult:
        """`pulumi ARGS` (not one of the engine's commands), DOING what to the stack (see _failed)."""
        try:
            return self.workspace.run(args)
        except CliError as error:
            self._failed(error.result, doing=doing)

    def _failed(self, result: CliResult, *, doing: str) -> NoReturn:
        """Raise what the failed RESULT means: a passphrase that does not fit, a stack that does not exist,
        or an EngineError saying what failed (DOING stack NAME)."""
        self._raise_state_error(result)
        name = self.said_name
        raise engine_error(f"{doing} stack {name}", name, result, EngineLog(), project=None, again=None)

    def _raise_state_error(self, result: CliResult) -> None:
        mapped = passphrase_error(self.said_name, result.stderr, self.workspace.environment)
        if mapped is not None:
            raise mapped
        if is_missing_stack(result):
            raise no_such_stack(self.name, self._stack_names())

    def _stack_names(self) -> list[str]:
        """The stacks of this project on the backend (`pulumi stack ls --json`); none when they cannot be listed."""
        try:
            listed = json.loads(self.workspace.run(["stack", "ls", "--json"]).stdout or "[]")
        except (CliError, ValueError):
            return []
        return [str(entry["name"]) for entry in listed if isinstance(entry, dict) and "name" in entry]


def stack_file_config(directory: Path, name: str) -> StackConfig:
    """The config of the stack file `Pulumi.NAME.yaml` in DIRECTORY, for a stack the backend does not have
    yet; none when there is no such file or it cannot be used (`up` then reports that with the settings)."""
    try:
        return StackConfig.from_stack_file(directory / f"Pulumi.{name}.yaml")
    except CourseVmError:
        return StackConfig()
