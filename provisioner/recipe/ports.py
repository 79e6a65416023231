"""The VM's ports a student reaches from their laptop through ssh (`forwardPorts`): the record, its text, its rule."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from provisioner.recipe.problems import Problems, set_key
from provisioner.recipe.rules import Setting, as_list

MIN_PORT, MAX_PORT = 1024, 65535
"""Below 1024 a laptop binds only as root, and the course's tools listen above it."""
MAX_FORWARDS = 16
_FORWARD = re.compile(r"([0-9]{1,5})(?::([0-9]{1,5}))?")


@dataclass(frozen=True)
class PortForward:
    """The VM's port REMOTE, reached at the laptop's loopback port LOCAL while an ssh session is open."""

    local: int
    remote: int

    @property
    def text(self) -> str:
        """As the setting and the outputs write it: `5000`, or `5001:5000` when the laptop's port differs."""
        return str(self.remote) if self.local == self.remote else f"{self.local}:{self.remote}"


DEFAULT_FORWARDS = (PortForward(8888, 8888), PortForward(5000, 5000))
"""Jupyter and MLflow, the course's first two tools."""
DEFAULT_FORWARD_TEXTS = tuple(forward.text for forward in DEFAULT_FORWARDS)


def parse_forward(text: object) -> PortForward | None:
    """The forward TEXT writes (`PORT` or `LOCAL:REMOTE`, ports MIN_PORT to MAX_PORT, or a whole number); None
    when it is none."""
    if isinstance(text, int) and not isinstance(text, bool):
        text = str(text)
    match = _FORWARD.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        return None
    local = int(match[1])
    remote = int(match[2]) if match[2] else local
    if not (MIN_PORT <= local <= MAX_PORT and MIN_PORT <= remote <= MAX_PORT):
        return None
    return PortForward(local, remote)


def forward_ports(problems: Problems, setting: Setting, value: object) -> tuple[PortForward, ...]:
    """The rule of `forwardPorts`: at most MAX_FORWARDS ports, each `PORT` or `LOCAL:REMOTE`, no laptop port twice."""
    key = setting.key
    items = as_list(value)
    if items is None:
        problems.add(key, value, "it must be a list of ports like 8888 or 5001:5000", set_key(key, ["8888"]))
        return ()
    if len(items) > MAX_FORWARDS:
        why = f"at most {MAX_FORWARDS} ports are forwarded (each is a listening socket on the laptop)"
        problems.add(key, f"{len(items)} ports", why, f"keep the {MAX_FORWARDS} the course needs")
        return ()
    forwards: list[PortForward] = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        forward = parse_forward(item)
        if forward is None:
            why = f"it is not a port from {MIN_PORT} to {MAX_PORT}, or LOCAL:REMOTE of two such ports (5001:5000)"
            problems.add(where, item, why, set_key(key, ["8888"], at=index))
        elif any(other.local == forward.local for other in forwards):
            why = f"the laptop's port {forward.local} is forwarded already: each of its ports can listen once"
            fix = set_key(key, [f"{_free_port(forwards, forward)}:{forward.remote}"], at=index)
            problems.add(where, item, why, fix)
        else:
            forwards.append(forward)
    return tuple(forwards)


def _free_port(forwards: list[PortForward], taken: PortForward) -> int:
    """A laptop port near TAKEN's that no forward uses yet, for a fix to suggest."""
    used = {forward.local for forward in forwards} | {taken.local}
    above, below = range(taken.local + 1, MAX_PORT + 1), range(MIN_PORT, taken.local)
    return next(port for port in itertools.chain(above, below) if port not in used)
