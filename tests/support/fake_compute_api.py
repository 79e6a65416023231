"""A local fake of the Compute API endpoints course-vm calls (compute.googleapis.com is
unreachable here): `instances.getGuestAttributes` and `instances.getSerialPortOutput`, with the
API's response shapes, including the 404 the API gives until the guest publishes `hostkeys/` and
keys replaced once read, as GCE's guest agent replaces cloud-init's on first boot;
and `instances.start` and `instances.get`, a started instance going STAGING, then RUNNING.
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
BASE = "/compute/v1/projects/course-project-1/zones/europe-west1-b/instances/course-vm-vm-1a2b"


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

    def gcloud_environment(self) -> dict[str, str]:
        """gcloud's variables that point course-vm at this fake, with its token."""
        return {"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE": self.url, "CLOUDSDK_AUTH_ACCESS_TOKEN": TOKEN}


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
            elif not fake.instance_exists:
                code, body = _not_found(f"projects/course-project-1/zones/europe-west1-b/instances/{INSTANCE.name}")
            elif method == "POST" and path == BASE + "/start":
                if fake.instance_status != "RUNNING":
                    fake.instance_status = "STAGING"
                code, body = 200, {"kind": "compute#operation", "operationType": "start", "status": "RUNNING"}
            elif method == "POST":
                code, body = _not_found(path)
            elif path == BASE:
                code, body = 200, {"kind": "compute#instance", "name": INSTANCE.name, "status": fake.instance_status}
                if fake.instance_status == "STAGING":
                    fake.instance_status = "RUNNING"  # the next read finds it running
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
