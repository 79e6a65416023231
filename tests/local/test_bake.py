"""`local image bake`'s parts that need no VM: which images it bakes, its cache, what it keeps of a bake's disk.

The bake itself (a VM of the image running the system part) is in the end-to-end test, tests/local/test_vm.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from provisioner.errors import BakeFailedError, CourseVmError
from provisioner.local import bake as local_bake
from provisioner.local.image import GCE_MARKER, MANIFEST, Image, image_at
from provisioner.recipe.settings import parse_settings
from tests.conftest import require_tool
from tests.support.cli import run_cli

SETTINGS = parse_settings({}, None, None, for_gcp=False)


def twin_image(root: Path) -> Image:
    """A directory as `local image build` leaves it (a raw disk, its kernel and initrd, the GCE marker)."""
    root.mkdir(parents=True)
    (root / "disk.img").write_bytes(b"\0" * 65536)
    (root / "vmlinuz").write_bytes(b"kernel")
    (root / "initrd.img").write_bytes(b"initrd")
    (root / GCE_MARKER).write_text("")
    return image_at(root)


def never_asked(*_: object) -> str:
    raise AssertionError("no VM should have been booted")


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: Image(root / "disk.img", "raw"), "local image bake needs a GCE twin image"),
        (lambda root: Image(root / "d", "qcow2", root / "k", root / "i", gce=True, manifest="x"), "baked already"),
    ],
)
def test_only_a_twin_image_not_baked_yet_is_baked(tmp_path: Path, make: object, message: str) -> None:
    with pytest.raises(CourseVmError, match=message):
        local_bake.bake_image(make(tmp_path), SETTINGS, never_asked, deadline=0, cache=tmp_path)  # type: ignore[operator]


def test_a_bake_of_the_same_image_and_releases_is_found_in_the_cache(tmp_path: Path) -> None:
    base = twin_image(tmp_path / "base")
    target = local_bake.baked_directory(base, SETTINGS, tmp_path / "cache")
    twin_image(target)
    (target / MANIFEST).write_text("course-vm-image 1\n")
    found = local_bake.bake_image(base, SETTINGS, never_asked, deadline=0, cache=tmp_path / "cache")
    assert found.disk.parent == target and found.manifest == "course-vm-image 1"
    other = parse_settings(
        {"dockerComposeVersion": "v2.27.0", "dockerComposeSha256": "d" * 64}, None, None, for_gcp=False
    )
    assert local_bake.baked_directory(base, other, tmp_path / "cache") != target, "other releases, another bake"


def test_what_is_kept_of_a_bake_is_a_self_contained_sparse_qcow2_for_this_user_alone(tmp_path: Path) -> None:
    qemu_img = require_tool("qemu-img")
    base = twin_image(tmp_path / "base")
    overlay = tmp_path / "vm" / "disk.qcow2"
    overlay.parent.mkdir()
    subprocess.run(
        [qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base.disk), str(overlay)], check=True
    )
    kept = local_bake._keep(overlay, base, "course-vm-image 1\nrecipe abc", tmp_path / "cache" / "baked-x")
    info = json.loads(subprocess.run([qemu_img, "info", "--output=json", str(kept.disk)], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    assert info["format"] == "qcow2" and "backing-filename" not in info, "it reads no other file"
    assert (kept.gce, kept.manifest, kept.kernel and kept.kernel.read_bytes()) == (
        True,
        "course-vm-image 1\nrecipe abc",
        b"kernel",
    )
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in kept.disk.parent.iterdir()} == {
        name: "0o600" for name in ("disk.img", "vmlinuz", "initrd.img", GCE_MARKER, MANIFEST)
    }
    assert oct(kept.disk.parent.parent.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("verdict", "fails"),
    [
        ("ok\ncourse-vm-image 1", None),
        ("failed\n[course-vm] FAILED packages exit=100\n  packages| E: no docker.io", "packages"),
    ],
)
def test_the_verdict_decides_and_a_failure_names_its_step(verdict: str, fails: str | None) -> None:
    if fails is None:
        assert local_bake._manifest(verdict, lambda _: None) == "course-vm-image 1"
        return
    with pytest.raises(
        BakeFailedError, match=r"the bake failed, nothing was kept: \[course-vm\] FAILED packages exit=100 \|"
    ):
        local_bake._manifest(verdict, lambda _: None)


def test_bad_settings_are_refused_before_any_image_is_built_or_booted(tmp_path: Path) -> None:
    result = run_cli(
        "local", "image", "bake", "--image", str(tmp_path / "none"), "--set", "anacondaSha256=nope",
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "--set anacondaSha256" in result.stderr and "Traceback" not in result.stderr
