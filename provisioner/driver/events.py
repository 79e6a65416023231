"""The engine's events, as `pulumi --event-log` writes them, read into typed steps and diagnostics."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pulumi.automation.events import OpType

_COLOUR = re.compile(r"<\{%[^%]*%\}>")


def without_colour(text: str) -> str:
    """TEXT without the engine's colour tags (`<{%reset%}>`), which it writes even with colour off."""
    return _COLOUR.sub("", text)


class StepKind(Enum):
    """Where in a resource's step an event is: about to run it, done with it, or failed."""

    PRE = "resourcePreEvent"
    OUTPUTS = "resOutputsEvent"
    FAILED = "resOpFailedEvent"


@dataclass(frozen=True)
class Step:
    """One event of a step the engine takes on a resource."""

    kind: StepKind
    op: OpType | None
    """What the engine does to the resource; None for an operation this SDK does not know (a newer engine's)."""
    urn: str
    type: str
    parent: str
    """The URN of the resource's parent, from its new state (or its old one, for a deletion); "" if none."""
    timestamp: int


@dataclass(frozen=True)
class Diagnostic:
    """A message of the engine: an error of a resource (its URN) or of the program or engine ("")."""

    severity: str
    message: str
    urn: str
    prefix: str = ""
    """What the CLI shows before the message (`error: `, `warning: `); the engine keeps it apart from it."""

    @property
    def lines(self) -> list[str]:
        """The message's lines as the CLI shows them, the first after its prefix: the engine's closing
        `update failed` is then the `error: update failed` line the CLI shows in its Diagnostics section (on
        stdout, under the stack resource; a failure the engine reported is not written again on stderr)."""
        lines = self.message.splitlines() or [""]
        return [self.prefix + lines[0], *lines[1:]]


@dataclass(frozen=True)
class EngineLog:
    """The events of one preview, update or deletion, in the order the engine wrote them."""

    steps: tuple[Step, ...] = ()
    diagnostics: tuple[Diagnostic, ...] = ()

    @property
    def errors(self) -> list[Diagnostic]:
        """The error diagnostics: the engine's clearest lines about what failed."""
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def stepped(self) -> bool:
        """Whether the engine began a step on any resource (a failure before that changed nothing)."""
        return any(step.kind is StepKind.PRE for step in self.steps)


def _op(value: object) -> OpType | None:
    try:
        return OpType(value)
    except ValueError:
        return None


def parse_events(lines: Iterable[str]) -> EngineLog:
    """The EngineLog of event-log LINES (one JSON object each); a line that is not one is skipped."""
    steps: list[Step] = []
    diagnostics: list[Diagnostic] = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue  # a line cut short when the CLI was killed
        if not isinstance(event, dict):
            continue
        timestamp = event.get("timestamp") if isinstance(event.get("timestamp"), int) else 0
        diagnostic = event.get("diagnosticEvent")
        if isinstance(diagnostic, dict):
            message, prefix = (without_colour(str(diagnostic.get(key) or "")) for key in ("message", "prefix"))
            severity, urn = str(diagnostic.get("severity")), str(diagnostic.get("urn") or "")
            diagnostics.append(Diagnostic(severity, message, urn, prefix))
        for kind in StepKind:
            step = event.get(kind.value)
            metadata = step.get("metadata") if isinstance(step, dict) else None
            if isinstance(metadata, dict):
                steps.append(_step(kind, metadata, int(timestamp or 0)))
    return EngineLog(tuple(steps), tuple(diagnostics))


def _step(kind: StepKind, metadata: dict[str, object], timestamp: int) -> Step:
    state = metadata.get("new") or metadata.get("old")
    parent = state.get("parent") if isinstance(state, dict) else ""
    return Step(
        kind, _op(metadata.get("op")), str(metadata.get("urn") or ""), str(metadata.get("type") or ""),
        str(parent or ""), timestamp,
    )  # fmt: skip


def read_event_log(path: Path) -> EngineLog:
    """The EngineLog in the file PATH the CLI wrote (`--event-log`); empty when it wrote none."""
    try:
        return parse_events(path.read_text(encoding="utf-8", errors="replace").splitlines())
    except FileNotFoundError:
        return EngineLog()
