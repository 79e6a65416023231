"""The local VM: the same recipe and checker on QEMU, as a GCE twin where the image is one (KVM or TCG)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from provisioner.access.host_keys import HostKey, host_keys_from_console, parse_host_key
from provisioner.access.ssh import Progress, Target
from provisioner.access.ssh_config import add_host, remove_host, ssh_config_block
from provisioner.errors import CourseVmError, UnreachableError
from provisioner.local import twin as gce_twin
from provisioner.local.image import Image
from provisioner.local.private import private_directory, private_file, private_files
from provisioner.local.process import alive, arguments, pid_in, runs, stop
from provisioner.local.twin import Twin
from provisioner.paths import state_home
from provisioner.recipe.metadata import USER_DATA
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
    """Pinned once learned from what the VM publishes; empty until then."""
    accel: str
    twin: Twin | None = None
    """Its metadata server, when the image boots as on GCE; None: a NoCloud seed gave it its recipe."""

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
        """Whether its QEMU runs: the process of its PID, if that is still its QEMU and not a stranger's."""
        return runs(self.pid, *qemu_signature(self.directory))

    def console_host_keys(self, deadline: float) -> tuple[HostKey, ...]:
        """The host keys the VM printed on its console (the recipe prints them first), waiting for them.

        Raises CourseVmError when QEMU exits, UnreachableError when the deadline passes first.
        """
        last_size = -1
        while True:
            size = self.console_log.stat().st_size
            if size != last_size:
                keys = host_keys_from_console(self.console_log.read_text(errors="replace"))
                if keys:
                    return keys
                last_size = size
            self._wait_while_running(deadline, "no SSH host keys on the console")

    def wait_for_published_host_keys(self, deadline: float) -> None:
        """Wait until a twin's guest has published its host keys (cloud-init does so early in boot).

        Raises CourseVmError when QEMU exits, UnreachableError when the deadline passes first.
        """
        assert self.twin is not None
        request = urllib.request.Request(  # noqa: S310 (the twin's own server, http on loopback)
            f"{self.twin.url}/computeMetadata/v1/instance/guest-attributes/hostkeys/",
            headers={"Metadata-Flavor": "Google"},
        )
        while True:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    if response.read().strip():
                        return
            except (urllib.error.URLError, OSError):
                pass  # nothing published yet (404), or the server is busy
            self._wait_while_running(deadline, "no SSH host keys in the guest attributes")

    def _wait_while_running(self, deadline: float, what: str) -> None:
        if _panicked(self.console_log):
            raise GuestPanicError(f"{self.name}: the guest kernel panicked while booting; see {self.console_log}")
        if not self.running():
            tail = (self.directory / "qemu.log").read_text(errors="replace")[-2000:]
            raise CourseVmError(f"QEMU exited: {tail or 'see ' + str(self.console_log)}")
        if time.monotonic() >= deadline:
            raise UnreachableError(f"{self.name}: {what} before the deadline; see {self.console_log}")
        time.sleep(0.5)

    def pinned(self, host_keys: tuple[HostKey, ...]) -> LocalVm:
        """This VM with HOST_KEYS pinned: saved, in its known_hosts and its ~/.ssh/config entry."""
        vm = replace(self, host_keys=host_keys)
        vm.save()
        block = ssh_config_block(
            vm.host_alias, "127.0.0.1", vm.user, str(vm.identity), str(vm.known_hosts), vm.ssh_port
        )
        add_host(vm.host_alias, block)
        return vm

    def ssh_command(self) -> list[str]:
        """Plain ssh, pinned to the keys the VM published, never asking to trust a key."""
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
            "twin": asdict(self.twin) if self.twin else None,
        }
        # It holds the token of the twin's Compute API view: for this user only.
        descriptor = os.open(self.directory / "vm.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(json.dumps(record, indent=2) + "\n")
        self.known_hosts.write_text(
            "".join(k.known_hosts_line("127.0.0.1", self.ssh_port) + "\n" for k in self.host_keys)
        )


NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
"""A local VM's name, as GCE names an instance: it becomes a directory, a QEMU option and an ssh Host."""


def host_alias(name: str) -> str:
    return f"course-vm-local-{vm_directory(name).name}"


def state_dir() -> Path:
    """Where local VMs live: $XDG_STATE_HOME/course-vm/local, one directory per VM name."""
    return state_home() / "local"


def vm_directory(name: str) -> Path:
    """The directory of the local VM called NAME: every command that takes a name comes here first.

    Raises CourseVmError, before any file is touched, when NAME is no name (a path, `..`, empty,
    a comma, which would split QEMU's options): `local down` deletes this directory as root.
    """
    if not NAME.fullmatch(name):
        raise CourseVmError(
            f"local VM name {name!r} is not a name: it must be 1 to 63 lowercase letters, digits and "
            "hyphens, starting with a letter (as GCE names instances). Fix: --name default, or e.g. --name alice-2"
        )
    return state_dir() / name


def load(name: str) -> LocalVm:
    """The local VM called NAME. Raises CourseVmError when NAME is no name or there is no such VM."""
    record_path = vm_directory(name) / "vm.json"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        raise CourseVmError(
            f"no local VM named {name!r}. Fix: `course-vm local up --name {name}` "
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
        twin=Twin(**record["twin"]) if record.get("twin") else None,
    )


def names() -> list[str]:
    root = state_dir()
    if not root.is_dir():
        return []
    # A directory someone else made there under no valid name is not one of ours.
    return sorted(p.name for p in root.iterdir() if NAME.fullmatch(p.name) and (p / "vm.json").is_file())


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


def qemu_signature(directory: Path) -> tuple[str, ...]:
    """The program and arguments by which `process.runs` knows the QEMU of DIRECTORY's VM."""
    return ("qemu-system", "-pidfile", str(directory / "qemu.pid"))


def down(name: str, progress: Progress = lambda _: None) -> bool:
    """Stop the VM called NAME (QEMU and its metadata server) and remove its files; False if there was none.

    Raises CourseVmError when NAME is no name (nothing is touched then).
    """
    directory = vm_directory(name)
    remove_host(host_alias(name))
    if not directory.exists():
        return False
    # Only processes of this VM: their command lines name its own paths. A pid file that outlived
    # its process (a reboot) may name anyone's.
    for pid_file, what, signature in (
        ("qemu.pid", "QEMU", qemu_signature(directory)),
        (gce_twin.PID_FILE, "metadata server", gce_twin.server_signature(directory)),
    ):
        pid = pid_in(directory / pid_file)
        if pid and not stop(pid, *signature) and alive(pid):
            progress(f"{pid_file}: process {pid} is not this VM's {what} (the pid file is stale): left it alone")
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


def _qemu_option(path: Path) -> str:
    """PATH as a value in QEMU's KEY=VALUE,... options, where `,,` is a comma (one comma would split them).
    `-serial file:PATH` and `-pidfile PATH` take the path whole and need no escaping."""
    return str(path).replace(",", ",,")


def _qemu_command(
    image: Image,
    directory: Path,
    accel: str,
    port: int,
    memory_mb: int,
    cpus: int,
    home_disk: Path | None = None,
    twin: Twin | None = None,
) -> list[str]:
    # The home disk's serial is its GCE device name: the guest finds it as /dev/disk/by-id/virtio-course-vm-home
    # (LOCAL_HOME_DISK_DEVICE) and, in a GCE twin image, as GCE names it, /dev/disk/by-id/google-course-vm-home.
    home = (
        [
            "-drive",
            f"file={_qemu_option(home_disk)},if=none,id=home,format=qcow2",
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
        f"file={_qemu_option(directory / 'disk.qcow2')},if=virtio,format=qcow2",
        *(
            ["-drive", f"file={_qemu_option(directory / 'seed.iso')},if=virtio,format=raw,readonly=on"]
            if twin is None
            else []
        ),
        *home,
        *(
            ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-pci,netdev=net0"]
            if twin is None
            else gce_twin.qemu_args(twin, port)
        ),
        "-device",
        "virtio-rng-pci",
        *image.qemu_boot_args(),
    ]


def _start(command: list[str], directory: Path) -> subprocess.Popen[bytes]:
    (directory / "console.log").write_bytes(b"")
    with (directory / "qemu.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    # Its command line, by which `running` knows it, is empty for a moment after the start.
    deadline = time.monotonic() + 10
    while not arguments(process.pid) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return process


PANIC = b"Kernel panic - not syncing"
BOOT_ATTEMPTS = 3
"""Boots of one `local up`: a guest kernel may panic early under multi-threaded software emulation
(seen once with Debian 13's kernel: an int3 oops while it patched its own code), as a real machine may
once; booting it again is what an operator would do."""


_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []
"""The QEMU processes `boot` left running on purpose (a VM outlives `local up`), held so that Python
does not take them for forgotten ones (a ResourceWarning) when their Popen objects go."""


class GuestPanicError(CourseVmError):
    """The guest's kernel panicked: the VM will never come up without a new boot."""


def _panicked(console: Path) -> bool:
    """Whether the console's last 64 KiB show a kernel panic."""
    try:
        with console.open("rb") as file:
            file.seek(max(file.seek(0, os.SEEK_END) - 65536, 0))
            return PANIC in file.read()
    except OSError:
        return False


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
        # The student's work: for this user only, and so is a directory made for it.
        with private_files():
            path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [_require("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2", str(path), f"{size_gb}G"],
                check=True,
            )
    return private_file(path)


def boot(
    name: str,
    image: Image,
    attributes: Mapping[str, str],
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
    """Boot a new local VM called NAME whose instance metadata is ATTRIBUTES, and wait until it has
    published its host keys (pin them with `LocalVm.pinned`).

    A GCE image (Image.gce) boots as a GCE VM: it reads ATTRIBUTES from its metadata server and
    publishes its host keys in guest attributes. Any other image gets ATTRIBUTES' user-data from a
    NoCloud seed and prints its host keys on the console. HOME_DISK (see `ensure_home_disk`) is
    attached as the VM's home disk.
    Raises CourseVmError (a VM of that name exists, a tool is missing, QEMU fails) and
    UnreachableError (no host keys published before the deadline).
    """
    directory = vm_directory(name)
    if directory.exists():
        existing = load(name) if (directory / "vm.json").is_file() else None
        if existing and existing.running():
            raise CourseVmError(
                f"a local VM named {name!r} is running. Fix: `local down --name {name}` first, or choose another --name"
            )
        down(name, progress)
    # It will hold the VM's disk, its host keys and the twin's token: everything in it, whoever
    # writes it (qemu-img, cloud-localds, QEMU, the metadata server), is for this user only.
    private_directory(directory.parent)
    with private_files():
        directory.mkdir()
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
        twin = gce_twin.start(directory, gce_twin.twin_instance(name, attributes)) if image.gce else None
        if twin is None:
            _write_seed(directory, name, attributes[USER_DATA])
        port = free_loopback_port()

        def command(chosen: str) -> list[str]:
            return _qemu_command(image, directory, chosen, port, memory_mb, cpus, home_disk, twin)

        # Detect KVM by trying: on some machines /dev/kvm exists but guests hang or abort.
        chosen = "tcg"
        if accel in ("auto", "kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK):
            process = _start(command("kvm"), directory)
            if _kernel_started(directory, process, KVM_PROBE_SECONDS):
                chosen = "kvm"
            else:
                progress("KVM did not start the guest; falling back to software emulation (slower)")
                process.kill()
                process.wait()
        if chosen == "tcg":
            if accel == "kvm":
                raise CourseVmError("KVM does not work on this machine. Fix: use --accel auto or tcg")
            process = _start(command("tcg"), directory)
        progress(f"booting {name} ({chosen}{', as a GCE VM' if twin else ''}); SSH on 127.0.0.1:{port}")
        for attempt in range(1, BOOT_ATTEMPTS + 1):
            vm = LocalVm(name, directory, process.pid, port, user, identity, (), chosen, twin)
            vm.save()
            try:
                if twin is None:
                    vm.console_host_keys(deadline)
                else:
                    vm.wait_for_published_host_keys(deadline)
                _LEFT_RUNNING.append(process)
                return vm
            except GuestPanicError:
                process.kill()
                process.wait()
                if attempt == BOOT_ATTEMPTS:
                    raise
                progress(f"{name}: the guest kernel panicked while booting; booting it again ({attempt + 1})")
                process = _start(command(chosen), directory)
            except (UnreachableError, KeyboardInterrupt):
                # Ctrl-C too: QEMU runs in a session of its own, which the terminal's Ctrl-C does not reach.
                process.kill()
                process.wait()
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")
