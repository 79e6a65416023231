"""The GCE twin's metadata server process: what it serves, who may read it, and that it ends with the VM."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from provisioner.local.process import alive, stop
from provisioner.local.twin import CONFIG, GUEST_SOCKET, Twin, qemu_args, server_signature
from tests.conftest import ROOT
from tests.support.guest_http import guest_json

ATTRIBUTES = {"user-data": "#cloud-config\n", "enable-guest-attributes": "TRUE"}


def host_get(url: str, path: str, headers: dict[str, str]) -> int:
    """The status the loopback port answers to `GET PATH` (the host's side)."""
    request = urllib.request.Request(url + path, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return int(response.status)
    except urllib.error.HTTPError as error:
        with error:
            return error.code


def wait_until_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


STARTER = """
import dataclasses, json, sys
from pathlib import Path
from provisioner.local.twin import start, twin_instance
print(json.dumps(dataclasses.asdict(start(Path(sys.argv[1]), twin_instance("one", json.loads(sys.argv[2]))))))
"""


def start_as_local_up_does(directory: Path, attributes: dict[str, str]) -> Twin:
    """Start DIRECTORY's metadata server from a process that then exits, as `local up` does."""
    started = subprocess.run(
        [sys.executable, "-c", STARTER, str(directory), json.dumps(attributes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return Twin(**json.loads(started.stdout))


def test_it_serves_the_vms_metadata_and_holds_its_token_for_this_user_only(tmp_path: Path) -> None:
    qemu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands in for QEMU
    (tmp_path / "qemu.pid").write_text(f"{qemu.pid}\n")
    twin = start_as_local_up_does(tmp_path, ATTRIBUTES)
    try:
        guest = tmp_path / GUEST_SOCKET
        assert guest_json(guest, "/computeMetadata/v1/instance/attributes/?recursive=true") == ATTRIBUTES
        document = guest_json(guest, "/computeMetadata/v1/?recursive=true")
        assert isinstance(document, dict)
        # The guest's side is the VM's alone: on the loopback port, which every local user (and every
        # local VM's guest) reaches, the instance's metadata is refused and only the token's view is served.
        assert stat.S_ISSOCK(guest.stat().st_mode)  # in the VM's own folder, 0700 (see test_vm.py)
        assert host_get(twin.url, "/computeMetadata/v1/instance/attributes/", {"Metadata-Flavor": "Google"}) == 403
        view = f"/compute/v1/projects/{twin.project}/zones/{twin.zone}/instances/{twin.instance}"
        assert host_get(twin.url, view, {"Authorization": f"Bearer {twin.token}"}) == 200
        assert document["instance"]["name"] == twin.instance == "course-vm-one"
        assert document["instance"]["networkInterfaces"][0]["mac"] == "42:01:a9:fe:02:0f"
        assert stat.S_IMODE((tmp_path / CONFIG).stat().st_mode) == 0o600
        assert twin.compute_api == twin.url + "/compute/v1"
        assert stop(twin.pid, *server_signature(tmp_path))  # as `local down` does
        assert wait_until_gone(twin.pid)
    finally:
        qemu.kill()
        qemu.wait()


def test_it_ends_once_the_vm_and_the_command_that_started_it_have_ended(tmp_path: Path) -> None:
    qemu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # stands in for QEMU
    (tmp_path / "qemu.pid").write_text(f"{qemu.pid}\n")
    try:
        server = start_as_local_up_does(tmp_path, {}).pid  # `local up` exits; the VM runs on
        time.sleep(1.5)
        assert alive(server), "the metadata server stopped while its VM still ran"
        qemu.kill()
        qemu.wait()
        assert wait_until_gone(server), "the metadata server outlived its VM"
    finally:
        qemu.kill()
        qemu.wait()


def test_a_comma_in_the_relays_path_cannot_split_qemus_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioner.local.twin.RELAY", Path("/opt/a,b/relay.py"))
    twin = Twin("http://127.0.0.1:4321", "token", "p", "local-twin1-a", "course-vm-one", 1)
    netdev = qemu_args(twin, 2222, Path("/vms/x,y"))[3]
    assert netdev.endswith("-cmd:" + f"{sys.executable} -I -S /opt/a,,b/relay.py /vms/x,,y/metadata.sock")
