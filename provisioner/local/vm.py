"""The local VM: the same recipe and checker, on QEMU instead of GCE (KVM when it works, else TCG)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from provisioner.access.host_keys import HostKey, host_keys_from_console, parse_host_key
from provisioner.access.ssh import Progress, Target
from provisioner.access.ssh_config import add_host, remove_host, ssh_config_block
from provisioner.errors import CourseVmError, UnreachableError
from provisioner.local.image import Image
from provisioner.paths import state_home
from provisioner.recipe.user_data import HOME_DISK_NAME

KVM_PROBE_SECONDS = 20.0  # a working KVM prints the kernel banner within a second or two


@dataclass(frozen=True)
class LocalVm:
    """A running local VM, as saved in its directory's vm.json."""

    name: str
    directory: Path
    pid: int
    ssh_port: int
    user: str
    identity: Path
    host_keys: tuple[HostKey, ...]
    accel: str

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def known_hosts(self) -> Path:
        return self.directory / "known_hosts"

    @property
    def host_alias(self) -> str:
        """Its `Host` name in ~/.ssh/config: `ssh course-vm-local-NAME`."""
        return host_alias(self.name)

    def target(self) -> Target:
        return Target("127.0.0.1", self.ssh_port, self.user, self.identity, self.host_keys)

    def running(self) -> bool:
        return _alive(self.pid)

    def ssh_command(self) -> list[str]:
        """Plain ssh, pinned to the keys learned from the console, never asking to trust a key."""
        return [
            "ssh",
            "-i",
            str(self.identity),
            "-p",
            str(self.ssh_port),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            f"{self.user}@127.0.0.1",
        ]

    def save(self) -> None:
        record = {
            **asdict(self),
            "directory": str(self.directory),
            "identity": str(self.identity),
            "host_keys": [str(k) for k in self.host_keys],
        }
        (self.directory / "vm.json").write_text(json.dumps(record, indent=2) + "\n")
        self.known_hosts.write_text(
            "".join(k.known_hosts_line("127.0.0.1", self.ssh_port) + "\n" for k in self.host_keys)
        )


def host_alias(name: str) -> str:
    return f"course-vm-local-{name}"


def state_dir() -> Path:
    """Where local VMs live: $XDG_STATE_HOME/course-vm/local, one directory per VM name."""
    return state_home() / "local"


def load(name: str) -> LocalVm:
    """The local VM called NAME. Raises CourseVmError when there is none."""
    record_path = state_dir() / name / "vm.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        raise CourseVmError(
            f"no local VM named {name!r}. Fix: `python -m provisioner local up --name {name}` "
            "(`local list` shows the VMs there are)"
        ) from None
    return LocalVm(
        name=record["name"],
        directory=Path(record["directory"]),
        pid=int(record["pid"]),
        ssh_port=int(record["ssh_port"]),
        user=record["user"],
        identity=Path(record["identity"]),
        host_keys=tuple(parse_host_key(k) for k in record["host_keys"]),
        accel=record["accel"],
    )


def names() -> list[str]:
    root = state_dir()
    return sorted(p.name for p in root.iterdir() if (p / "vm.json").is_file()) if root.is_dir() else []


def _alive(pid: int) -> bool:
    """Whether PID runs; a zombie (QEMU exited, its new parent has not reaped it yet) does not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/PID/stat: "PID (COMMAND) STATE ..."; COMMAND may itself hold spaces and parentheses.
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may still take it first)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise CourseVmError(f"{tool} is not installed. Fix: sudo apt-get install {package}")
    return path


def down(name: str) -> bool:
    """Stop the VM called NAME and remove its files; False if there was nothing to remove."""
    directory = state_dir() / name
    remove_host(host_alias(name))
    if not directory.exists():
        return False
    pid_file = directory / "qemu.pid"
    if pid_file.is_file():
        pid = int(pid_file.read_text().strip() or 0)
        if pid and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not _alive(pid):
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
    shutil.rmtree(directory)
    return True


def _write_seed(directory: Path, name: str, user_data: str) -> Path:
    tool = _require("cloud-localds", "cloud-image-utils")
    (directory / "user-data").write_text(user_data)
    # A new instance-id per boot of a new VM: cloud-init runs the recipe once per instance.
    (directory / "meta-data").write_text(
        f"instance-id: course-vm-{name}-{secrets.token_hex(4)}\nlocal-hostname: course-vm-{name}\n"
    )
    seed = directory / "seed.iso"
    subprocess.run(
        [tool, str(seed), str(directory / "user-data"), str(directory / "meta-data")], check=True, capture_output=True
    )
    return seed


def _qemu_command(
    image: Image, directory: Path, accel: str, port: int, memory_mb: int, cpus: int, home_disk: Path | None = None
) -> list[str]:
    # The home disk shows in the guest as /dev/disk/by-id/virtio-course-vm-home (LOCAL_HOME_DISK_DEVICE).
    home = (
        [
            "-drive",
            f"file={home_disk},if=none,id=home,format=qcow2",
            "-device",
            # A PCI slot after the other drives', so that the boot disk stays /dev/vda.
            f"virtio-blk-pci,drive=home,serial={HOME_DISK_NAME},addr=0x1f",
        ]
        if home_disk
        else []
    )
    return [
        _require("qemu-system-x86_64", "qemu-system-x86"),
        "-name",
        f"course-vm-{directory.name}",
        "-accel",
        "kvm" if accel == "kvm" else "tcg,thread=multi",
        "-cpu",
        "host" if accel == "kvm" else "max",
        "-smp",
        str(cpus),
        "-m",
        str(memory_mb),
        "-nodefaults",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        f"file:{directory / 'console.log'}",
        "-pidfile",
        str(directory / "qemu.pid"),
        "-drive",
        f"file={directory / 'disk.qcow2'},if=virtio,format=qcow2",
        "-drive",
        f"file={directory / 'seed.iso'},if=virtio,format=raw,readonly=on",
        *home,
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-device",
        "virtio-rng-pci",
        *image.qemu_boot_args(),
    ]


def _start(command: list[str], directory: Path) -> subprocess.Popen[bytes]:
    (directory / "console.log").write_bytes(b"")
    with (directory / "qemu.log").open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)


def _kernel_started(directory: Path, process: subprocess.Popen[bytes], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None:
        if (directory / "console.log").stat().st_size > 0:
            return True
        time.sleep(0.2)
    return False


LOCAL_HOME_DISK_DEVICE = f"/dev/disk/by-id/virtio-{HOME_DISK_NAME}"


def ensure_home_disk(path: Path, size_gb: int) -> Path:
    """A home disk image at PATH: created empty (sparse qcow2 of SIZE_GB) if missing, else kept as is.

    It is not part of any VM's directory, so `local down` keeps it for the next `local up`.
    """
    path = path.expanduser().resolve()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [_require("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2", str(path), f"{size_gb}G"], check=True
        )
    return path


def boot(
    name: str,
    image: Image,
    user_data: str,
    *,
    user: str,
    identity: Path,
    memory_mb: int = 4096,
    cpus: int = 2,
    disk_size: str = "30G",
    accel: str = "auto",
    home_disk: Path | None = None,
    deadline: float,
    progress: Progress = lambda _: None,
) -> LocalVm:
    """Boot a new local VM called NAME with USER_DATA as its NoCloud seed, and learn its host keys
    from the console. HOME_DISK (see `ensure_home_disk`) is attached as the VM's home disk.

    Raises CourseVmError (a VM of that name exists, a tool is missing, QEMU fails) and
    UnreachableError (no host keys on the console before the deadline).
    """
    directory = state_dir() / name
    if directory.exists():
        existing = load(name) if (directory / "vm.json").is_file() else None
        if existing and existing.running():
            raise CourseVmError(
                f"a local VM named {name!r} is running. Fix: `local down --name {name}` first, or choose another --name"
            )
        down(name)
    directory.mkdir(parents=True)
    subprocess.run(
        [
            _require("qemu-img", "qemu-utils"),
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            image.format,
            "-b",
            str(image.disk.resolve()),
            str(directory / "disk.qcow2"),
            disk_size,
        ],
        check=True,
    )
    _write_seed(directory, name, user_data)
    port = free_loopback_port()

    # Detect KVM by trying: on some machines /dev/kvm exists but guests hang or abort.
    chosen = "tcg"
    if accel in ("auto", "kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK):
        process = _start(_qemu_command(image, directory, "kvm", port, memory_mb, cpus, home_disk), directory)
        if _kernel_started(directory, process, KVM_PROBE_SECONDS):
            chosen = "kvm"
        else:
            progress("KVM did not start the guest; falling back to software emulation (slower)")
            process.kill()
            process.wait()
    if chosen == "tcg":
        if accel == "kvm":
            raise CourseVmError("KVM does not work on this machine. Fix: use --accel auto or tcg")
        process = _start(_qemu_command(image, directory, "tcg", port, memory_mb, cpus, home_disk), directory)
    progress(f"booting {name} ({chosen}); SSH on 127.0.0.1:{port}")

    host_keys: tuple[HostKey, ...] = ()
    last_size = -1
    while not host_keys:
        if process.poll() is not None:
            tail = (directory / "qemu.log").read_text(errors="replace")[-2000:]
            raise CourseVmError(f"QEMU exited ({process.returncode}): {tail}")
        if time.monotonic() >= deadline:
            process.kill()
            raise UnreachableError(
                f"{name}: no SSH host keys on the console before the deadline; see {directory / 'console.log'}"
            )
        size = (directory / "console.log").stat().st_size
        if size != last_size:
            host_keys = host_keys_from_console((directory / "console.log").read_text(errors="replace"))
            last_size = size
        if not host_keys:
            time.sleep(0.5)
    vm = LocalVm(name, directory, process.pid, port, user, identity, host_keys, chosen)
    vm.save()
    add_host(
        vm.host_alias, ssh_config_block(vm.host_alias, "127.0.0.1", user, str(identity), str(vm.known_hosts), port)
    )
    progress(f"host keys pinned from the console: {host_keys[0].fingerprint}")
    return vm
