"""`up`'s options: what they change in a stack's config, checked with the settings' rules before anything else,
each problem's fix a `course-vm up` command."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field

from provisioner.driver.config import CIDRS_KEY, StackConfig
from provisioner.driver.engine_errors import RAW_CLI_NOTE
from provisioner.driver.workspace import refuse_stack_files_left_in_checkout
from provisioner.errors import CourseVmError, SettingsError
from provisioner.paths import project_dir
from provisioner.recipe.problems import Problem, RemoveKey, SetKey, Step, as_given, pulumi_words
from provisioner.recipe.rules import as_list
from provisioner.recipe.settings import PROJECT, SETTINGS
from provisioner.stack import command


@dataclass(frozen=True)
class UpOptions:
    """What `up` was told on its command line; what is given is kept in the stack's config."""

    project: str | None = None
    zone: str | None = None
    allowed: Sequence[str] = ()
    """IPv4 ranges that replace the stored allowedSshCidrs (--allow)."""
    added: Sequence[str] = ()
    """IPv4 ranges appended to them, each once (--add-allow)."""
    sets: Mapping[str, str] = field(default_factory=dict)
    """Settings by key (without `course-vm:`), from --set KEY=VALUE: a list's value is its JSON text; "" removes
    the key, so that its default applies again."""

    def given(self) -> list[str]:
        """The flags that were given, as `declined` names them."""
        flags: list[tuple[str, object]] = [("--project", self.project), ("--zone", self.zone)]
        flags += [("--allow", self.allowed), ("--add-allow", self.added), ("--set", self.sets)]
        return [flag for flag, value in flags if value]


@dataclass(frozen=True)
class ConfigChange:
    """What `up` stores in a stack's config for its options: VALUES (full keys), LISTS (own keys, each replacing
    the stored list) and REMOVED (full keys)."""

    values: Mapping[str, str]
    lists: Mapping[str, Sequence[str]]
    removed: Sequence[str]

    def applied(self, config: StackConfig) -> StackConfig:
        """CONFIG as it is after this change."""
        changed = config.with_changes(self.values, self.lists)
        return StackConfig({k: v for k, v in changed.values.items() if k not in self.removed}, changed.secret)


ARRAYS = frozenset(row.key for row in SETTINGS if row.type == "array")


GCP_KEYS = ("gcp:project", "gcp:zone")
"""The provider's keys, which --set may name too (as --project and --zone do); every other key is course-vm's."""


def full_key(key: str) -> str:
    """KEY of --set as the stack's config names it."""
    return key if key in GCP_KEYS else f"{PROJECT}:{key}"


def config_change(config: StackConfig, options: UpOptions) -> ConfigChange:
    """What OPTIONS change in CONFIG, the stack's config: the flags' values, and the ranges as a list only when it
    differs from the stored one (so that the line `allowedSshCidrs: OLD -> NEW` is said only for a change).

    A list is stored item by item, an empty one as the JSON text `[]` (no item would leave the key unset, and so
    its default). --set allowedSshCidrs=[...] is --allow given whole."""
    values = {key: value for key, value in zip(GCP_KEYS, (options.project, options.zone), strict=True) if value}
    lists: dict[str, Sequence[str]] = {}
    removed: list[str] = []
    for key, text in options.sets.items():
        items = _json_list(text) if key in ARRAYS else None
        if text == "":
            removed.append(full_key(key))
        elif items:
            lists[key] = items
        else:
            values[full_key(key)] = text
    old = config.cidrs()
    given = lists.pop(CIDRS_KEY, None) or options.allowed
    new = list(given) if given else list(old)
    for cidr in options.added:
        if cidr not in new:
            new.append(cidr)
    if new != old:
        lists[CIDRS_KEY] = new
    return ConfigChange(values, lists, [key for key in removed if key in config.values])


def _json_list(text: str) -> list[str] | None:
    """TEXT, a --set value, as the list of strings it writes in JSON; None when it is no such list (the rules
    then say what it must be)."""
    items = as_list(text)
    if items is not None and all(isinstance(item, str | int) and not isinstance(item, bool) for item in items):
        return [str(item) for item in items]
    return None


def up_words(stack_name: str, given: Collection[str] = ()) -> Callable[[Step], str]:
    """How `up` says a fix's steps: the `course-vm up` flag that takes each (--project, --zone, --allow, --set).

    One item of a list: in the list --set GIVEN (keys), that item corrected; in a stored list, the raw
    `pulumi config` line that sets that item alone (a --set would replace the whole list)."""
    up = command("up", stack_name)
    flags = {"gcp:project": "--project", "gcp:zone": "--zone", CIDRS_KEY: "--allow"}

    def words(step: Step) -> str:
        if isinstance(step, SetKey):
            if step.key in flags:
                return f"`{up} {flags[step.key]} {step.example}`"
            if step.at is None:
                return f"`{up} --set {step.key}={step.example}`"
            if step.key in given:
                return f"make item {step.at} of your --set {step.key}=[...] {step.example}"
            return pulumi_words(step)
        if isinstance(step, RemoveKey):
            return f"`{up} --set {step.key}=` (which removes it)"
        return step.text

    return words


NO_ADDRESS = "it has no address before the slash"
"""Why a range without its address (`--allow "$(curl ...)/32"` when the lookup failed) is refused: see ssh_ranges."""
ADDRESS_NOTE = (
    'Your public address (the lookup in `--allow "$(curl -s https://checkip.amazonaws.com)/32"` printed none): '
    "Linux, macOS `curl -s https://checkip.amazonaws.com`; Windows PowerShell "
    "`(Invoke-RestMethod https://checkip.amazonaws.com).Trim()`, as in "
    '`course-vm up --allow "$((Invoke-RestMethod https://checkip.amazonaws.com).Trim())/32"`; '
    "or open https://checkip.amazonaws.com in a browser."
)


def refused(stack_name: str, error: SettingsError, given: Collection[str] = ()) -> SettingsError:
    """ERROR, the stack's settings refused, each Fix a `course-vm up` command (see up_words: GIVEN, the --set keys)."""
    problems = as_given(error)
    words = up_words(stack_name, given)
    lines = [p if isinstance(p, str) else p.in_words(words) for p in problems]
    no_address = any(isinstance(p, Problem) and p.why.startswith(NO_ADDRESS) for p in problems)
    notes = [ADDRESS_NOTE] if no_address else []
    notes += [RAW_CLI_NOTE] if any("pulumi config" in line for line in lines) else []
    return SettingsError(lines, note="\n".join(notes))


def checked_options(stack_name: str, options: UpOptions) -> StackConfig:
    """The stack's config with OPTIONS, from its stack file (no Pulumi CLI needed; none when it cannot be read
    alone), checked before anything else: every problem at once, each Fix a `course-vm up` command. A stack
    file holding secrets, or broken, is checked after the Pulumi CLI has read it.

    Raises SettingsError."""
    refuse_stack_files_left_in_checkout()
    path = project_dir() / f"Pulumi.{stack_name}.yaml"
    try:
        stored = StackConfig.from_stack_file(path) if path.exists() else StackConfig()
    except CourseVmError:
        return config_change(StackConfig(), options).applied(StackConfig())  # checked as the Pulumi CLI reads it
    planned = config_change(stored, options).applied(stored)
    if any(isinstance(value, dict) for value in stored.values.values()):
        return planned  # a secret (`secure:`): the Pulumi CLI's reading of it is checked once it is there
    try:
        planned.settings()
    except SettingsError as error:
        raise refused(stack_name, error, options.sets) from None
    return planned
