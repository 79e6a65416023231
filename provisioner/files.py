"""Files course-vm writes whole: replaced at once, never half written, never through a planted name."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


def write_atomically(path: Path, text: str, mode: int) -> None:
    """Replace PATH with TEXT at MODE: readers see the old file or the new one, never half of one.

    The temporary file gets a fresh random name, created exclusively (mkstemp: O_EXCL), so a
    symlink or file planted beside PATH is never followed or overwritten; a failed write removes it.
    Raises OSError when the directory cannot be written.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".course-vm.tmp", dir=path.parent)
    try:
        try:
            if hasattr(os, "fchmod"):  # not on Windows before Python 3.13, where the folder's ACL applies
                os.fchmod(fd, mode)
            data = memoryview(text.encode())
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on PATH (created 0600 if missing, never through a symlink) while the block runs.

    Another process that locks PATH waits until this one is done: flock on POSIX, msvcrt.locking on
    Windows. Raises OSError when PATH cannot be opened.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if os.name == "nt":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined,unused-ignore]
                    break
                except OSError as error:
                    if error.errno not in (errno.EACCES, errno.EDEADLK):  # not "another holds it"
                        raise
                    time.sleep(0.05)
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # type: ignore[attr-defined,unused-ignore]
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
    finally:
        os.close(fd)  # which releases a POSIX lock


def foreign_symlink(path: Path, trusted: set[int]) -> tuple[Path, int] | None:
    """The first component of PATH (absolute) that is a symlink of a user not in TRUSTED, and its owner;
    None when there is none. What does not exist yet ends the walk: whoever makes it, makes it a folder."""
    for part in [*reversed(path.parents), path]:
        try:
            info = part.lstat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if stat.S_ISLNK(info.st_mode) and info.st_uid not in trusted:
            return part, info.st_uid
    return None
