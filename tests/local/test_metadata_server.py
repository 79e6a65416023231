"""The GCE metadata server stand-in, over real HTTP; and cloud-init's own GCE client against it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.access.host_keys import CONSOLE_BEGIN, CONSOLE_END
from provisioner.errors import CourseVmError
from provisioner.gcp.compute_api import GceInstance, gce_host_keys
from provisioner.local.metadata_http import MAX_OPEN, WORKERS
from provisioner.local.metadata_server import (
    MAX_GUEST_ATTRIBUTES,
    MAX_GUEST_BYTES,
    MAX_GUEST_VALUE_BYTES,
    MAX_HELD,
    MetadataServer,
    TwinInstance,
    random_instance_id,
)
from tests.conftest import require_tool
from tests.support.fake_compute_api import ECDSA, ED25519
from tests.support.guest_http import guest_get

USER_DATA = "#cloud-config\nusers: [{name: student}]\n"
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
TWIN = TwinInstance(
    name="course-vm-alice",
    instance_id=4520031799277581759,
    project_id="twin-proj",
    numeric_project_id=123456789012,
    zone="local-twin1-a",
    machine_type="e2-standard-4",
    attributes={
        "user-data": USER_DATA,
        "ssh-keys": f"student:{SSH_KEY} student",
        "block-project-ssh-keys": "TRUE",
        "enable-guest-attributes": "TRUE",
    },
)
FLAVOR = {"Metadata-Flavor": "Google"}
V1 = "/computeMetadata/v1/"


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    def json(self) -> object:
        return json.loads(self.body)


def call(
    server: MetadataServer,
    path: str,
    *,
    method: str = "GET",
    data: bytes | None = None,
    headers: Mapping[str, str] = FLAVOR,
) -> Reply:
    request = urllib.request.Request(server.url + path, data=data, headers=dict(headers), method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=90) as response:  # noqa: S310 (http to our own server)
            return Reply(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        with error:
            return Reply(error.code, dict(error.headers), error.read())


def raw(server: MetadataServer, request: bytes) -> bytes:
    """Everything the server sends back for REQUEST, sent as is, until it closes the connection."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(request)
        connection.shutdown(socket.SHUT_WR)  # nothing more is coming
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    return received


@pytest.fixture
def server() -> Iterator[MetadataServer]:
    with MetadataServer(TWIN) as serving:
        yield serving


def test_the_root_answers_as_gce_does_to_client_libraries_probing_it(server: MetadataServer) -> None:
    reply = call(server, "/", headers={})
    assert (reply.status, reply.text, reply.headers["Metadata-Flavor"]) == (200, "computeMetadata/\n", "Google")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", V1),
        ("GET", V1 + "instance/id"),
        ("GET", V1 + "instance/attributes/?recursive=true"),
        ("PUT", V1 + "instance/guest-attributes/hostkeys/ssh-ed25519"),
    ],
)
def test_metadata_needs_the_metadata_flavor_header(server: MetadataServer, method: str, path: str) -> None:
    reply = call(server, path, method=method, data=b"AAAA" if method == "PUT" else None, headers={})
    assert reply.status == 403
    assert reply.headers["Metadata-Flavor"] == "Google"
    assert server.guest_attributes == {}


def test_the_guest_agents_double_slash_root_is_the_whole_document_with_gces_json_types(server: MetadataServer) -> None:
    reply = call(server, "/computeMetadata/v1//?recursive=true&alt=json&last_etag=NONE")
    assert reply.status == 200
    document = reply.json()
    assert document == {
        "instance": {
            "id": 4520031799277581759,
            "name": "course-vm-alice",
            "hostname": "course-vm-alice.c.twin-proj.internal",
            "zone": "projects/123456789012/zones/local-twin1-a",
            "machineType": "projects/123456789012/machineTypes/e2-standard-4",
            "attributes": dict(TWIN.attributes),
            "networkInterfaces": [
                {
                    "mac": "42:01:0a:80:00:02",
                    "ip": "10.128.0.2",
                    "network": "projects/123456789012/networks/default",
                    "forwardedIps": [],
                    "forwardedIpv6s": [],
                    "targetInstanceIps": [],
                    "ipAliases": [],
                }
            ],
        },
        "project": {"projectId": "twin-proj", "numericProjectId": 123456789012, "attributes": {}},
    }
    # The guest agent's Go structs: ids are JSON numbers, attribute values strings.
    assert isinstance(document, dict)
    assert type(document["instance"]["id"]) is int
    assert type(document["project"]["numericProjectId"]) is int
    assert all(type(value) is str for value in document["instance"]["attributes"].values())


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("instance/id", "4520031799277581759"),  # no newline: cloud-init uses the raw text as the instance id
        ("instance/name", "course-vm-alice"),
        ("instance/hostname", "course-vm-alice.c.twin-proj.internal"),
        ("instance/zone", "projects/123456789012/zones/local-twin1-a"),
        ("instance/machine-type", "projects/123456789012/machineTypes/e2-standard-4"),
        ("instance/network-interfaces/0/mac", "42:01:0a:80:00:02"),
        ("instance/attributes/user-data", USER_DATA),
        ("instance/attributes/enable-guest-attributes", "TRUE"),
        ("project/project-id", "twin-proj"),
        ("project/numeric-project-id", "123456789012"),
        ("/instance//id", "4520031799277581759"),
    ],
)
def test_text_leaves(server: MetadataServer, path: str, text: str) -> None:
    reply = call(server, V1 + path)
    assert (reply.status, reply.text) == (200, text)
    assert reply.headers["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("instance/id", 4520031799277581759),
        ("project/numeric-project-id", 123456789012),
        ("instance/attributes/user-data", USER_DATA),
    ],
)
def test_a_leaf_with_alt_json_is_its_json(server: MetadataServer, path: str, value: object) -> None:
    assert call(server, V1 + path + "?alt=json").json() == value


def test_directories_with_recursive_true_are_json_any_case(server: MetadataServer) -> None:
    # cloud-init asks `recursive=True`; the guest agent `recursive=true`.
    assert call(server, V1 + "instance/attributes/?recursive=True").json() == dict(TWIN.attributes)
    assert call(server, V1 + "project/attributes/?recursive=true").json() == {}  # never a 404: cloud-init retries
    interface = call(server, V1 + "instance/network-interfaces/0/?recursive=true").json()
    assert isinstance(interface, dict) and interface["forwardedIps"] == []
    project = call(server, V1 + "project/?recursive=true").json()
    assert project == {"projectId": "twin-proj", "numericProjectId": 123456789012, "attributes": {}}


def test_guest_attributes_are_not_in_the_instance_document(server: MetadataServer) -> None:
    call(server, V1 + "instance/guest-attributes/hostkeys/ssh-ed25519", method="PUT", data=ED25519.encode())
    instance = call(server, V1 + "instance/?recursive=true").json()
    assert isinstance(instance, dict) and "guestAttributes" not in instance and "guest-attributes" not in instance


@pytest.mark.parametrize(
    ("path", "listing"),
    [
        ("", "instance/\nproject/\n"),
        ("instance/", "id\nname\nhostname\nzone\nmachine-type\nattributes/\nnetwork-interfaces/\n"),
        ("instance/attributes/", "user-data\nssh-keys\nblock-project-ssh-keys\nenable-guest-attributes\n"),
        ("instance/network-interfaces/", "0/\n"),
        (
            "instance/network-interfaces/0/",
            "mac\nip\nnetwork\nforwarded-ips/\nforwarded-ipv6s/\ntarget-instance-ips/\nip-aliases/\n",
        ),
        ("project/", "project-id\nnumeric-project-id\nattributes/\n"),
        ("project/attributes/", ""),
    ],
)
def test_directories_without_recursive_are_gces_listing(server: MetadataServer, path: str, listing: str) -> None:
    reply = call(server, V1 + path)
    assert (reply.status, reply.text) == (200, listing)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", V1 + "instance/attributes/no-such-key", 404),
        ("GET", V1 + "instance/machineType", 404),  # path names are GCE's hyphenated ones
        ("GET", V1 + "instance/network-interfaces/1/mac", 404),
        ("GET", V1 + "instance/id/more", 404),
        ("GET", "/computeMetadata/v2/instance/id", 404),
        ("GET", "/elsewhere", 404),
        ("POST", V1 + "instance/id", 405),
        ("DELETE", V1 + "instance/attributes/user-data", 405),
        ("PUT", V1 + "instance/attributes/user-data", 405),
        ("POST", "/", 405),
    ],
)
def test_other_paths_and_methods_are_refused_with_the_flavor_header(
    server: MetadataServer, method: str, path: str, status: int
) -> None:
    reply = call(server, path, method=method, data=b"x" if method in ("PUT", "POST") else None)
    assert reply.status == status
    assert reply.headers["Metadata-Flavor"] == "Google"


def test_the_etag_is_stable_until_the_content_changes(server: MetadataServer) -> None:
    first, again = call(server, V1 + "?recursive=true"), call(server, V1 + "?recursive=true")
    assert first.headers["ETag"] and first.headers["ETag"] == again.headers["ETag"]
    leaf = call(server, V1 + "instance/id").headers["ETag"]
    assert leaf and leaf != first.headers["ETag"]
    server.set_attributes({**TWIN.attributes, "startup-script": "echo hi"})
    changed = call(server, V1 + "?recursive=true")
    assert changed.headers["ETag"] != first.headers["ETag"]
    assert call(server, V1 + "instance/id").headers["ETag"] == leaf  # instance/id did not change


def test_wait_for_change_returns_when_an_attribute_changes(server: MetadataServer) -> None:
    etag = call(server, V1 + "?recursive=true").headers["ETag"]
    with ThreadPoolExecutor(1) as pool:
        started = time.monotonic()
        reply_future = pool.submit(
            call, server, f"{V1}?recursive=true&alt=json&wait_for_change=true&timeout_sec=60&last_etag={etag}"
        )
        time.sleep(0.5)
        assert not reply_future.done()  # held
        server.set_attributes({**TWIN.attributes, "ssh-keys": "student:ssh-ed25519 AAAA student"})
        reply = reply_future.result(timeout=10)
    assert time.monotonic() - started < 5
    assert reply.headers["ETag"] != etag
    document = reply.json()
    assert isinstance(document, dict)
    assert document["instance"]["attributes"]["ssh-keys"] == "student:ssh-ed25519 AAAA student"


def test_wait_for_change_returns_the_same_etag_at_its_timeout(server: MetadataServer) -> None:
    etag = call(server, V1 + "instance/attributes/?recursive=true").headers["ETag"]
    started = time.monotonic()
    reply = call(server, f"{V1}instance/attributes/?recursive=true&wait_for_change=true&timeout_sec=1&last_etag={etag}")
    assert 0.9 <= time.monotonic() - started < 10
    assert (reply.status, reply.headers["ETag"]) == (200, etag)


@pytest.mark.parametrize("last_etag", ["&last_etag=NONE", "", "&last_etag=0123456789abcdef"])
def test_wait_for_change_without_the_current_etag_answers_at_once(server: MetadataServer, last_etag: str) -> None:
    started = time.monotonic()
    reply = call(server, f"{V1}?recursive=true&wait_for_change=true&timeout_sec=60{last_etag}")
    assert reply.status == 200 and time.monotonic() - started < 5


def test_a_guest_put_does_not_wake_a_watch_of_the_document(server: MetadataServer) -> None:
    root = V1 + "?recursive=true&alt=json"
    etag = call(server, root).headers["ETag"]
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(call, server, f"{root}&wait_for_change=true&timeout_sec=1&last_etag={etag}")
        time.sleep(0.3)
        call(server, V1 + "instance/guest-attributes/hostkeys/ssh-ed25519", method="PUT", data=ED25519.encode())
        assert watch.result(timeout=10).headers["ETag"] == etag  # answered at its timeout, unchanged


@pytest.mark.parametrize("timeout", ["abc", "0", "-5"])
def test_a_bad_timeout_is_refused(server: MetadataServer, timeout: str) -> None:
    assert call(server, f"{V1}?wait_for_change=true&timeout_sec={timeout}").status == 400


def test_guest_attributes_are_stored_and_read_back(server: MetadataServer) -> None:
    base = V1 + "instance/guest-attributes/"
    for path, value in [("hostkeys/ssh-ed25519", ED25519), ("hostkeys/ecdsa-sha2-nistp256", ECDSA)]:
        reply = call(server, base + path, method="PUT", data=value.encode())
        assert (reply.status, reply.body) == (200, b"")
    call(server, base + "guest-agent/sshable", method="PUT", data=b"")
    assert call(server, base + "hostkeys/ssh-ed25519").text == ED25519
    assert call(server, base + "hostkeys/").text == "ssh-ed25519\necdsa-sha2-nistp256\n"
    assert call(server, base).text == "hostkeys/\nguest-agent/\n"
    assert call(server, base + "hostkeys/?recursive=true").json() == {
        "ssh-ed25519": ED25519,
        "ecdsa-sha2-nistp256": ECDSA,
    }
    assert call(server, base + "hostkeys/ssh-rsa").status == 404
    assert server.guest_attributes == {
        "hostkeys": {"ssh-ed25519": ED25519, "ecdsa-sha2-nistp256": ECDSA},
        "guest-agent": {"sshable": ""},
    }
    # Published again (the guest agent regenerates the keys cloud-init made): the new value wins.
    call(server, base + "hostkeys/ssh-ed25519", method="PUT", data=b"AAAAnew")
    assert server.guest_attributes["hostkeys"]["ssh-ed25519"] == "AAAAnew"


@pytest.mark.parametrize(
    ("instance", "project", "enabled"),
    [
        ({}, {}, False),
        ({"enable-guest-attributes": "FALSE"}, {"enable-guest-attributes": "TRUE"}, False),
        ({}, {"enable-guest-attributes": "true"}, True),
        ({"enable-guest-attributes": "True"}, {}, True),
    ],
)
def test_guest_attributes_are_refused_unless_enabled(
    instance: dict[str, str], project: dict[str, str], enabled: bool
) -> None:
    twin = TwinInstance(name="vm", instance_id=1, attributes=instance, project_attributes=project)
    with MetadataServer(twin) as server:
        path = V1 + "instance/guest-attributes/hostkeys/ssh-ed25519"
        assert call(server, path, method="PUT", data=b"AAAA").status == (200 if enabled else 403)
        assert call(server, path).status == (200 if enabled else 403)
        assert server.guest_attributes == ({"hostkeys": {"ssh-ed25519": "AAAA"}} if enabled else {})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("hostkeys", b"AAAA"),  # no key
        ("hostkeys/ssh-ed25519/more", b"AAAA"),
        ("hostkeys/ssh%20ed25519", b"AAAA"),
        ("hostkeys/" + "k" * 65, b"AAAA"),
        ("hostkeys/ssh-ed25519", b"A" * (MAX_GUEST_VALUE_BYTES + 1)),
        ("hostkeys/ssh-ed25519", b"\xff\xfe"),
    ],
)
def test_bad_guest_attributes_are_refused(server: MetadataServer, path: str, body: bytes) -> None:
    reply = call(server, V1 + "instance/guest-attributes/" + path, method="PUT", data=body)
    assert reply.status == 400
    assert server.guest_attributes == {}


def test_a_put_without_a_content_length_is_refused(server: MetadataServer) -> None:
    answer = raw(
        server,
        b"PUT /computeMetadata/v1/instance/guest-attributes/hostkeys/ssh-ed25519 HTTP/1.1\r\n"
        b"Metadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nAAAA\r\n0\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.0 400 ")
    assert server.guest_attributes == {}


def twin_instance(server: MetadataServer) -> GceInstance:
    return GceInstance(server.twin.project_id, server.twin.zone, server.twin.name)


def test_the_host_reads_the_twins_host_keys_with_course_vms_compute_api_client(server: MetadataServer) -> None:
    for key_type, value in [("ssh-ed25519", ED25519), ("ecdsa-sha2-nistp256", ECDSA)]:
        call(server, f"{V1}instance/guest-attributes/hostkeys/{key_type}", method="PUT", data=value.encode())
    call(server, V1 + "instance/guest-attributes/guest-agent/sshable", method="PUT", data=b"")
    keys = gce_host_keys(
        twin_instance(server), time.monotonic() + 10, api=server.compute_api, token=lambda: server.token
    )
    assert [str(k) for k in keys] == [f"ssh-ed25519 {ED25519}", f"ecdsa-sha2-nistp256 {ECDSA}"]


def test_before_the_guest_publishes_the_client_falls_back_to_the_console(tmp_path: Path) -> None:
    console = tmp_path / "console.log"
    console.write_text(f"[ 12.3] booting\n{CONSOLE_BEGIN}\nssh-ed25519 {ED25519} root@twin\n{CONSOLE_END}\n")
    with MetadataServer(TWIN, console_log=console) as server:
        path = f"/compute/v1/projects/twin-proj/zones/local-twin1-a/instances/{TWIN.name}/getGuestAttributes"
        reply = call(server, path + "?queryPath=hostkeys/", headers={"Authorization": f"Bearer {server.token}"})
        assert reply.status == 404
        error = reply.json()
        assert (
            isinstance(error, dict) and error["error"]["code"] == 404 and "was not found" in error["error"]["message"]
        )
        keys = gce_host_keys(
            twin_instance(server), time.monotonic() + 10, api=server.compute_api, token=lambda: server.token
        )
    assert [str(k) for k in keys] == [f"ssh-ed25519 {ED25519}"]


def test_the_compute_api_view_needs_the_servers_token(server: MetadataServer) -> None:
    with pytest.raises(CourseVmError, match=r"refused GET .* \(401: Request had invalid authentication"):
        gce_host_keys(twin_instance(server), time.monotonic() + 10, api=server.compute_api, token=lambda: "guess")
    instance = f"/compute/v1/projects/twin-proj/zones/local-twin1-a/instances/{TWIN.name}"
    for headers in [{}, FLAVOR, {"Authorization": "Bearer guess"}, {"Authorization": "Bearer é"}]:
        reply = call(server, instance, headers=headers)
        assert reply.status == 401
        assert reply.headers["Content-Type"].startswith("application/json")


def test_the_compute_api_view_of_the_instance_and_its_console(server: MetadataServer) -> None:
    auth = {"Authorization": f"Bearer {server.token}"}
    instance = f"/compute/v1/projects/twin-proj/zones/local-twin1-a/instances/{TWIN.name}"
    zone = "https://www.googleapis.com/compute/v1/projects/twin-proj/zones/local-twin1-a"
    assert call(server, instance, headers=auth).json() == {
        "kind": "compute#instance",
        "id": "4520031799277581759",
        "name": TWIN.name,
        "status": "RUNNING",
        "zone": zone,
        "machineType": f"{zone}/machineTypes/e2-standard-4",
        "networkInterfaces": [
            {
                "kind": "compute#networkInterface",
                "name": "nic0",
                "network": "https://www.googleapis.com/compute/v1/projects/twin-proj/global/networks/default",
                "networkIP": "10.128.0.2",
            }
        ],
        "selfLink": f"{zone}/instances/{TWIN.name}",
    }
    assert call(server, instance + "/serialPort?port=1", headers=auth).json() == {
        "kind": "compute#serialPortOutput",
        "contents": "",
        "start": "0",
        "next": "0",
    }


@pytest.mark.parametrize(
    "path",
    [
        "projects/other-proj/zones/local-twin1-a/instances/course-vm-alice",
        "projects/twin-proj/zones/us-central1-a/instances/course-vm-alice",
        "projects/twin-proj/zones/local-twin1-a/instances/course-vm-bob",
        "projects/twin-proj/zones/local-twin1-a/instances/course-vm-alice/setMetadata",
        "projects/twin-proj/zones/local-twin1-a/instances",
    ],
)
def test_the_compute_api_view_knows_only_the_twin(server: MetadataServer, path: str) -> None:
    reply = call(server, "/compute/v1/" + path, headers={"Authorization": f"Bearer {server.token}"})
    assert reply.status == 404
    error = reply.json()
    assert isinstance(error, dict) and error["error"]["code"] == 404


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET /computeMetadata/v1/ HTTP/1.1\r\nMetadata-Flavor: Google\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"GET /computeMetadata/v1/?%zz=%ff&&recursive HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
        b"PUT /computeMetadata/v1/instance/guest-attributes/a/b HTTP/1.1\r\n"
        b"Metadata-Flavor: Google\r\nContent-Length: many\r\n\r\n",
        b"PUT /computeMetadata/v1/instance/guest-attributes/a/b HTTP/1.1\r\n"
        b"Metadata-Flavor: Google\r\nContent-Length: 10\r\n\r\nshort",
        b"BREW /computeMetadata/v1/ HTTP/1.1\r\n\r\n",
        b"GET /computeMetadata/v1/instance/network-interfaces/\xb2/mac HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
        b"GET http://169.254.169.254/computeMetadata/v1/ HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n",
    ],
)
def test_a_malformed_request_gets_an_error_and_no_traceback(
    request_bytes: bytes, capfd: pytest.CaptureFixture[str]
) -> None:
    lines: list[str] = []
    with MetadataServer(TWIN, log=lines.append) as server:
        answer = raw(server, request_bytes)
        assert call(server, V1 + "instance/id").text == str(TWIN.instance_id)  # still serving
    assert answer.split(b" ", 2)[1][:1] in (b"2", b"4", b"5"), answer
    assert b"\r\nMetadata-Flavor: Google\r\n" in answer
    assert not any("Traceback" in line for line in lines), lines
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")


def test_one_request_per_connection(server: MetadataServer) -> None:
    # HTTP/1.0 semantics: the server closes after each answer, so an idle client holds no worker.
    two = b"GET /computeMetadata/v1/instance/id HTTP/1.1\r\nMetadata-Flavor: Google\r\nConnection: keep-alive\r\n\r\n"
    answer = raw(server, two * 2)
    assert answer.startswith(b"HTTP/1.0 200 ") and answer.count(b"HTTP/1.0") == 1


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_close_answers_held_requests_and_leaves_no_thread_or_socket() -> None:
    threads, fds = set(threading.enumerate()), open_fds()
    server = MetadataServer(TWIN)
    etag = call(server, V1 + "?recursive=true").headers["ETag"]
    port = int(server.url.rsplit(":", 1)[1])
    idle = socket.create_connection(("127.0.0.1", port))  # connected, never sends a request
    with ThreadPoolExecutor(1) as pool:
        watch = pool.submit(call, server, f"{V1}?recursive=true&wait_for_change=true&last_etag={etag}")
        time.sleep(0.5)
        started = time.monotonic()
        server.close()
        assert watch.result(timeout=10).headers["ETag"] == etag
        assert time.monotonic() - started < 5
    idle.close()
    assert set(threading.enumerate()) == threads
    assert open_fds() == fds
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    server.close()  # a second close does nothing


def test_a_fixed_pool_of_workers_holds_at_most_max_held_requests_and_answers_the_rest() -> None:
    threads = threading.active_count()
    with MetadataServer(TWIN) as server:
        etag = call(server, V1 + "?recursive=true").headers["ETag"]
        request = (
            f"GET {V1}?recursive=true&wait_for_change=true&last_etag={etag} HTTP/1.1\r\nMetadata-Flavor: Google\r\n\r\n"
        ).encode()
        port = int(server.url.rsplit(":", 1)[1])
        connections = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(WORKERS + 4)]
        for connection in connections:
            connection.sendall(request)
        time.sleep(0.5)
        assert threading.active_count() <= threads + 1 + WORKERS * 2  # the accepting thread, the pool, its timers
        # Held requests leave workers free: a plain request is answered at once.
        assert call(server, V1 + "instance/id").status == 200
        server.set_attributes({**TWIN.attributes, "startup-script": "echo changed"})
        answers = []
        for connection in connections:
            with connection:
                answer = b""
                while chunk := connection.recv(65536):
                    answer += chunk
                answers.append(answer)
        # The held ones wake with the change; those past MAX_HELD were told to try again at once.
        changed = [a for a in answers if a.startswith(b"HTTP/1.0 200 ") and b"echo changed" in a]
        again = [a for a in answers if a.startswith(b"HTTP/1.0 503 ")]
        assert (len(changed), len(again)) == (MAX_HELD, WORKERS + 4 - MAX_HELD), answers


def test_a_twin_refuses_what_gce_clients_could_not_read() -> None:
    with pytest.raises(ValueError, match="zone 'local' is not a GCE zone name"):
        TwinInstance(name="vm", instance_id=1, zone="local")
    with pytest.raises(ValueError, match="the values of 'x' are not strings"):
        TwinInstance(name="vm", instance_id=1, attributes={"x": 1})  # type: ignore[dict-item]


def test_random_instance_ids_are_19_digits_like_gces() -> None:
    ids = {random_instance_id() for _ in range(100)}
    assert len(ids) == 100 and all(len(str(i)) == 19 and i < 2**63 for i in ids)


# cloud-init's own GCE datasource (Debian's cloud-init package), run with the Python it runs with.
# read_md is what DataSourceGCE._get_data calls; the module's own `__main__` cannot be used here,
# as in 22.4 it passes no url_params and fails before its first request.
CLOUD_INIT_CLIENT = """
import json, sys
from cloudinit.sources import URLParams
from cloudinit.sources import DataSourceGCE as gce

endpoint, guest_attributes = sys.argv[1], sys.argv[2]
result = gce.read_md(address=endpoint, url_params=URLParams(10, 10, 0, 0), platform_check=False)
meta = result["meta-data"] or {}
gce.GUEST_ATTRIBUTES_URL = guest_attributes  # its hostname is hard-coded: metadata.google.internal
gce._write_host_key_to_guest_attributes("ssh-ed25519", sys.argv[3])
print(json.dumps({
    "success": result["success"],
    "reason": result["reason"],
    "instance-id": meta.get("instance-id"),
    "availability-zone": meta.get("availability-zone"),
    "local-hostname": meta.get("local-hostname"),
    "user-data": (result["user-data"] or b"").decode(),
    "public-keys": gce._parse_public_keys(meta.get("public-keys-data"), "student"),
}))
"""


def cloud_init_python() -> str:
    """The interpreter of Debian's `cloud-init` (skipped locally, failed in CI, when it is missing)."""
    tool = Path(require_tool("cloud-init"))
    shebang = tool.read_text().splitlines()[0]
    return shebang.removeprefix("#!").split()[0]


@pytest.mark.integration
def test_cloud_inits_gce_datasource_reads_the_twin(server: MetadataServer) -> None:
    result = subprocess.run(
        [
            cloud_init_python(),
            "-c",
            CLOUD_INIT_CLIENT,
            server.url + V1,
            server.url + V1 + "instance/guest-attributes",
            ED25519,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "success": True,
        "reason": None,
        "instance-id": "4520031799277581759",
        "availability-zone": "local-twin1-a",
        "local-hostname": "course-vm-alice.c.twin-proj.internal",
        "user-data": USER_DATA,
        "public-keys": [f"{SSH_KEY} student"],
    }
    # cc_ssh's publishing of host keys, through cloud-init's own PUT.
    assert server.guest_attributes == {"hostkeys": {"ssh-ed25519": ED25519}}


def test_the_server_listens_on_loopback_alone(server: MetadataServer) -> None:
    # Bound to 0.0.0.0 it would hand the VM's user-data, and take its host keys, from the whole network.
    host, port = server._http.server_address[:2]
    assert host == "127.0.0.1"
    outward = _outward_address()
    if outward is not None:  # a machine with no route at all has no other address to try
        with socket.socket() as probe:
            probe.settimeout(2)
            assert probe.connect_ex((outward, port)) != 0, f"the server answers on {outward}"


def _outward_address() -> str | None:
    """This machine's address towards the network (a UDP socket's own end once connected; nothing is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(("192.0.2.1", 9))  # TEST-NET-1: only the route is looked up
        except OSError:
            return None
        return str(udp.getsockname()[0])


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({**FLAVOR, "X-Forwarded-For": "203.0.113.9"}, 403),
        ({**FLAVOR, "Host": "evil.example"}, 403),
        ({**FLAVOR, "Host": "127.0.0.1:1"}, 403),
        ({**FLAVOR, "Host": "metadata.google.internal"}, 200),
        ({**FLAVOR, "Host": "169.254.169.254:80"}, 200),
    ],
)
def test_a_forwarded_request_or_a_foreign_host_is_refused_as_gce_does(
    server: MetadataServer, headers: dict[str, str], status: int
) -> None:
    # A page in a browser whose name was made to resolve to 127.0.0.1 (DNS rebinding) sends its own Host.
    assert call(server, V1 + "instance/id", headers=headers).status == status


def test_a_request_sent_a_byte_at_a_time_is_cut_off_at_the_whole_requests_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The whole request comes in about 2.5 s, each byte long before a read would time out: only a
    # deadline for the whole request (here 1 s) refuses it; without one it would be answered.
    monkeypatch.setattr("provisioner.local.metadata_http.READ_SECONDS", 1.0)
    with MetadataServer(TWIN) as server:
        port = int(server.url.rsplit(":", 1)[1])
        request = f"GET {V1}instance/id HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            for byte in request:
                try:
                    slow.sendall(bytes([byte]))
                except OSError:
                    break  # the server has hung up
                time.sleep(2.5 / len(request))
            slow.settimeout(5)
            try:
                answer = slow.recv(65536)
            except OSError:
                answer = b""
        assert answer == b"", "a request spread over more than READ_SECONDS was answered"


def test_the_guest_can_publish_only_so_many_attributes_and_bytes(server: MetadataServer) -> None:
    put = "instance/guest-attributes/flood/"
    for n in range(MAX_GUEST_ATTRIBUTES):
        assert call(server, f"{V1}{put}k{n}", method="PUT", data=b"x").status == 200
    assert call(server, f"{V1}{put}one-more", method="PUT", data=b"x").status == 400
    assert call(server, f"{V1}{put}k0", method="PUT", data=b"y").status == 200, "replacing one is no new one"
    with MetadataServer(TWIN) as empty:
        big = b"x" * (256 * 1024)
        for n in range(MAX_GUEST_BYTES // len(big)):
            assert call(empty, f"{V1}{put}big{n}", method="PUT", data=big).status == 200
        full = call(empty, f"{V1}{put}past", method="PUT", data=b"x")
        assert (full.status, full.text) == (
            400,
            f"guest attributes are full: at most 64, of {MAX_GUEST_BYTES} bytes in all\n",
        )


def test_connections_past_max_open_are_closed_at_once(server: MetadataServer) -> None:
    # Each open connection holds a file descriptor while it waits for a worker: their number is bounded.
    port = int(server.url.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(MAX_OPEN)]
    try:
        time.sleep(0.3)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as one_more:
            assert one_more.recv(1) == b"", "the connection past MAX_OPEN was kept"
    finally:
        for connection in idle:
            connection.close()
    assert call(server, V1 + "instance/id").status == 200


def test_with_a_guest_socket_only_the_guest_publishes_and_reads_and_only_the_host_sees_the_view(
    tmp_path: Path,
) -> None:
    # Any local user, and any local VM's guest (through 169.254.2.2), reaches the loopback port.
    with MetadataServer(TWIN, guest_socket=tmp_path / "metadata.sock") as server:
        put = f"{V1}instance/guest-attributes/hostkeys/ssh-ed25519"
        assert call(server, put, method="PUT", data=b"ssh-ed25519 AAAA planted").status == 403
        assert call(server, V1 + "instance/attributes/?recursive=true").status == 403
        request = f"PUT {put} HTTP/1.0\r\nMetadata-Flavor: Google\r\nContent-Length: 4\r\n\r\nAAAA".encode()
        with socket.socket(socket.AF_UNIX) as guest:
            guest.connect(str(tmp_path / "metadata.sock"))
            guest.sendall(request)
            assert guest.recv(65536).startswith(b"HTTP/1.0 200 ")
        assert server.guest_attributes == {"hostkeys": {"ssh-ed25519": "AAAA"}}
        view = f"/compute/v1/projects/{TWIN.project_id}/zones/{TWIN.zone}/instances/{TWIN.name}"
        assert guest_get(tmp_path / "metadata.sock", view)[0] == 404, "the token's view is the host's alone"
        assert call(server, view, headers={"Authorization": f"Bearer {server.token}"}).status == 200
    assert not (tmp_path / "metadata.sock").exists(), "closing removes the socket"
