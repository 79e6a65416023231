"""A local VM's life: its record, booting it (again after an early panic), its ssh entry, finding and removing it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from provisioner.access.host_keys import HostKey, host_keys_from_console, parse_host_key
from provisioner.access.ssh import Progress, Target
from provisioner.access.ssh_config import add_host, remove_host, ssh_config_block
from provisioner.errors import CourseVmError, LocalToolError, UnreachableError
from provisioner.local import qemu
from provisioner.local import twin as gce_twin
from provisioner.local.image import Image, refuse_other_files
from provisioner.local.private import private_directory, private_file, private_files
from provisioner.local.process import alive, pid_in, runs, stop
from provisioner.local.seed import write_seed
from provisioner.local.twin import Twin
from provisioner.paths import state_home
from provisioner.recipe.metadata import USER_DATA
from provisioner.recipe.ports import DEFAULT_FORWARD_TEXTS
from provisioner.recipe.user_data import HOME_DISK_NAME


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
    forwards: tuple[str, ...] = DEFAULT_FORWARD_TEXTS
    """The VM's ports its Host entry forwards (forwardPorts), each `PORT` or `LOCAL:REMOTE`."""
    forward_agent: bool = False
    """Whether its Host entry forwards the laptop's ssh agent (forwardAgent)."""

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
        return runs(self.pid, *qemu.signature(self.directory))

    def console_host_keys(self, deadline: float) -> tuple[HostKey, ...]:
        """The host keys the VM printed on its console (the recipe prints them first), waiting for them.

        Raises LocalToolError when QEMU exits, UnreachableError when the deadline passes first.
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

        Raises LocalToolError when QEMU exits, UnreachableError when the deadline passes first.
        """
        assert self.twin is not None
        twin = self.twin
        # Through the Compute API view, as the host reads a real VM's: the guest's side is the VM's alone.
        request = urllib.request.Request(  # noqa: S310 (the twin's own server, http on loopback)
            f"{twin.compute_api}/projects/{twin.project}/zones/{twin.zone}/instances/{twin.instance}"
            "/getGuestAttributes?queryPath=hostkeys/",
            headers={"Authorization": f"Bearer {twin.token}"},
        )
        while True:
            try:
                with _DIRECT.open(request, timeout=10) as response:
                    if json.load(response).get("queryValue", {}).get("items"):
                        return
            except (urllib.error.URLError, OSError, ValueError, AttributeError):
                pass  # nothing published yet (404), or the server is busy
            self._wait_while_running(deadline, "no SSH host keys in the guest attributes")

    def _wait_while_running(self, deadline: float, what: str) -> None:
        if _panicked(self.console_log):
            raise GuestPanicError(f"{self.name}: the guest kernel panicked while booting; see {self.console_log}")
        if not self.running():
            tail = (self.directory / "qemu.log").read_text(errors="replace")[-2000:]
            raise LocalToolError(f"QEMU exited: {tail or 'see ' + str(self.console_log)}")
        if time.monotonic() >= deadline:
            raise UnreachableError(f"{self.name}: {what} before the deadline; see {self.console_log}")
        time.sleep(0.5)

    def pinned(self, host_keys: tuple[HostKey, ...]) -> LocalVm:
        """This VM with HOST_KEYS pinned: saved, in its known_hosts and its ~/.ssh/config entry."""
        vm = replace(self, host_keys=host_keys)
        vm.save()
        block = ssh_config_block(
            vm.host_alias, "127.0.0.1", vm.user, str(vm.identity), str(vm.known_hosts), vm.ssh_port,
            forwards=vm.forwards, forward_agent=vm.forward_agent,
        )  # fmt: skip
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
        # A VM booted before forwardPorts forwarded Jupyter's port alone.
        forwards=tuple(map(str, record.get("forwards", ["8888"]))),
        forward_agent=record.get("forward_agent") is True,
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
        ("qemu.pid", "QEMU", qemu.signature(directory)),
        (gce_twin.PID_FILE, "metadata server", gce_twin.server_signature(directory)),
    ):
        pid = pid_in(directory / pid_file)
        if pid and not stop(pid, *signature) and alive(pid):
            progress(f"{pid_file}: process {pid} is not this VM's {what} (the pid file is stale): left it alone")
    shutil.rmtree(directory)
    return True


PANIC = b"Kernel panic - not syncing"
BOOT_ATTEMPTS = 3
"""Boots of one `local up`: a guest kernel may panic early under multi-threaded software emulation
(seen once with Debian 13's kernel: an int3 oops while it patched its own code), as a real machine may
once; booting it again is what an operator would do."""


_LEFT_RUNNING: list[subprocess.Popen[bytes]] = []
"""The QEMU processes `boot` left running on purpose (a VM outlives `local up`), held so that Python
does not take them for forgotten ones (a ResourceWarning) when their Popen objects go."""


class GuestPanicError(LocalToolError):
    """The guest's kernel panicked: the VM will never come up without a new boot."""


def _panicked(console: Path) -> bool:
    """Whether the console's last 64 KiB show a kernel panic."""
    try:
        with console.open("rb") as file:
            file.seek(max(file.seek(0, os.SEEK_END) - 65536, 0))
            return PANIC in file.read()
    except OSError:
        return False


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""The twin's server is on loopback: reached directly, never through http_proxy (which would see its token)."""

LOCAL_HOME_DISK_DEVICE = f"/dev/disk/by-id/virtio-{HOME_DISK_NAME}"


def ensure_home_disk(path: Path, size_gb: int) -> Path:
    """A home disk image at PATH: created empty (sparse qcow2 of SIZE_GB) if missing, else kept as is
    (if it reads no other file: see `refuse_other_files`).

    It is not part of any VM's directory, so `local down` keeps it for the next `local up`.
    """
    path = path.expanduser().resolve()
    if not path.exists():
        # The student's work: for this user only, and so is a directory made for it.
        with private_files():
            path.parent.mkdir(parents=True, exist_ok=True)
            qemu.create_disk(path, f"{size_gb}G")
    else:
        refuse_other_files(path, "--home-disk")
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
    forwards: tuple[str, ...] = DEFAULT_FORWARD_TEXTS,
    forward_agent: bool = False,
    deadline: float,
    progress: Progress = lambda _: None,
) -> LocalVm:
    """Boot a new local VM called NAME whose instance metadata is ATTRIBUTES, and wait until it has
    published its host keys (pin them with `LocalVm.pinned`).

    A GCE image (Image.gce) boots as a GCE VM: it reads ATTRIBUTES from its metadata server and
    publishes its host keys in guest attributes. Any other image gets ATTRIBUTES' user-data from a
    NoCloud seed and prints its host keys on the console. HOME_DISK (see `ensure_home_disk`) is
    attached as the VM's home disk; FORWARDS and FORWARD_AGENT go into its Host entry once it is pinned.
    Raises CourseVmError (a VM of that name exists), MissingPrerequisiteError (a tool is missing),
    LocalToolError (QEMU or a tool fails) and UnreachableError (no host keys published before the deadline).
    """
    directory = vm_directory(name)
    _make_way(name, directory, progress)
    # It will hold the VM's disk, its host keys and the twin's token: everything in it, whoever
    # writes it (qemu-img, cloud-localds, QEMU, the metadata server), is for this user only.
    private_directory(directory.parent)
    with private_files():
        directory.mkdir()
        qemu.create_disk(directory / "disk.qcow2", disk_size, image)
        twin = gce_twin.start(directory, gce_twin.twin_instance(name, attributes)) if image.gce else None
        if twin is None:
            write_seed(directory, name, attributes[USER_DATA])
        port = free_loopback_port()

        def command(chosen: str) -> list[str]:
            return qemu.command(image, directory, chosen, port, memory_mb, cpus, home_disk, twin)

        process, chosen = qemu.start_accelerated(command, directory, accel, progress)
        progress(f"booting {name} ({chosen}{', as a GCE VM' if twin else ''}); SSH on 127.0.0.1:{port}")
        vm = LocalVm(name, directory, process.pid, port, user, identity, (), chosen, twin, forwards, forward_agent)
        return _published_host_keys(vm, process, lambda: qemu.start(command(chosen), directory), deadline, progress)


def _make_way(name: str, directory: Path, progress: Progress) -> None:
    """Remove what a stopped VM called NAME left in DIRECTORY. Raises CourseVmError when it still runs."""
    if directory.exists():
        existing = load(name) if (directory / "vm.json").is_file() else None
        if existing and existing.running():
            raise CourseVmError(
                f"a local VM named {name!r} is running. Fix: `local down --name {name}` first, or choose another --name"
            )
        down(name, progress)


def _published_host_keys(
    vm: LocalVm,
    process: subprocess.Popen[bytes],
    boot_again: Callable[[], subprocess.Popen[bytes]],
    deadline: float,
    progress: Progress,
) -> LocalVm:
    """VM, run by PROCESS, once it has published its host keys; booted again by BOOT_AGAIN when its
    kernel panics, BOOT_ATTEMPTS times in all. QEMU is stopped when it does not come up, or on Ctrl-C.

    Raises GuestPanicError (the last boot panicked too) and UnreachableError (the deadline passed).
    """
    for attempt in range(1, BOOT_ATTEMPTS + 1):
        vm = replace(vm, pid=process.pid)
        vm.save()
        try:
            if vm.twin is None:
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
            progress(f"{vm.name}: the guest kernel panicked while booting; booting it again ({attempt + 1})")
            process = boot_again()
        except (UnreachableError, KeyboardInterrupt):
            # Ctrl-C too: QEMU runs in a session of its own, which the terminal's Ctrl-C does not reach.
            process.kill()
            process.wait()
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")
