"""QEMU's command line for a local VM: loopback-only SSH, its drives, and a GCE twin's identity."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from provisioner.local import qemu
from provisioner.local.image import Image
from provisioner.local.twin import RELAY, Twin
from provisioner.local.vm import LOCAL_HOME_DISK_DEVICE

pytestmark = pytest.mark.integration  # the command names the real qemu-system-x86_64, which must be installed


def test_qemu_runs_the_guest_on_loopback_only_with_both_drives(tmp_path: Path) -> None:
    image = Image(tmp_path / "disk.img", "raw", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    command = qemu.command(image, tmp_path, "tcg", 2222, 4096, 2)
    joined = " ".join(command)
    assert "-accel tcg,thread=multi -cpu max -smp 2 -m 4096" in joined
    assert "user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22" in joined
    assert f"file={tmp_path / 'disk.qcow2'},if=virtio,format=qcow2" in joined
    assert f"file={tmp_path / 'seed.iso'},if=virtio,format=raw,readonly=on" in joined
    assert f"-serial file:{tmp_path / 'console.log'}" in joined
    assert command[-6:] == image.qemu_boot_args()
    assert "-accel kvm -cpu host" in " ".join(qemu.command(image, tmp_path, "kvm", 2222, 4096, 2))
    assert "serial=" not in joined


def test_a_home_disk_is_a_third_drive_the_guest_finds_by_its_serial(tmp_path: Path) -> None:
    image = Image(tmp_path / "disk.img", "raw", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    home = tmp_path / "home.qcow2"
    joined = " ".join(qemu.command(image, tmp_path, "tcg", 2222, 4096, 2, home))
    assert (
        f"-drive file={home},if=none,id=home,format=qcow2 -device virtio-blk-pci,drive=home,serial=course-vm-home"
        in (joined)
    )
    assert LOCAL_HOME_DISK_DEVICE == "/dev/disk/by-id/virtio-course-vm-home"


def test_a_twin_is_presented_as_gce_with_its_metadata_server_and_no_seed(tmp_path: Path) -> None:
    image = Image(tmp_path / "disk.img", "raw", tmp_path / "vmlinuz", tmp_path / "initrd.img", gce=True)
    twin = Twin("http://127.0.0.1:4321", "token", "course-vm-twin", "local-twin1-a", "course-vm-one", 1)
    command = qemu.command(image, tmp_path, "tcg", 2222, 4096, 2, twin=twin)
    joined = " ".join(command)
    assert "seed.iso" not in joined
    smbios = command[command.index("-smbios") + 1]
    assert smbios.startswith("type=1,manufacturer=Google,product=Google Compute Engine,serial=GoogleCloud-")
    netdev = command[command.index("-netdev") + 1]
    assert netdev.startswith("user,id=net0,net=169.254.0.0/16,hostfwd=tcp:127.0.0.1:2222-:22,")
    # The relay reaches the server's guest socket in the VM's folder, never the loopback port.
    relay = f"{sys.executable} -I -S {RELAY} {tmp_path / 'metadata.sock'}"
    assert netdev.endswith(f"guestfwd=tcp:169.254.169.254:80-cmd:{relay}")
    assert command[command.index("-device", command.index("-netdev")) + 1] == (
        "virtio-net-pci,netdev=net0,mac=42:01:a9:fe:02:0f"
    )


def test_a_comma_in_the_vms_paths_cannot_split_qemus_drive_options(tmp_path: Path) -> None:
    # The state directory is under $HOME, which may hold a comma; QEMU reads `,,` as one comma.
    directory, home = tmp_path / "a,b" / "one", tmp_path / "homes,if=none" / "alice.qcow2"
    image = Image(tmp_path / "disk.img", "raw", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    command = qemu.command(image, directory, "tcg", 2222, 4096, 2, home)
    drives = [command[i + 1] for i, part in enumerate(command) if part == "-drive"]
    assert drives == [
        f"file={tmp_path}/a,,b/one/disk.qcow2,if=virtio,format=qcow2",
        f"file={tmp_path}/a,,b/one/seed.iso,if=virtio,format=raw,readonly=on",
        f"file={tmp_path}/homes,,if=none/alice.qcow2,if=none,id=home,format=qcow2",
    ]
    # -serial file:PATH and -pidfile PATH take the path whole (QEMU splits no options there).
    assert f"file:{directory}/console.log" in command and str(directory / "qemu.pid") in command
