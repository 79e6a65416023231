"""Settings problems as data (key, value, why, and a fix in steps), and the words each front end says them in."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from provisioner.errors import SettingsError
from provisioner.recipe.public_keys import NOT_SHOWN, holds_private_key


@dataclass(frozen=True)
class SetKey:
    """Set KEY to EXAMPLE; for a list, set EXAMPLE as its item AT."""

    key: str
    example: str
    """As it is typed: a boolean already `true` or `false`, a path with a space already quoted."""
    at: int | None = None


@dataclass(frozen=True)
class RemoveKey:
    """Remove KEY from the settings."""

    key: str
    aside: bool = False
    """Pulumi's words put the command in an aside, `remove it (pulumi config rm KEY)`; the flags' need none."""


@dataclass(frozen=True)
class Say:
    """Words every front end says alike: they name no way of setting a key."""

    text: str


Step = SetKey | RemoveKey | Say


@dataclass(frozen=True)
class Fix:
    """What to do about a problem, in steps that each front end words itself.

    `+` joins fixes and text, so that a fix reads as it is said: `"keep one: " + remove_key("students")`.
    """

    steps: tuple[Step, ...] = ()

    def __add__(self, other: Fix | str) -> Fix:
        return Fix(self.steps + as_fix(other).steps)

    def __radd__(self, other: str) -> Fix:
        return Fix(as_fix(other).steps + self.steps)


def as_fix(fix: Fix | str) -> Fix:
    """FIX, or the text FIX as a fix that every front end says as it is."""
    return Fix((Say(fix),)) if isinstance(fix, str) else fix


def set_key(key: str, example: object, *, at: int = 0) -> Fix:
    """Set KEY to EXAMPLE, written as `pulumi config` takes it; a list EXAMPLE sets its first item as item AT
    (an empty one: a placeholder the user fills in)."""
    if isinstance(example, list):
        return Fix((SetKey(key, f"{example[0]}" if example else "VALUE", at),))
    if isinstance(example, bool):
        example = str(example).lower()
    return Fix((SetKey(key, f"{example}"),))


def remove_key(key: str, *, aside: bool = False) -> Fix:
    """Remove KEY (ASIDE: see RemoveKey.aside)."""
    return Fix((RemoveKey(key, aside),))


Words = Callable[[Step], str]
"""How a front end says each step of a fix."""


def pulumi_words(step: Step) -> str:
    """STEP as the Pulumi program and `course-vm up` say it: the `pulumi config` command that takes it."""
    if isinstance(step, SetKey):
        if step.at is None:
            return f"pulumi config set {step.key} {step.example}"
        return f"pulumi config set --path '{step.key}[{step.at}]' {step.example}"
    if isinstance(step, RemoveKey):
        command = f"pulumi config rm {step.key}"
        return f"remove it ({command})" if step.aside else command
    return step.text


def set_flag_words(step: Step) -> str:
    """STEP as `course-vm local up` says it: the `--set KEY=VALUE` flag that takes it, or leaving one out.

    A list is given whole by one flag, so a list's item becomes a list of that item.
    """
    if isinstance(step, SetKey):
        if step.at is None:
            return f"--set {step.key}={step.example}"
        return f"--set '{step.key}=[\"{step.example}\"]'"
    if isinstance(step, RemoveKey):
        return f"leave out --set {step.key}=..."
    return step.text


@dataclass(frozen=True)
class Problem:
    """One problem of the settings: which key, what it holds, why that cannot be, and the fix."""

    key: str
    """The key as the problem names it: a setting, a list's item (`students[2]`), a roster's line, `gcp:zone`."""
    value: str | None
    """What the key holds as every message shows it (its repr, so a newline shows as `\\n`); None: not set."""
    why: str
    fix: Fix

    def in_words(self, words: Words) -> str:
        """The problem's line, its fix in WORDS."""
        fix = "".join(words(step) for step in self.fix.steps)
        if self.value is None:
            return f"{self.key}: not set. Fix: {fix}"
        return f"{self.key}: got {self.value}, but {self.why}. Fix: {fix}"

    def in_pulumi_words(self) -> str:
        """The problem's line as the Pulumi program and `course-vm up` say it (SettingsError's own lines)."""
        return self.in_words(pulumi_words)


class Problems:
    """Collects problems so that all are reported together."""

    def __init__(self) -> None:
        self.records: list[Problem] = []

    def add(self, key: str, value: object, why: str, fix: Fix | str) -> None:
        """KEY holds VALUE, which cannot be because WHY; a FIX given as text is said alike by every front end.
        A VALUE holding a private key (pasted into the wrong setting) is never shown."""
        shown = repr(value)
        self.records.append(Problem(key, NOT_SHOWN if holds_private_key(shown) else shown, why, as_fix(fix)))

    def not_set(self, key: str, fix: Fix | str) -> None:
        """KEY is required and has no value."""
        self.records.append(Problem(key, None, "", as_fix(fix)))

    @property
    def lines(self) -> list[str]:
        """Each problem's line in Pulumi's words, as SettingsError shows it."""
        return [problem.in_pulumi_words() for problem in self.records]


def records_of(error: SettingsError) -> tuple[Problem, ...]:
    """ERROR's problems as records, for a front end to word them itself.

    Raises ValueError when some were given as text (another stack's key claims, lines read back
    from the engine's output): those have no record.
    """
    records = tuple(record for record in error.records if isinstance(record, Problem))
    if len(records) != len(error.problems):
        raise ValueError(f"{len(error.problems) - len(records)} of the problems are text, not records: {error}")
    return records


# The JSON form: how the Pulumi program hands its problems to the `course-vm` driver, which words them
# itself, instead of the driver reading them back out of the engine's text.

_STEPS: Mapping[str, tuple[type[Step], Mapping[str, tuple[type, ...]]]] = {
    "set": (SetKey, {"key": (str,), "example": (str,), "at": (int, type(None))}),
    "remove": (RemoveKey, {"key": (str,), "aside": (bool,)}),
    "say": (Say, {"text": (str,)}),
}
"""Each step's name in JSON, its record, and the JSON types of its fields."""
_PROBLEM_FIELDS: Mapping[str, tuple[type, ...]] = {"key": (str,), "value": (str, type(None)), "why": (str,)}


def to_json(problems: Sequence[Problem]) -> list[dict[str, Any]]:
    """PROBLEMS as plain lists and dicts, which `json.dumps` writes and `from_json` reads back."""
    names = {record: name for name, (record, _) in _STEPS.items()}
    return [
        {
            "key": problem.key,
            "value": problem.value,
            "why": problem.why,
            "fix": [{"step": names[type(step)], **asdict(step)} for step in problem.fix.steps],
        }
        for problem in problems
    ]


def from_json(data: object) -> tuple[Problem, ...]:
    """The problems that `to_json` gave as DATA (what `json.loads` made of it).

    Raises ValueError when DATA is not such a list, naming what is wrong.
    """
    if not isinstance(data, list):
        raise ValueError(f"settings problems are a JSON list, not {type(data).__name__}")
    problems = []
    for index, item in enumerate(data):
        fields = _fields(item, {**_PROBLEM_FIELDS, "fix": (list,)}, f"problem {index}")
        steps = [_step(step, f"problem {index}, step {at}") for at, step in enumerate(fields.pop("fix"))]
        problems.append(Problem(**fields, fix=Fix(tuple(steps))))
    return tuple(problems)


def _step(data: object, where: str) -> Step:
    name = data.get("step") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(name, str) or name not in _STEPS:
        raise ValueError(f"{where}: a step is an object whose `step` is one of {', '.join(_STEPS)}")
    record, types = _STEPS[name]
    return record(**_fields({k: v for k, v in data.items() if k != "step"}, types, where))


def _fields(data: object, types: Mapping[str, tuple[type, ...]], where: str) -> dict[str, Any]:
    """DATA, an object with exactly the fields TYPES names, each of its type (`true` is no number here)."""
    if not isinstance(data, dict) or set(data) != set(types):
        raise ValueError(f"{where}: expected an object with the fields {', '.join(types)}")
    wrong = [name for name, value in data.items() if type(value) not in types[name]]
    if wrong:
        raise ValueError(f"{where}: {', '.join(wrong)} of the wrong type")
    return dict(data)


def as_given(error: SettingsError) -> Sequence[str | Problem]:
    """ERROR's problems as records, for a front end to word them itself; as text when some were given as text."""
    try:
        return records_of(error)
    except ValueError:
        return error.problems


def error_to_json(error: SettingsError) -> list[Any]:
    """ERROR's problems as JSON: its records as `to_json` gives them, or, when it holds problems given as text
    (another stack's key claims), each problem's line as it is."""
    try:
        return to_json(records_of(error))
    except ValueError:
        return list(error.problems)


def error_from_json(data: object, note: str = "") -> SettingsError:
    """The SettingsError that `error_to_json` gave as DATA, with NOTE after its problems.

    Raises ValueError when DATA is neither form.
    """
    if isinstance(data, list) and data and all(isinstance(item, str) for item in data):
        return SettingsError(data, note=note)
    return SettingsError(from_json(data), note=note)
