"""The GCE twin: a local VM shown a GCE identity, and the metadata server that serves it for the VM's life.

QEMU presents the VM as GCE does (SMBIOS, the metadata server at 169.254.169.254 on a link-local
network, a GCE-style MAC address), so that the image's own cloud-init (GCE datasource) and Google's
guest agent run as they would on a Compute Engine VM. The metadata server runs in a process of its
own beside QEMU, started with the VM and ending when the VM ends.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import select
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from provisioner.errors import LocalToolError
from provisioner.local.metadata_server import MetadataServer, TwinInstance, random_instance_id
from provisioner.local.process import alive, pid_in
from provisioner.paths import PACKAGE_ROOT

NETWORK = "169.254.0.0/16"
"""The VM's user network: GCE's metadata address is link-local, and QEMU forwards only inside its network."""
METADATA_ADDRESS = "169.254.169.254"
HOST_ADDRESS = "169.254.2.2"
"""The host as the twin sees it (QEMU's user network puts its host at .2.2): where local mirrors are."""
GUEST_ADDRESS = "169.254.2.15"
"""The address QEMU's DHCP gives the VM."""
GUEST_MAC = "42:01:a9:fe:02:0f"
"""GCE's MAC addresses are 42:01 and the VM's IPv4 address; the guest agent finds its NIC by it."""
RELAY = Path(__file__).resolve().parent / "relay.py"
CONFIG = "twin.json"
PID_FILE = "metadata.pid"
LOG = "metadata.log"
GUEST_SOCKET = "metadata.sock"
"""The metadata server's guest side, in the VM's own 0700 folder: QEMU's relay connects there."""
START_SECONDS = 30.0
SERVER_MODULE = "provisioner.local.twin"
"""This module: the metadata server runs as `python -m SERVER_MODULE DIRECTORY`."""


@dataclass(frozen=True)
class Twin:
    """A twin's metadata server as the host reaches it, and the GCE names it gives the VM."""

    url: str
    token: str
    """The Compute API view's bearer token: only the host holds it, not the guest."""
    project: str
    zone: str
    instance: str
    pid: int

    @property
    def compute_api(self) -> str:
        """The Compute API view, where the host reads the twin's guest attributes and console."""
        return self.url + "/compute/v1"


def twin_instance(name: str, attributes: Mapping[str, str]) -> TwinInstance:
    """The GCE identity of local VM NAME, whose instance attributes are ATTRIBUTES."""
    return TwinInstance(
        name=f"course-vm-{name}",
        instance_id=random_instance_id(),
        mac=GUEST_MAC,
        ip=GUEST_ADDRESS,
        attributes=dict(attributes),
    )


def qemu_args(twin: Twin, ssh_port: int, directory: Path) -> list[str]:
    """QEMU's SMBIOS and network arguments that make the VM in DIRECTORY a GCE one, its SSH on
    127.0.0.1:SSH_PORT.

    Each guest connection to the metadata server starts one relay to the server's guest socket in
    DIRECTORY (QEMU's `cmd:` form; its chardev form would be one stream for the VM's whole life).
    """
    # cloud-init's GCE detection reads the SMBIOS product name (or a GoogleCloud- serial).
    serial = hashlib.sha256(twin.instance.encode()).hexdigest()[:32].upper()
    socket_path = str((directory / GUEST_SOCKET).absolute())
    relay = " ".join(shlex.quote(part) for part in (sys.executable, "-I", "-S", str(RELAY), socket_path))
    netdev = (
        f"user,id=net0,net={NETWORK},hostfwd=tcp:127.0.0.1:{ssh_port}-:22,"
        f"guestfwd=tcp:{METADATA_ADDRESS}:80-cmd:{relay.replace(',', ',,')}"  # QEMU's options escape a comma as ,,
    )
    return [
        "-smbios",
        f"type=1,manufacturer=Google,product=Google Compute Engine,serial=GoogleCloud-{serial}",
        "-netdev",
        netdev,
        "-device",
        f"virtio-net-pci,netdev=net0,mac={GUEST_MAC}",
    ]


def server_signature(directory: Path) -> tuple[str, ...]:
    """The program and arguments by which `process.runs` knows the metadata server of DIRECTORY's VM."""
    return ("python", "-m", SERVER_MODULE, str(directory))


def start(directory: Path, instance: TwinInstance) -> Twin:
    """Start the metadata server of the VM in DIRECTORY, serving INSTANCE, and return how to reach it.

    It runs until the VM's QEMU (DIRECTORY/qemu.pid) and the process that started it have both
    ended. Raises LocalToolError when it does not start.
    """
    token = os.urandom(24).hex()
    config = directory / CONFIG
    descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        # Field by field: the attribute maps are read-only views, which asdict cannot copy.
        fields = {field.name: getattr(instance, field.name) for field in dataclasses.fields(instance)}
        fields.update(attributes=dict(instance.attributes), project_attributes=dict(instance.project_attributes))
        json.dump({"instance": fields, "token": token}, file)
    with (directory / LOG).open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE, str(directory)],
            cwd=PACKAGE_ROOT,  # where `-m` finds this same provisioner (an installed copy has no checkout)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
    assert process.stdout is not None
    (directory / PID_FILE).write_text(f"{process.pid}\n")
    ready, _, _ = select.select([process.stdout], [], [], START_SECONDS)
    url = process.stdout.readline().decode().strip() if ready else ""
    process.stdout.close()
    if not url.startswith("http://127.0.0.1:"):
        process.kill()
        tail = (directory / LOG).read_text(errors="replace")[-2000:]
        raise LocalToolError(f"the local VM's metadata server did not start: {tail or 'no output'}")
    return Twin(url, token, instance.project_id, instance.zone, instance.name, process.pid)


def serve(directory: Path) -> int:
    """The metadata server's process: serve DIRECTORY's twin until the VM and its starter are gone."""
    config = json.loads((directory / CONFIG).read_text())
    instance = TwinInstance(**config["instance"])
    starter = os.getppid()
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # The guest's socket is bound by its name in DIRECTORY, so that a long DIRECTORY cannot pass the
    # 108 bytes a socket's path may have; its files are given whole.
    directory = directory.absolute()  # it is still read (qemu.pid) once the process is in it
    console_log = directory / "console.log"
    os.chdir(directory)
    with MetadataServer(
        instance, token=config["token"], console_log=console_log, log=log, guest_socket=Path(GUEST_SOCKET)
    ) as server:
        print(server.url, flush=True)
        # The starter reads only that line and closes the pipe: nothing more may go there.
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
        while not stopping.wait(0.5):
            qemu = pid_in(directory / "qemu.pid")
            if os.getppid() != starter and not (qemu and alive(qemu)):
                break
    return 0


if __name__ == "__main__":
    sys.exit(serve(Path(sys.argv[1])))
