"""Files written whole: a planted symlink is never followed, a failed write leaves the old file, Windows' Python too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from provisioner.files import write_atomically


def test_a_symlink_planted_at_a_temporary_name_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    victim.chmod(0o644)
    target = tmp_path / "ssh" / "course-vm.config"
    target.parent.mkdir()
    # The fixed name the writer once used: a symlink there made it overwrite and chmod the victim.
    (target.parent / f".{target.name}.course-vm.tmp").symlink_to(victim)
    write_atomically(target, "Host x\n", 0o600)
    assert victim.read_text() == "precious\n"
    assert os.stat(victim).st_mode & 0o777 == 0o644
    assert target.read_text() == "Host x\n" and not target.is_symlink()
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "course-vm.config"
    target.write_text("old\n")

    def full_disk(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, "new\n", 0o600)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["course-vm.config"]


def test_writing_works_where_python_has_no_fchmod(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Python on Windows before 3.13 has no os.fchmod; there the file keeps its folder's ACL."""
    monkeypatch.delattr(os, "fchmod")
    target = tmp_path / "ssh" / "course-vm.config"
    write_atomically(target, "Host x\n", 0o600)
    assert target.read_text() == "Host x\n"
