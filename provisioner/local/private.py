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

from provisioner.errors import CourseVmError


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
    """PATH, made (with its missing parents) 0700, or made 0700 if an earlier course-vm left it open.

    Raises CourseVmError when PATH is a symlink: chmod would change the folder it points to.
    """
    with private_files():
        path.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        raise CourseVmError(
            f"{path} is a symlink; course-vm keeps its files in a folder of its own, made for this user alone. "
            "Fix: remove the symlink (or point XDG_CACHE_HOME / XDG_STATE_HOME at a real folder)"
        )
    path.chmod(0o700)
    return path


def private_file(path: Path) -> Path:
    """PATH made 0600 (a file an earlier course-vm, or a tool copying modes, left readable)."""
    path.chmod(0o600)
    return path
