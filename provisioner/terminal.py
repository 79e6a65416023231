"""Text from a VM made safe to show in a terminal: escape sequences removed, other controls made visible."""

from __future__ import annotations

import re

# Whatever a VM prints (a log line, an error, a command's output) may hold terminal escape
# sequences: OSC 52 writes the instructor's clipboard, others retitle the window, clear the screen
# or hide text. A report quotes the VM in many places and reaches more than one terminal (the CLI,
# and Pulumi's error for the verification resource), so the records clean what they hold.
_SEQUENCE = re.compile(
    # String commands (OSC, DCS, SOS, PM, APC) up to their terminator, or up to the next control
    # character if they have none: a terminal would swallow what follows.
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x00-\x1f\x7f-\x9f]*(?:\x07|\x1b\\|\x9c)?"
    r"|(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI: colours, cursor moves, screen clears
    r"|\x1b[ -/]*[0-~]"  # the other escape sequences: charset selection, full reset, ...
)
_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f"  # C0 but tab and newline, DEL, C1
    "\u200e\u200f\u202a-\u202e\u2066-\u2069]"  # bidirectional overrides, which reorder what is shown
)


def printable(text: str) -> str:
    """TEXT without terminal escape sequences, line ends as \\n, other control characters as \\xNN.

    Tabs and newlines stay. Cleaning twice gives the same text.
    """
    text = _SEQUENCE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _CONTROL.sub(_visible, text)


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
