"""Remote text made safe for a terminal: escape sequences removed, other control characters shown."""

from __future__ import annotations

import pytest

from provisioner.terminal import printable

OSC_52 = "\x1b]52;c;cm0gLXJmIH4K\x07"  # "write `rm -rf ~` to the clipboard"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain\ttext\nnext line", "plain\ttext\nnext line"),
        (f"before{OSC_52}after", "beforeafter"),
        ("a\x1b]52;c;cm0=\x1b\\b", "ab"),  # OSC ended by ST
        ("a\x1b]0;new window title", "a"),  # an OSC that never ends
        ("\x1b[31mred\x1b[0m \x1b[2J\x1b[1;1H\x1b[?25l", "red "),  # CSI: colour, clear, move, hide cursor
        ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),  # DCS (sixel)
        ("a\x1b(Bb\x1bcc", "abc"),  # charset selection, full reset
        ("a\x9b31mb\x9d52;c;eA==\x9cc", "abc"),  # 8-bit CSI and OSC
        ("bell\x07 back\x08 nul\x00 del\x7f c1\x85 end\x1b", "bell\\x07 back\\x08 nul\\x00 del\\x7f c1\\x85 end\\x1b"),
        ("progress 10%\rprogress 100%\r\ndone", "progress 10%\nprogress 100%\ndone"),
        ("file\u202egnp.exe", "file\\u202egnp.exe"),  # a right-to-left override
        ("ünïcödé ✓", "ünïcödé ✓"),
    ],
)
def test_printable(text: str, expected: str) -> None:
    assert printable(text) == expected
    assert printable(expected) == expected  # cleaning twice changes nothing
