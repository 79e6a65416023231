"""Files and directories course-vm makes for local VMs and images: the user's alone (0700, 0600).

A VM's disk holds the guest's SSH host private keys and the student's work; its directory the
twin's token; the image cache what every VM boots from. `qemu-img` and friends create 0644 files
under the usual umask 022, so whatever is made inside `private_files()` (by us or a tool we run)
gets no group or other bits.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Make new files 0600 and directories 0700 (umask 077) inside; the umask is the process's, so
    not around anything that builds files for others to read (debootstrap's root filesystem)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def private_directory(path: Path) -> Path:
    """PATH, made (with its missing parents) 0700, or made 0700 if an earlier course-vm left it open."""
    with private_files():
        path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """PATH made 0600 (a file an earlier course-vm, or a tool copying modes, left readable)."""
    path.chmod(0o600)
    return path
