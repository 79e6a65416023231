"""QEMU for a local VM: its disks (qemu-img), its command line, and starting it with KVM if that works, else TCG."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from provisioner.access.ssh import Progress
from provisioner.errors import LocalToolError
from provisioner.local import twin as gce_twin
from provisioner.local.image import Image
from provisioner.local.process import arguments, require, run_tool
from provisioner.local.twin import Twin
from provisioner.recipe.user_data import HOME_DISK_NAME

KVM_PROBE_SECONDS = 20.0  # a working KVM prints the kernel banner within a second or two


def signature(directory: Path) -> tuple[str, ...]:
    """The program and arguments by which `process.runs` knows the QEMU of DIRECTORY's VM."""
    return ("qemu-system", "-pidfile", str(directory / "qemu.pid"))


def create_disk(path: Path, size: str, backing: Image | None = None) -> None:
    """A qcow2 disk image at PATH of virtual SIZE (sparse): empty, or over BACKING's disk (copy on write)."""
    over = ["-F", backing.format, "-b", str(backing.disk.resolve())] if backing is not None else []
    run_tool([require("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2", *over, str(path), size], "qemu-img")


def _option(path: Path) -> str:
    """PATH as a value in QEMU's KEY=VALUE,... options, where `,,` is a comma (one comma would split them).
    `-serial file:PATH` and `-pidfile PATH` take the path whole and need no escaping."""
    return str(path).replace(",", ",,")


def command(
    image: Image,
    directory: Path,
    accel: str,
    port: int,
    memory_mb: int,
    cpus: int,
    home_disk: Path | None = None,
    twin: Twin | None = None,
) -> list[str]:
    """QEMU's command line for the VM in DIRECTORY booting IMAGE with ACCEL (kvm or tcg), its SSH on
    127.0.0.1:PORT: presented as GCE with TWIN's metadata server, else given its NoCloud seed."""
    return [
        require("qemu-system-x86_64", "qemu-system-x86"),
        "-name",
        f"course-vm-{directory.name}",
        *_machine(accel, memory_mb, cpus),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{directory / 'console.log'}",
        "-pidfile",
        str(directory / "qemu.pid"),
        *_drives(directory, home_disk, twin),
        *_network(port, twin, directory),
        "-device",
        "virtio-rng-pci",
        *image.qemu_boot_args(),
    ]


def _machine(accel: str, memory_mb: int, cpus: int) -> list[str]:
    return [
        "-accel",
        "kvm" if accel == "kvm" else "tcg,thread=multi",
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mb),
    ]


def _drives(directory: Path, home_disk: Path | None, twin: Twin | None) -> list[str]:
    """The boot disk; the NoCloud seed unless a TWIN's metadata server gives the recipe; the home disk, if any."""
    return [
        "-drive",
        f"file={_option(directory / 'disk.qcow2')},if=virtio,format=qcow2",
        *(
            ["-drive", f"file={_option(directory / 'seed.iso')},if=virtio,format=raw,readonly=on"]
            if twin is None
            else []
        ),
        *_home_drive(home_disk),
    ]


def _home_drive(home_disk: Path | None) -> list[str]:
    # The home disk's serial is its GCE device name: the guest finds it as /dev/disk/by-id/virtio-course-vm-home
    # (vm.LOCAL_HOME_DISK_DEVICE) and, in a GCE twin image, as GCE names it, /dev/disk/by-id/google-course-vm-home.
    return (
        [
            "-drive",
            f"file={_option(home_disk)},if=none,id=home,format=qcow2",
            "-device",
            # A PCI slot after the other drives', so that the boot disk stays /dev/vda.
            f"virtio-blk-pci,drive=home,serial={HOME_DISK_NAME},addr=0x1f",
        ]
        if home_disk
        else []
    )


def _network(port: int, twin: Twin | None, directory: Path) -> list[str]:
    return (
        ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=net0"]
        if twin is None
        else gce_twin.qemu_args(twin, port, directory)
    )


def start(command: list[str], directory: Path) -> subprocess.Popen[bytes]:
    """QEMU started by COMMAND for the VM in DIRECTORY, in a session of its own, its console log emptied."""
    (directory / "console.log").write_bytes(b"")
    with (directory / "qemu.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    # Its command line, by which `running` knows it, is empty for a moment after the start.
    deadline = time.monotonic() + 10
    while not arguments(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


def _kernel_started(directory: Path, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if (directory / "console.log").stat().st_size > 0:
            return True
        time.sleep(0.2)
    return False


def start_accelerated(
    command: Callable[[str], list[str]], directory: Path, accel: str, progress: Progress
) -> tuple[subprocess.Popen[bytes], str]:
    """QEMU started by COMMAND (given an accelerator) for the VM in DIRECTORY, and the accelerator it
    runs with: KVM when ACCEL (auto, kvm or tcg) allows it and it really starts the guest, else TCG.

    Raises LocalToolError when ACCEL is kvm and KVM does not work.
    """
    # Detect KVM by trying: on some machines /dev/kvm exists but guests hang or abort.
    chosen = "tcg"
    if accel in ("auto", "kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK):
        process = start(command("kvm"), directory)
        if _kernel_started(directory, process, KVM_PROBE_SECONDS):
            chosen = "kvm"
        else:
            progress("KVM did not start the guest; falling back to software emulation (slower)")
            process.kill()
            process.wait()
    if chosen == "tcg":
        if accel == "kvm":
            raise LocalToolError("KVM does not work on this machine. Fix: use --accel auto or tcg")
        process = start(command("tcg"), directory)
    return process, chosen
