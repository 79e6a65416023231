"""Google's real client, gcloud, reads what the stand-ins of the Compute API answer: the fake
(tests/support/fake_compute_api.py) and the local twin's view (provisioner/local/metadata_server.py).

course-vm's own client was written beside those stand-ins, so it proves nothing about their shapes;
gcloud's discovery-generated messages and its operation waiter do. Every endpoint course-vm calls is read
here with `--format=json` and its fields checked, and the error bodies are checked by what gcloud shows.
Each gcloud run takes most of a second, so one test reads several endpoints.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from provisioner.local.metadata_server import MetadataServer, TwinInstance
from tests.support import real_gcloud
from tests.support.fake_compute_api import (
    ED25519,
    INSTANCE,
    NETWORK_IP,
    OPERATIONS_PATH,
    ZONE_PATH,
    FakeComputeApi,
    quota_exceeded,
    zone_exhausted,
)

AT = ["--project", INSTANCE.project, "--zone", INSTANCE.zone]
ZONE_URL = f"https://www.googleapis.com/compute/v1/projects/{INSTANCE.project}/zones/{INSTANCE.zone}"


def gcloud_json(arguments: list[str], config: Path, api: str) -> Any:
    """What gcloud prints for ARGUMENTS with `--format=json`, parsed; the test fails when gcloud does."""
    result = real_gcloud.run([*arguments, "--format=json"], config, api)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def gcloud_error(arguments: list[str], config: Path, api: str) -> str:
    """What gcloud says on stderr for ARGUMENTS, which must fail (exit status 1)."""
    result = real_gcloud.run(arguments, config, api)
    assert result.returncode == 1, (result.stdout, result.stderr)
    return result.stderr


def test_gcloud_reads_the_fakes_instance_guest_attributes_and_console(api: FakeComputeApi, tmp_path: Path) -> None:
    api.instance_status = "RUNNING"
    api.guest_attributes = [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    api.console = "[   12.3] cloud-init[812]: finished\n"
    instance = gcloud_json(["compute", "instances", "describe", INSTANCE.name, *AT], tmp_path, api.url)
    assert (instance["name"], instance["status"], instance["zone"]) == (INSTANCE.name, "RUNNING", ZONE_URL)
    assert instance["selfLink"] == f"{ZONE_URL}/instances/{INSTANCE.name}"
    assert instance["machineType"] == f"{ZONE_URL}/machineTypes/e2-standard-2"
    assert instance["id"].isdigit()
    [nic] = instance["networkInterfaces"]
    assert (nic["name"], nic["networkIP"]) == ("nic0", NETWORK_IP)
    attributes = gcloud_json(
        ["compute", "instances", "get-guest-attributes", INSTANCE.name, "--query-path=hostkeys/", *AT],
        tmp_path,
        api.url,
    )
    assert attributes == [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    console = real_gcloud.run(
        ["compute", "instances", "get-serial-port-output", INSTANCE.name, "--port", "1", *AT], tmp_path, api.url
    )
    assert (console.returncode, console.stdout) == (0, api.console + "\n"), console.stderr
    assert f"--start={len(api.console)}" in console.stderr, "gcloud read `next`"


def test_gcloud_starts_and_stops_the_fakes_instance_waiting_on_its_operation(
    api: FakeComputeApi, tmp_path: Path
) -> None:
    [started] = gcloud_json(["compute", "instances", "start", INSTANCE.name, *AT], tmp_path, api.url)
    assert (started["name"], started["status"]) == (INSTANCE.name, "RUNNING")
    [operation] = api.operations.values()
    assert api.requests[:3] == [
        f"POST {ZONE_PATH}{INSTANCE.name}/start",
        f"POST {OPERATIONS_PATH}{operation['name']}/wait",  # gcloud's poller: zoneOperations.wait, from selfLink
        ZONE_PATH + INSTANCE.name,  # then the target: instances.get, whose nic0 it prints
    ]
    assert (operation["status"], operation["operationType"]) == ("DONE", "start")
    stopped = real_gcloud.run(["compute", "instances", "stop", INSTANCE.name, *AT], tmp_path, api.url)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Updated [{api.url}/projects/{INSTANCE.project}/zones/{INSTANCE.zone}/instances/{INSTANCE.name}]" in (
        stopped.stderr
    )
    assert api.instance_status == "TERMINATED"
    # zoneOperations.get, which course-vm reads while it waits (gcloud's own wait is zoneOperations.wait).
    name = str(operation["name"])
    read = gcloud_json(["compute", "operations", "describe", name, *AT], tmp_path, api.url)
    assert (read["name"], read["status"], read["operationType"]) == (name, "DONE", "start")
    assert read["targetLink"].endswith(f"/instances/{INSTANCE.name}")
    assert api.requests[-1] == OPERATIONS_PATH + name


def test_gcloud_shows_the_error_a_failed_start_operation_ends_with(api: FakeComputeApi, tmp_path: Path) -> None:
    for error in (zone_exhausted(), quota_exceeded()):
        api.operation_error = error
        said = gcloud_error(["compute", "instances", "start", INSTANCE.name, *AT], tmp_path, api.url)
        [entry] = error["errors"]
        assert " ".join(entry["message"].split()) in " ".join(said.split()), "gcloud wraps it at 80 columns"
        assert api.instance_status == "TERMINATED"


def test_gcloud_reads_the_fakes_project_region_and_machine_type(api: FakeComputeApi, tmp_path: Path) -> None:
    project = gcloud_json(["compute", "project-info", "describe", "--project", INSTANCE.project], tmp_path, api.url)
    assert project["name"] == INSTANCE.project
    assert project["quotas"][0] == {"metric": "CPUS_ALL_REGIONS", "limit": 32.0, "usage": 0.0}
    region = gcloud_json(
        ["compute", "regions", "describe", "europe-west1", "--project", INSTANCE.project], tmp_path, api.url
    )
    assert region["name"] == "europe-west1"
    assert {quota["metric"]: quota["limit"] for quota in region["quotas"]}["N2_CPUS"] == 24.0
    machine = gcloud_json(["compute", "machine-types", "describe", "n2-standard-4", *AT], tmp_path, api.url)
    assert (machine["name"], machine["guestCpus"]) == ("n2-standard-4", 4)


def test_gcloud_shows_the_fakes_error_bodies(api: FakeComputeApi, tmp_path: Path) -> None:
    missing = gcloud_error(["compute", "machine-types", "describe", "n9-huge-99", *AT], tmp_path, api.url)
    where = f"projects/{INSTANCE.project}/zones/{INSTANCE.zone}/machineTypes/n9-huge-99"
    assert f"The resource '{where}' was not found" in missing
    api.status = 403
    denied = gcloud_error(["compute", "instances", "describe", INSTANCE.name, *AT], tmp_path, api.url)
    assert "Required 'compute.instances.getGuestAttributes' permission" in denied
    api.status, api.api_enabled = 200, False
    disabled = gcloud_error(["compute", "project-info", "describe", "--project", INSTANCE.project], tmp_path, api.url)
    assert "Compute Engine API has not been used in project 123456789012 before or it is disabled" in disabled


TWIN = TwinInstance(
    name="course-vm-alice",
    instance_id=4520031799277581759,
    project_id="twin-proj",
    attributes={"enable-guest-attributes": "TRUE"},
)
TWIN_AT = ["--project", TWIN.project_id, "--zone", TWIN.zone]


@pytest.fixture
def twin(tmp_path: Path) -> Iterator[MetadataServer]:
    """The twin's metadata server (no VM), with a console, that takes gcloud's token."""
    console = tmp_path / "console.log"
    console.write_text("[    3.1] cloud-init[301]: Cloud-init v. 24.1 running 'init'\n")
    with MetadataServer(TWIN, token=real_gcloud.TOKEN, console_log=console) as server:
        yield server


def publish(server: MetadataServer, namespace: str, key: str, value: str) -> None:
    """Publish a guest attribute as the guest does, through the metadata server's guest side."""
    request = urllib.request.Request(  # noqa: S310 (http to our own server)
        f"{server.url}/computeMetadata/v1/instance/guest-attributes/{namespace}/{key}",
        data=value.encode(),
        headers={"Metadata-Flavor": "Google"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass


def test_gcloud_reads_the_twins_instance_guest_attributes_and_console(twin: MetadataServer, tmp_path: Path) -> None:
    publish(twin, "hostkeys", "ssh-ed25519", ED25519)
    publish(twin, "course-vm", "bake", "passed")
    config = tmp_path / "gcloud"
    instance = gcloud_json(["compute", "instances", "describe", TWIN.name, *TWIN_AT], config, twin.compute_api)
    zone = f"https://www.googleapis.com/compute/v1/projects/{TWIN.project_id}/zones/{TWIN.zone}"
    assert (instance["name"], instance["status"], instance["zone"]) == (TWIN.name, "RUNNING", zone)
    assert (instance["id"], instance["selfLink"]) == (str(TWIN.instance_id), f"{zone}/instances/{TWIN.name}")
    [nic] = instance["networkInterfaces"]
    assert (nic["name"], nic["networkIP"]) == ("nic0", TWIN.ip), "what start-iap-tunnel reads"
    for path, item in [
        ("hostkeys/", {"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}),
        ("course-vm/bake", {"namespace": "course-vm", "key": "bake", "value": "passed"}),
    ]:
        read = ["compute", "instances", "get-guest-attributes", TWIN.name, f"--query-path={path}", *TWIN_AT]
        assert gcloud_json(read, config, twin.compute_api) == [item]
    console = real_gcloud.run(
        ["compute", "instances", "get-serial-port-output", TWIN.name, "--port", "1", *TWIN_AT], config, twin.compute_api
    )
    assert (console.returncode, console.stdout) == (0, (tmp_path / "console.log").read_text() + "\n"), console.stderr


def test_gcloud_shows_the_twins_error_bodies(twin: MetadataServer, tmp_path: Path) -> None:
    config = tmp_path / "gcloud"
    unpublished = ["compute", "instances", "get-guest-attributes", TWIN.name, "--query-path=hostkeys/", *TWIN_AT]
    said = gcloud_error(unpublished, config, twin.compute_api)
    assert f"The resource 'projects/{TWIN.project_id}/zones/{TWIN.zone}/instances/{TWIN.name}/guestAttributes/" in said
    other = gcloud_error(["compute", "instances", "describe", "course-vm-bob", *TWIN_AT], config, twin.compute_api)
    assert "instances/course-vm-bob' was not found" in other
