"""`local image bake`: a twin image turned into a baked one by a VM of its own, as `image bake` does on GCE."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from provisioner.access.ssh import Progress
from provisioner.errors import BakeFailedError, CourseVmError, UnreachableError
from provisioner.local import vm as local_vm
from provisioner.local.image import GCE_MARKER, MANIFEST, Image, cache_dir, image_at
from provisioner.local.private import private_directory, private_file
from provisioner.local.process import require, run_tool
from provisioner.recipe.bake import parse_verdict, render_bake_user_data
from provisioner.recipe.metadata import bake_metadata
from provisioner.recipe.settings import Settings
from provisioner.recipe.user_data import image_manifest

BAKE_VM = "image-bake"
"""The local VM the bake runs in (`local list` shows it while it runs)."""
NOBODY = "nobody"
"""The bake's VM has no login: its record names no user of the course."""


def baked_directory(base: Image, settings: Settings, cache: Path | None = None) -> Path:
    """Where the bake of BASE with SETTINGS' releases goes: named by both, so a second bake of the same is found."""
    key = hashlib.sha256(
        f"{base.disk.resolve()}\n{image_manifest(settings.anaconda, settings.docker_compose)}".encode()
    )
    return (cache or cache_dir()) / f"baked-{key.hexdigest()[:12]}"


VerdictSource = Callable[[local_vm.LocalVm, float], str]
"""The verdict a bake's VM published (guest attribute course-vm/bake), waiting for it until a deadline."""


def bake_image(
    base: Image,
    settings: Settings,
    verdict_of: VerdictSource,
    *,
    deadline: float,
    memory_mb: int = 4096,
    cpus: int = 2,
    disk_size: str = "30G",
    accel: str = "auto",
    cache: Path | None = None,
    progress: Progress = lambda _: None,
) -> Image:
    """The image BASE baked for SETTINGS: the bake's VM runs the setup's system part and checks it, then
    cleans itself and powers off; its disk, made self-contained, is the baked image. Found in the cache
    if it was baked before. VERDICT_OF reads what the VM published.

    Raises CourseVmError (BASE is no GCE twin, the bake failed: its failed step's lines) and
    UnreachableError (no verdict or no power-off before DEADLINE). The bake's VM is removed in any case.
    """
    if not base.gce or base.kernel is None or base.initrd is None:
        raise CourseVmError(
            "local image bake needs a GCE twin image, from `local image build`: the bake reports through its "
            "metadata server. Fix: `sudo course-vm local image build`, then --image with the path it prints"
        )
    if base.manifest is not None:
        raise CourseVmError("that image is baked already. Fix: bake the image it was baked from (--image)")
    target = baked_directory(base, settings, cache)
    if (target / MANIFEST).is_file():
        progress(f"using the baked image {target}")
        return image_at(target)
    attributes = bake_metadata(render_bake_user_data(settings))
    if BAKE_VM in local_vm.names() and local_vm.load(BAKE_VM).running():
        # Another bake's: left alone (the cleanup below would stop it).
        raise CourseVmError(
            f"another bake is running (local VM {BAKE_VM}). Fix: wait for it, or `local down --name {BAKE_VM}`"
        )
    started = time.monotonic()
    try:
        vm = local_vm.boot(
            BAKE_VM, base, attributes, user=NOBODY, identity=Path("/dev/null"), memory_mb=memory_mb, cpus=cpus,
            disk_size=disk_size, accel=accel, deadline=deadline, progress=progress,
        )  # fmt: skip
        manifest = _manifest(verdict_of(vm, deadline), progress)
        _wait_for_power_off(vm, deadline, progress)
        image = _keep(vm.directory / "disk.qcow2", base, manifest, target)
    finally:
        local_vm.down(BAKE_VM)
    progress(f"baked in {time.monotonic() - started:.0f}s: {target}")
    return image


def _manifest(verdict: str, progress: Progress) -> str:
    """The manifest of the image the bake made, from its VERDICT. Raises CourseVmError if the bake failed."""
    passed, detail = parse_verdict(verdict)
    if not passed:
        raise BakeFailedError(
            "the bake failed, nothing was kept: "
            + (" | ".join(detail.splitlines()) or "no step output")
            + ". Fix: correct what the failed step says, then bake again"
        )
    progress("the bake passed its check: docker hello-world as a throwaway user, conda, docker-compose")
    return detail


def _wait_for_power_off(vm: local_vm.LocalVm, deadline: float, progress: Progress) -> None:
    progress("waiting for the bake's VM to clean itself and power off")
    while vm.running():
        if time.monotonic() >= deadline:
            raise UnreachableError(
                "the bake's VM did not power off before the deadline. Fix: bake again with a longer --timeout"
            )
        time.sleep(1)


def _keep(disk: Path, base: Image, manifest: str, target: Path) -> Image:
    """The bake's DISK (over BASE's) as a self-contained, sparse qcow2 in TARGET, with BASE's kernel and
    initrd, its GCE marker and MANIFEST; for this user only."""
    assert base.kernel is not None and base.initrd is not None
    private_directory(target.parent)
    work = Path(tempfile.mkdtemp(prefix=".bake-", dir=target.parent))  # 0700
    try:
        run_tool(
            [require("qemu-img", "qemu-utils"), "convert", "-q", "-O", "qcow2", str(disk), str(work / "disk.img")],
            "qemu-img",
        )
        shutil.copyfile(base.kernel, work / "vmlinuz")
        shutil.copyfile(base.initrd, work / "initrd.img")
        (work / GCE_MARKER).write_text("")
        (work / MANIFEST).write_text(manifest + "\n")
        for path in work.iterdir():
            private_file(path)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image_at(target)
