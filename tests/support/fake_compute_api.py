"""A local fake of the Compute API endpoints course-vm calls (compute.googleapis.com is
unreachable here): `instances.getGuestAttributes` and `instances.getSerialPortOutput`, with the
API's response shapes, including the 404 the API gives until the guest publishes `hostkeys/` and
keys replaced once read, as GCE's guest agent replaces cloud-init's on first boot;
and `instances.start` and `instances.get`, a started instance going STAGING, then RUNNING;
`projects.get` and `regions.get` with their `quotas[]`, `machineTypes.get` with its `guestCpus`,
and the 403 SERVICE_DISABLED the API gives every call while it is not enabled in the project;
`instances.stop`, a stopped one going STOPPING, then TERMINATED. Besides INSTANCE, other instances of
its zone (`statuses`), and instances whose every call fails with an HTTP status (`failing`).
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from provisioner.gcp.compute_api import GceInstance


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


def _not_found(what: str) -> tuple[int, dict[str, object]]:
    return 404, {
        "error": {
            "code": 404,
            "message": f"The resource '{what}' was not found",
            "errors": [{"reason": "notFound", "message": f"The resource '{what}' was not found"}],
        }
    }


@contextmanager
def fake_compute_api() -> Iterator[FakeComputeApi]:
    fake = FakeComputeApi()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.do_GET(method="POST")

        def do_GET(self, method: str = "GET") -> None:
            path, _, query = self.path.partition("?")
            params = urllib.parse.parse_qs(query)
            fake.requests.append(path if method == "GET" else f"{method} {path}")
            body: dict[str, object]
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                code, body = 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials."}}
            elif not fake.api_enabled:
                code, body = service_disabled()
            elif fake.status != 200:
                code, body = (
                    fake.status,
                    {
                        "error": {
                            "code": fake.status,
                            "message": "Required 'compute.instances.getGuestAttributes' permission",
                        }
                    },
                )
            elif method == "GET" and path == PROJECT_PATH:
                body = {"kind": "compute#project", "name": "course-project-1", "quotas": fake.project_quotas}
                code = 200
            elif method == "GET" and path == REGION_PATH:
                code, body = 200, {"kind": "compute#region", "name": "europe-west1", "quotas": fake.region_quotas}
            elif method == "GET" and path.startswith(MACHINE_TYPES_PATH):
                name = path[len(MACHINE_TYPES_PATH) :]
                if name in fake.guest_cpus:
                    code, body = 200, {"kind": "compute#machineType", "name": name, "guestCpus": fake.guest_cpus[name]}
                else:
                    code, body = _not_found(f"projects/course-project-1/zones/europe-west1-b/machineTypes/{name}")
            elif not fake.instance_exists:
                code, body = _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{INSTANCE.name}")
            elif path.startswith(ZONE_PATH) and path[len(ZONE_PATH) :].split("/")[0] in fake.failing:
                code = fake.failing[path[len(ZONE_PATH) :].split("/")[0]]
                body = {"error": {"code": code, "message": "Invalid value for field 'resource'" if code == 400
                                  else "The service is currently unavailable."}}  # fmt: skip
            elif method == "POST" and path.startswith(ZONE_PATH) and path.rsplit("/", 1)[-1] in ("start", "stop"):
                name, verb = path[len(ZONE_PATH) :].split("/")
                status = fake.status_of(name)
                if status is None:
                    code, body = _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{name}")
                else:
                    if verb == "start" and status in ("TERMINATED", "STOPPED"):
                        fake.set_status(name, "STAGING")
                    elif verb == "stop" and status in ("RUNNING", "STAGING", "PROVISIONING"):
                        fake.set_status(name, "STOPPING")
                    code, body = 200, {"kind": "compute#operation", "operationType": verb, "status": "RUNNING"}
            elif method == "POST":
                code, body = _not_found(path)
            elif path.startswith(ZONE_PATH) and "/" not in path[len(ZONE_PATH) :]:
                name = path[len(ZONE_PATH) :]
                status = fake.status_of(name)
                if status is None:
                    code, body = _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{name}")
                else:
                    code, body = 200, {"kind": "compute#instance", "name": name, "status": status}
                    after = {**STARTING, **STOPPING}.get(status)
                    if after:
                        fake.set_status(name, after)  # the next read finds it there
            elif path == BASE + "/getGuestAttributes" and params.get("queryPath") == ["hostkeys/"]:
                guest_calls = sum(r.endswith("/getGuestAttributes") for r in fake.requests)
                if guest_calls <= fake.guest_attributes_after or not fake.guest_attributes:
                    code, body = _not_found(f"{INSTANCE.name}/guestAttributes/hostkeys/")
                else:
                    code, body = (
                        200,
                        {
                            "kind": "compute#guestAttributes",
                            "queryPath": "hostkeys/",
                            "queryValue": {"items": fake.guest_attributes},
                        },
                    )
                    if fake.then_guest_attributes is not None:
                        fake.guest_attributes, fake.then_guest_attributes = fake.then_guest_attributes, None
            elif path == BASE + "/serialPort" and params.get("port") == ["1"]:
                code, body = (
                    200,
                    {
                        "kind": "compute#serialPortOutput",
                        "contents": fake.console,
                        "start": "0",
                        "next": str(len(fake.console)),
                    },
                )
            else:
                code, body = _not_found(path)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/compute/v1"
    try:
        yield fake
    finally:
        server.shutdown()
        server.server_close()
