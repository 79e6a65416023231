"""A local fake of the Compute API (compute.googleapis.com is unreachable here), standing in for Google's
endpoints course-vm calls, with the API's documents and error bodies as the real one gives them:
`instances.get` (an Instance with its id, selfLink, zone and machine type URLs, and nic0), `instances.start`
and `.stop` (an Operation: name, id, zone, targetLink, status RUNNING until `zoneOperations.get` or `.wait`
reads it DONE, with `error.errors[]` when it failed), `instances.getGuestAttributes` (`hostkeys/`, a 404
until the guest publishes them, keys replaced once read as GCE's guest agent replaces cloud-init's on first
boot) and `.getSerialPortOutput` (port 1); `projects.get` and `regions.get` with their `quotas[]`,
`machineTypes.get` with its `guestCpus`, and the 403 SERVICE_DISABLED every call gets while the API is not
enabled. Besides INSTANCE, other instances of its zone (`statuses`), and instances whose every call fails
with an HTTP status (`failing`). A started instance goes STAGING, then RUNNING; a stopped one STOPPING,
then TERMINATED, one `instances.get` (or the operation's end) at a time.

course-vm's client was written beside this fake, so agreeing with it proves little: tests/gcp/test_gcloud_reads.py
holds it to Google's own client, the real gcloud, which reads every one of these answers.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from provisioner.gcp.compute_api import GceInstance
from tests.support.serving import serving


def _public_blob(key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
        .split()[1]
    )


ED25519 = _public_blob(ed25519.Ed25519PrivateKey.generate())
ECDSA = _public_blob(ec.generate_private_key(ec.SECP256R1()))
INSTANCE = GceInstance("course-project-1", "europe-west1-b", "course-vm-vm-1a2b")
ZONE_PATH = "/compute/v1/projects/course-project-1/zones/europe-west1-b/instances/"
BASE = ZONE_PATH + INSTANCE.name
# What a started or stopped instance goes through, one `instances.get` at a time, and where it ends.
STARTING = {"STAGING": "RUNNING"}
STOPPING = {"STOPPING": "TERMINATED"}


PROJECT_PATH = "/compute/v1/projects/course-project-1"
REGION_PATH = PROJECT_PATH + "/regions/europe-west1"
MACHINE_TYPES_PATH = PROJECT_PATH + "/zones/europe-west1-b/machineTypes/"


def quota(metric: str, limit: float, usage: float = 0.0) -> dict[str, object]:
    """One entry of `quotas[]` as projects.get and regions.get return it."""
    return {"metric": metric, "limit": limit, "usage": usage}


def roomy_project_quotas() -> list[dict[str, object]]:
    return [quota("CPUS_ALL_REGIONS", 32), quota("FIREWALLS", 200, 4), quota("NETWORKS", 15, 1)]


def roomy_region_quotas() -> list[dict[str, object]]:
    return [
        quota("CPUS", 24),
        quota("N2_CPUS", 24),
        quota("E2_CPUS", 24),  # listed by GCE, but E2 VMs count against CPUS
        quota("PREEMPTIBLE_CPUS", 0),
        quota("IN_USE_ADDRESSES", 8),
        quota("STATIC_ADDRESSES", 8),
        quota("SSD_TOTAL_GB", 500),
        quota("DISKS_TOTAL_GB", 4096),
        quota("INSTANCES", 24),
    ]


GUEST_CPUS = {"e2-micro": 2, "e2-small": 2, "e2-medium": 2, "e2-standard-2": 2, "e2-standard-4": 4,
              "n2-standard-4": 4, "c3-standard-8": 8}  # fmt: skip


def service_disabled(project_number: str = "123456789012") -> tuple[int, dict[str, object]]:
    """The 403 Google's APIs answer while the Compute API is not enabled in the project."""
    message = (
        f"Compute Engine API has not been used in project {project_number} before or it is disabled. Enable it by "
        f"visiting https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project="
        f"{project_number} then retry. If you enabled this API recently, wait a few minutes for the action to "
        "propagate to our systems and retry."
    )
    return 403, {
        "error": {
            "code": 403,
            "message": message,
            "errors": [{"message": message, "domain": "usageLimits", "reason": "accessNotConfigured",
                        "extendedHelp": "https://console.developers.google.com"}],
            "status": "PERMISSION_DENIED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED",
                 "domain": "googleapis.com",
                 "metadata": {"service": "compute.googleapis.com", "consumer": f"projects/{project_number}"}},
                {"@type": "type.googleapis.com/google.rpc.Help",
                 "links": [{"description": "Google developers console API activation",
                            "url": "https://console.developers.google.com/apis/api/compute.googleapis.com/overview"}]},
            ],
        }
    }  # fmt: skip


TOKEN = "test-token"  # noqa: S105 (the only credential the fake accepts)
GOOGLE_API = "https://www.googleapis.com/compute/v1/"
"""Where the real API's selfLinks point, whatever endpoint was called (an override included)."""
OPERATIONS_PATH = PROJECT_PATH + "/zones/europe-west1-b/operations/"
ZONE_URL = GOOGLE_API + "projects/course-project-1/zones/europe-west1-b"
NETWORK_IP = "10.42.0.2"


def zone_exhausted() -> dict[str, Any]:
    """The `error` a start operation ends with when the zone has no room for the machine type (GCE's
    ZONE_RESOURCE_POOL_EXHAUSTED): the instance stays TERMINATED."""
    return {
        "errors": [{
            "code": "ZONE_RESOURCE_POOL_EXHAUSTED",
            "message": "The zone 'projects/course-project-1/zones/europe-west1-b' does not have enough resources "
            "available to fulfill the request.  Try a different zone, or try again later.",
        }]
    }  # fmt: skip


def quota_exceeded() -> dict[str, Any]:
    """The `error` a start operation ends with when the region's CPU quota is used up (QUOTA_EXCEEDED)."""
    return {
        "errors": [{
            "code": "QUOTA_EXCEEDED",
            "message": "Quota 'CPUS' exceeded.  Limit: 24.0 in region europe-west1.",
            "errorDetails": [{"quotaInfo": {"metricName": "compute.googleapis.com/cpus",
                                            "limitName": "CPUS-per-project-region",
                                            "dimensions": {"region": "europe-west1"}, "limit": 24}}],
        }]
    }  # fmt: skip


def instance_id(name: str) -> str:
    """A 19-digit id, fixed per NAME (the API gives uint64 values as JSON strings)."""
    return str(10**18 + int.from_bytes(name.encode()[:7].ljust(7, b"\0"), "big"))


def instance_document(name: str, status: str) -> dict[str, object]:
    """An Instance as instances.get returns it, with what gcloud reads: `networkInterfaces[0]` named nic0 with
    its networkIP (start prints it; start-iap-tunnel takes nic0), and the zone and machine type as URLs."""
    return {
        "kind": "compute#instance",
        "id": instance_id(name),
        "creationTimestamp": "2025-09-01T08:00:00.000-07:00",
        "name": name,
        "machineType": f"{ZONE_URL}/machineTypes/e2-standard-2",
        "status": status,
        "zone": ZONE_URL,
        "networkInterfaces": [{
            "kind": "compute#networkInterface",
            "name": "nic0",
            "network": GOOGLE_API + "projects/course-project-1/global/networks/course-vm-net",
            "subnetwork": GOOGLE_API + "projects/course-project-1/regions/europe-west1/subnetworks/course-vm-subnet",
            "networkIP": NETWORK_IP,
            "stackType": "IPV4_ONLY",
            "fingerprint": "c2b0WjEzPRU=",
        }],
        "selfLink": f"{ZONE_URL}/instances/{name}",
    }  # fmt: skip


def api_error(code: int, message: str, reason: str, status: str) -> tuple[int, dict[str, object]]:
    """An error answer as the Compute API words it: `error.message`, `error.errors[]` with a reason."""
    return code, {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status,
        }
    }


def _not_found(what: str) -> tuple[int, dict[str, object]]:
    return api_error(404, f"The resource '{what}' was not found", "notFound", "NOT_FOUND")


@dataclass
class FakeComputeApi:
    """What the fake answers; `requests` records each path it was asked for."""

    guest_attributes_after: int = 0  # 404 for this many calls first
    guest_attributes: list[dict[str, str]] = field(default_factory=list)
    then_guest_attributes: list[dict[str, str]] | None = None
    """Published in place of guest_attributes once they have been read: the guest agent's new keys."""
    console: str = ""
    instance_exists: bool = True
    status: int = 200
    instance_status: str = "TERMINATED"
    requests: list[str] = field(default_factory=list)
    url: str = ""
    project_quotas: list[dict[str, object]] = field(default_factory=roomy_project_quotas)
    region_quotas: list[dict[str, object]] = field(default_factory=roomy_region_quotas)
    guest_cpus: dict[str, int] = field(default_factory=lambda: dict(GUEST_CPUS))
    api_enabled: bool = True
    """False: every call gets the 403 SERVICE_DISABLED (see `service_disabled`)."""
    statuses: dict[str, str] = field(default_factory=dict)
    """Other instances of INSTANCE's project and zone, by name: their status (INSTANCE's is instance_status)."""
    failing: dict[str, int] = field(default_factory=dict)
    """Instances, by name, whose every call fails with this HTTP status (400, 429, 500, 503...)."""
    operation_error: dict[str, Any] | None = None
    """The `error` every start or stop operation ends DONE with (`zone_exhausted()`, `quota_exceeded()`):
    the instance's status stays as it was, as GCE's does."""
    operation_reads: int = 200
    """403: reading an operation is refused, as for a custom role with instances.start and .stop but not
    compute.zoneOperations.get; 404: every operation is gone (GCE keeps them a while only)."""
    operations: dict[str, dict[str, object]] = field(default_factory=dict)
    """The operations start and stop made, by name, as zoneOperations.get would return them now."""

    def status_of(self, name: str) -> str | None:
        """The status of instance NAME; None when it does not exist."""
        if name == INSTANCE.name:
            return self.instance_status if self.instance_exists else None
        return self.statuses.get(name)

    def set_status(self, name: str, status: str) -> None:
        if name == INSTANCE.name:
            self.instance_status = status
        else:
            self.statuses[name] = status

    def gcloud_environment(self) -> dict[str, str]:
        """gcloud's variables that point course-vm (and gcloud itself) at this fake, with its token: the
        override is the API's base URL with the trailing '/' gcloud requires."""
        return {"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": self.url + "/", "CLOUDSDK_AUTH_ACCESS_TOKEN": TOKEN}

    def power(self, name: str, verb: str) -> tuple[int, dict[str, object]]:
        """instances.start or .stop of NAME: its status moves on (unless `operation_error`), and the answer is
        the Operation GCE returns, RUNNING until zoneOperations.get or .wait reads it DONE."""
        status = self.status_of(name)
        if status is None:
            return _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{name}")
        if self.operation_error is None:
            if verb == "start" and status in ("TERMINATED", "STOPPED"):
                self.set_status(name, "STAGING")
            elif verb == "stop" and status in ("RUNNING", "STAGING", "PROVISIONING"):
                self.set_status(name, "STOPPING")
        number = len(self.operations) + 1
        operation_name = f"operation-17250000000{number:02d}-6150f5e1a2b3c-3f0e2a1b-8c7d6e{number:02d}"
        self.operations[operation_name] = {
            "kind": "compute#operation",
            "id": str(7 * 10**18 + number),
            "name": operation_name,
            "zone": ZONE_URL,
            "operationType": verb,
            "targetLink": f"{ZONE_URL}/instances/{name}",
            "targetId": instance_id(name),
            "status": "RUNNING",
            "user": "student@example.org",
            "progress": 0,
            "insertTime": "2025-09-01T08:00:00.000-07:00",
            "startTime": "2025-09-01T08:00:00.100-07:00",
            "selfLink": f"{ZONE_URL}/operations/{operation_name}",
        }
        return 200, dict(self.operations[operation_name])

    def operation(self, name: str, wait: bool) -> tuple[int, dict[str, object]]:
        """zoneOperations.get (or, WAIT, .wait) of operation NAME. It ends DONE with `operation_error` at once;
        else when its instance got where it was going, which .wait (blocking until then, as GCE's does) brings
        about and .get only reports, so that the instance's own reads go STAGING, then RUNNING."""
        found = self.operations.get(name)
        if found is None:
            return _not_found(f"projects/course-project-1/zones/europe-west1-b/operations/{name}")
        target = str(found["targetLink"]).rsplit("/", 1)[-1]
        if found["status"] != "DONE" and self.operation_error is not None:
            found.update(error=self.operation_error, httpErrorStatusCode=503, httpErrorMessage="SERVICE UNAVAILABLE")
        elif found["status"] != "DONE" and self.status_of(target) in ("STAGING", "STOPPING"):
            if not wait:
                return 200, dict(found, progress=50)
            self.set_status(target, "RUNNING" if found["operationType"] == "start" else "TERMINATED")
        found.update(status="DONE", progress=100, endTime="2025-09-01T08:00:20.000-07:00")
        return 200, dict(found)

    def answer(self, method: str, path: str, params: dict[str, list[str]]) -> tuple[int, dict[str, object]]:
        """The status and JSON body the API gives METHOD PATH?PARAMS (the Authorization header checked)."""
        if not self.api_enabled:
            return service_disabled()
        if self.status != 200:
            message = "Required 'compute.instances.getGuestAttributes' permission for 'projects/course-project-1'"
            return api_error(self.status, message, "forbidden", "PERMISSION_DENIED")
        if method == "GET" and path == PROJECT_PATH:
            return 200, {"kind": "compute#project", "id": "123456789012", "name": "course-project-1",
                         "selfLink": GOOGLE_API + "projects/course-project-1",
                         "quotas": self.project_quotas}  # fmt: skip
        if method == "GET" and path == REGION_PATH:
            return 200, {"kind": "compute#region", "id": "1100", "name": "europe-west1", "status": "UP",
                         "selfLink": GOOGLE_API + "projects/course-project-1/regions/europe-west1",
                         "quotas": self.region_quotas}  # fmt: skip
        if method == "GET" and path.startswith(MACHINE_TYPES_PATH):
            name = path[len(MACHINE_TYPES_PATH) :]
            if name not in self.guest_cpus:
                return _not_found(f"projects/course-project-1/zones/europe-west1-b/machineTypes/{name}")
            return 200, {"kind": "compute#machineType", "id": "334002", "name": name,
                         "guestCpus": self.guest_cpus[name], "zone": "europe-west1-b",
                         "selfLink": f"{ZONE_URL}/machineTypes/{name}"}  # fmt: skip
        if path.startswith(OPERATIONS_PATH):
            name, _, wait = path[len(OPERATIONS_PATH) :].partition("/")
            where = f"projects/course-project-1/zones/europe-west1-b/operations/{name}"
            if self.operation_reads == 403:
                message = f"Required 'compute.zoneOperations.get' permission for '{where}'"
                return api_error(403, message, "forbidden", "PERMISSION_DENIED")
            if self.operation_reads == 404:
                return _not_found(where)
            if (method, wait) in (("GET", ""), ("POST", "wait")):
                return self.operation(name, wait == "wait")
            return _not_found(path)
        if not self.instance_exists:
            return _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{INSTANCE.name}")
        return self.instance_answer(method, path, params)

    def instance_answer(self, method: str, path: str, params: dict[str, list[str]]) -> tuple[int, dict[str, object]]:
        """instances.get, .start, .stop, .getGuestAttributes and .getSerialPortOutput."""
        name, _, verb = path[len(ZONE_PATH) :].partition("/") if path.startswith(ZONE_PATH) else ("", "", "")
        if name in self.failing:
            code = self.failing[name]
            message = "Invalid value for field 'resource'" if code == 400 else "The service is currently unavailable."
            return api_error(code, message, "invalid" if code == 400 else "backendError",
                             "INVALID_ARGUMENT" if code == 400 else "UNAVAILABLE")  # fmt: skip
        if method == "POST" and name and verb in ("start", "stop"):
            return self.power(name, verb)
        if method == "POST" or not name:
            return _not_found(path)
        if verb == "":
            status = self.status_of(name)
            if status is None:
                return _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{name}")
            after = {**STARTING, **STOPPING}.get(status)
            if after:
                self.set_status(name, after)  # the next read finds it there
            return 200, instance_document(name, status)
        if path == BASE + "/getGuestAttributes" and params.get("queryPath") == ["hostkeys/"]:
            return self.host_key_attributes()
        if path == BASE + "/serialPort" and params.get("port") == ["1"]:
            return 200, {"kind": "compute#serialPortOutput", "contents": self.console, "start": "0",
                         "next": str(len(self.console)),
                         "selfLink": f"{ZONE_URL}/instances/{name}/serialPort"}  # fmt: skip
        return _not_found(path)

    def host_key_attributes(self) -> tuple[int, dict[str, object]]:
        guest_calls = sum(r.endswith("/getGuestAttributes") for r in self.requests)
        if guest_calls <= self.guest_attributes_after or not self.guest_attributes:
            return _not_found(f"{INSTANCE.name}/guestAttributes/hostkeys/")
        answer: dict[str, object] = {
            "kind": "compute#guestAttributes",
            "queryPath": "hostkeys/",
            "queryValue": {"items": self.guest_attributes},
            "selfLink": f"{ZONE_URL}/instances/{INSTANCE.name}/getGuestAttributes?queryPath=hostkeys/",
        }
        if self.then_guest_attributes is not None:
            self.guest_attributes, self.then_guest_attributes = self.then_guest_attributes, None
        return 200, answer


@contextmanager
def fake_compute_api() -> Iterator[FakeComputeApi]:
    fake = FakeComputeApi()
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.do_GET(method="POST")

        def do_GET(self, method: str = "GET") -> None:
            path, _, query = self.path.partition("?")
            with lock:
                fake.requests.append(path if method == "GET" else f"{method} {path}")
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    code, body = api_error(
                        401, "Request had invalid authentication credentials.", "authError", "UNAUTHENTICATED"
                    )
                else:
                    code, body = fake.answer(method, path, urllib.parse.parse_qs(query))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json; charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as port:
        fake.url = f"http://127.0.0.1:{port}/compute/v1"
        yield fake
