"""Value types for command-line options: what no command can use is refused by argparse, exit 2."""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from provisioner.errors import CourseVmError

_SIZE = re.compile(r"[1-9][0-9]*[KMGT]?")


def seconds(text: str) -> float:
    """A deadline in seconds: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return value


def whole(low: int, high: int) -> Callable[[str], int]:
    """A whole number from LOW to HIGH."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return value

    parse.__name__ = "whole number"  # argparse names the type so in its message
    return parse


port = whole(1, 65535)
port_or_any = whole(0, 65535)
"""A port, or 0: any free one."""


def disk_size(text: str) -> str:
    """A virtual disk size as qemu-img takes it: a whole number, optionally K, M, G or T."""
    if not _SIZE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 30G")
    return text


PATH_SETTINGS = ("studentsCsv", "sshKeyPath")
"""Settings that name a file: given relative, they are made absolute against the directory the command runs in."""


def settings_given(pairs: Sequence[str]) -> dict[str, str]:
    """The settings `--set KEY=VALUE` PAIRS give, by key; a relative path of PATH_SETTINGS made absolute against
    the working directory (stored so, it means the same file from anywhere). Raises CourseVmError for a pair
    without `=`."""
    given: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CourseVmError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set username=alice")
        if key in PATH_SETTINGS and value and not value.startswith("~") and not os.path.isabs(value):
            value = Path(value).absolute().as_posix()
        given[key] = value
    return given
