"""A stand-in for GCE's metadata server, so that a local VM's cloud-init and guest agent act as on GCE."""

from __future__ import annotations

import errno
import hashlib
import hmac
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from provisioner.local.metadata_http import WORKERS, Answer, HttpServer, Log, Request

MAX_WAIT_SECONDS = 60
"""GCE's default and maximum `timeout_sec`; its clients give up after 70 s."""
MAX_GUEST_VALUE_BYTES = 256 * 1024
MAX_GUEST_ATTRIBUTES = 64
MAX_GUEST_BYTES = 1024 * 1024
"""What the guest may publish in all: the guest agent publishes a few host keys."""
MAX_HELD = WORKERS // 2
"""`wait_for_change` requests held at once; more are told to try again (503), so that the other
workers always answer at once."""
GUEST_HOSTS = frozenset({"metadata.google.internal", "metadata", "169.254.169.254"})
"""The names the guest reaches the metadata server by, as GCE's clients send them in Host."""
GUEST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""One namespace or key of a guest attribute (`hostkeys/ssh-ed25519`, `guest-agent/sshable`)."""
ZONE = re.compile(r"[a-z]+-[a-z]+[0-9]+-[a-z]")
"""A zone name as GCE spells them (`us-central1-a`): cloud-init takes the region as all but its last part."""

Json = Any
GOOGLE_API = "https://www.googleapis.com/compute/v1/"
"""Where the Compute API's selfLinks point, whatever endpoint was called."""


@dataclass(frozen=True)
class TwinInstance:
    """The GCE identity a local VM is shown: what its metadata server answers about it."""

    name: str
    instance_id: int
    project_id: str = "course-vm-twin"
    numeric_project_id: int = 123456789012
    zone: str = "local-twin1-a"
    machine_type: str = "e2-standard-2"
    mac: str = "42:01:0a:80:00:02"
    """The MAC address the VM's NIC must have: the guest agent looks its interface up by it."""
    ip: str = "10.128.0.2"
    attributes: Mapping[str, str] = field(default_factory=dict)
    project_attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not ZONE.fullmatch(self.zone):
            raise ValueError(f"zone {self.zone!r} is not a GCE zone name like us-central1-a")
        for where, values in (("attributes", self.attributes), ("project_attributes", self.project_attributes)):
            # The guest agent discards the whole document if any value is not a JSON string.
            bad = [key for key, value in values.items() if not isinstance(key, str) or not isinstance(value, str)]
            if bad:
                raise ValueError(f"{where}: the values of {', '.join(map(repr, bad))} are not strings")
            # A read-only copy: a change must go through MetadataServer.set_attributes, which wakes watchers.
            object.__setattr__(self, where, MappingProxyType(dict(values)))

    @property
    def hostname(self) -> str:
        return f"{self.name}.c.{self.project_id}.internal"

    def guest_attributes_enabled(self) -> bool:
        """GCE's rule: `enable-guest-attributes` of the instance, else of the project, is TRUE."""
        key = "enable-guest-attributes"
        return self.attributes.get(key, self.project_attributes.get(key, "")).lower() == "true"

    def document(self) -> dict[str, Json]:
        """The recursive root document (`/computeMetadata/v1/?recursive=true`), with GCE's JSON types:
        the guest agent decodes it into typed structs and discards it whole on one wrong type."""
        project = f"projects/{self.numeric_project_id}"
        interface = {
            "mac": self.mac,
            "ip": self.ip,
            "network": f"{project}/networks/default",
            "forwardedIps": [],
            "forwardedIpv6s": [],
            "targetInstanceIps": [],
            "ipAliases": [],
        }
        return {
            "instance": {
                "id": self.instance_id,
                "name": self.name,
                "hostname": self.hostname,
                "zone": f"{project}/zones/{self.zone}",
                "machineType": f"{project}/machineTypes/{self.machine_type}",
                "attributes": dict(self.attributes),
                "networkInterfaces": [interface],
            },
            "project": {
                "projectId": self.project_id,
                "numericProjectId": self.numeric_project_id,
                "attributes": dict(self.project_attributes),
            },
        }

    def compute_document(self) -> dict[str, Json]:
        """The instance as the Compute API's `instances.get` shows it, as gcloud reads it: `start-iap-tunnel`
        takes nic0's networkIP, and the zone and machine type are URLs (tests/gcp/test_gcloud_reads.py)."""
        zone = f"{GOOGLE_API}projects/{self.project_id}/zones/{self.zone}"
        network = f"{GOOGLE_API}projects/{self.project_id}/global/networks/default"
        interface = {"kind": "compute#networkInterface", "name": "nic0", "network": network, "networkIP": self.ip}
        return {
            "kind": "compute#instance",
            "id": str(self.instance_id),
            "name": self.name,
            "status": "RUNNING",
            "zone": zone,
            "machineType": f"{zone}/machineTypes/{self.machine_type}",
            "networkInterfaces": [interface],
            "selfLink": f"{zone}/instances/{self.name}",
        }


def random_instance_id() -> int:
    """A new 19-digit instance id, as GCE gives each VM: the guest agent's first-boot setup runs once per id."""
    return 10**18 + secrets.randbelow(8 * 10**18)


def _text(status: int, message: str) -> Answer:
    return Answer(status, (message + "\n").encode())


def _json(status: int, document: Json) -> Answer:
    return Answer(status, json.dumps(document).encode(), "application/json; charset=utf-8")


def _api_error(code: int, message: str, reason: str) -> Answer:
    """An error as the Compute API words it; course-vm's client reads `error.message`."""
    return _json(
        code, {"error": {"code": code, "message": message, "errors": [{"message": message, "reason": reason}]}}
    )


def _with_etag(answer: Answer) -> Answer:
    digest = hashlib.sha256(f"{answer.status}\n".encode() + answer.body).hexdigest()
    return answer._replace(etag=digest[:16])


def _camel_case(segment: str) -> str:
    return re.sub(r"-([a-z0-9])", lambda m: m.group(1).upper(), segment)


def _hyphenated(key: str) -> str:
    return re.sub(r"[A-Z]", lambda m: "-" + m.group(0).lower(), key)


def _lookup(node: Json, segments: list[str], literal: bool = False) -> tuple[Json, bool] | None:
    """The node at SEGMENTS (GCE's hyphenated path names) and whether its keys are literal, or None.

    Keys below `attributes` (and in guest attributes: LITERAL) are names the user chose, not GCE's.
    """
    for segment in segments:
        if isinstance(node, dict):
            key = segment if literal else _camel_case(segment)
            if key not in node or (not literal and segment != segment.lower()):
                return None
            node, literal = node[key], literal or key == "attributes"
        elif isinstance(node, list) and segment.isascii() and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return None
    return node, literal


def _render(node: Json, literal: bool, query: Mapping[str, str]) -> Answer:
    """A directory as JSON (recursive=true) or GCE's listing (children one a line, directories with a
    trailing /); a leaf as its text, or its JSON with alt=json."""
    if isinstance(node, dict | list):
        if query.get("recursive", "").lower() == "true":
            return _json(200, node)
        names = node.keys() if isinstance(node, dict) else map(str, range(len(node)))
        children = node.values() if isinstance(node, dict) else node
        lines = [
            (name if literal or not isinstance(node, dict) else _hyphenated(name))
            + ("/" if isinstance(child, dict | list) else "")
            for name, child in zip(names, children, strict=True)
        ]
        return Answer(200, "".join(line + "\n" for line in lines).encode())
    if query.get("alt") == "json":
        return _json(200, node)
    # No newline: cloud-init takes instance/id's raw text as the instance id.
    return Answer(200, str(node).encode())


def _timeout(query: Mapping[str, str]) -> float:
    """`timeout_sec`, at most GCE's 60. Raises ValueError when it is not a positive integer."""
    seconds = int(query.get("timeout_sec", str(MAX_WAIT_SECONDS)))
    if seconds < 1:
        raise ValueError(seconds)
    return float(min(seconds, MAX_WAIT_SECONDS))


def _remove_stale(path: Path) -> None:
    """Remove the socket at PATH that a killed server left; raise OSError if a server still answers there."""
    if not path.is_socket():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        if probe.connect_ex(str(path)) == 0:
            raise OSError(errno.EADDRINUSE, f"another metadata server serves {path}")
    path.unlink()


class MetadataServer:
    """GCE's metadata server for one TwinInstance, on 127.0.0.1 from the moment it is made.

    It also serves the Compute API's view of the instance (its guest attributes, its console, its
    status) under `/compute/v1`, for a client holding TOKEN, so that the host reads the twin's host
    keys as it reads a real VM's. Given GUEST_SOCKET, the guest's side (`/computeMetadata`) is served
    there alone, and the loopback port serves the Compute API view alone: no other local user can read
    the VM's metadata or publish its host keys. Raises OSError when PORT or GUEST_SOCKET cannot be bound.
    """

    def __init__(
        self,
        twin: TwinInstance,
        *,
        port: int = 0,
        token: str | None = None,
        console_log: Path | None = None,
        log: Log = lambda _: None,
        guest_socket: Path | None = None,
    ) -> None:
        self.token = token or secrets.token_urlsafe(32)
        self.console_log = console_log
        self.log = log
        self._twin = twin
        self._guest: dict[str, dict[str, str]] = {}
        # Guards the state above; notified on every change, so that held requests look again.
        self._changed = threading.Condition()
        self._held = 0
        """Requests waiting for a change now (see MAX_HELD)."""
        self._closing = False
        self._http = HttpServer(port, self._answer, log, MAX_GUEST_VALUE_BYTES)
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._servers = [self._http]
        # Removed again by close(): where it is now, whatever the process's folder is by then.
        self.guest_socket = guest_socket.absolute() if guest_socket is not None else None
        if guest_socket is not None:
            # The guest's side on a socket in the VM's own 0700 folder: only QEMU's relay, run as this
            # user, reaches it. The loopback port then serves the host alone (the Compute API view).
            # It is bound by the name given (relative, when its folder's path is long).
            try:
                _remove_stale(guest_socket)
                guest = HttpServer(0, self._answer, log, MAX_GUEST_VALUE_BYTES, unix_path=str(guest_socket))
            except BaseException:
                self._http.server_close()
                raise
            self._servers.append(guest)
        # serve_forever looks for close() every poll: a short one makes closing quick, and costs nothing.
        self._threads = [
            threading.Thread(
                target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="metadata-server", daemon=True
            )
            for server in self._servers
        ]
        for thread in self._threads:
            thread.start()

    @property
    def compute_api(self) -> str:
        """The base URL of the Compute API view, as course-vm's Compute API client takes it."""
        return self.url + "/compute/v1"

    @property
    def twin(self) -> TwinInstance:
        with self._changed:
            return self._twin

    @property
    def guest_attributes(self) -> dict[str, dict[str, str]]:
        """What the guest has published, namespace -> key -> value (a copy)."""
        with self._changed:
            return {namespace: dict(keys) for namespace, keys in self._guest.items()}

    def set_attributes(self, attributes: Mapping[str, str]) -> None:
        """Replace the instance attributes, as `gcloud compute instances add-metadata` would."""
        with self._changed:
            self._twin = replace(self._twin, attributes=dict(attributes))
            self._changed.notify_all()

    def close(self) -> None:
        """Stop serving: held requests are answered at once; no thread or socket is left behind."""
        with self._changed:
            if self._closing:
                return
            self._closing = True
            self._changed.notify_all()
        for server in self._servers:
            server.shutdown()  # nothing new is accepted once this returns
            server.stop_reading()
        for server in self._servers:
            server.workers.shutdown(wait=True)
            server.server_close()
        for thread in self._threads:
            thread.join()
        if self.guest_socket is not None:
            self.guest_socket.unlink(missing_ok=True)

    def __enter__(self) -> MetadataServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _answer(self, request: Request) -> Answer:
        if request.forwarded:
            # As GCE: a request a proxy forwarded may come from anyone.
            return _text(403, "requests with X-Forwarded-For are refused")
        host = request.host.lower()
        own = host.rpartition(":")[0] if host.endswith((":80", self.url[self.url.rindex(":") :])) else host
        if host and own not in GUEST_HOSTS | {"127.0.0.1", "localhost"}:
            # A page in a browser that a name resolving to 127.0.0.1 led here (DNS rebinding) sends its own.
            return _text(403, f"unknown Host {request.host!r}")
        segments = [s for s in request.path.split("/") if s]  # GCE ignores empty segments: `v1//` is `v1/`
        if request.path == "/":
            # Client libraries probe this and check for the Metadata-Flavor header.
            return _text(200, "computeMetadata/") if request.method == "GET" else _text(405, "method not allowed")
        if segments[:1] == ["computeMetadata"]:
            if self.guest_socket is not None and not request.from_guest:
                return _text(403, "the instance's metadata is served to its VM alone (through its socket)")
            if request.flavor != "Google":
                return _text(403, "missing the request header Metadata-Flavor: Google")
            if segments[1:2] != ["v1"]:
                return _text(404, "not found")
            return self._metadata(request, segments[2:])
        if segments[:2] == ["compute", "v1"] and not request.from_guest:
            return self._compute_view(request, segments[2:])
        return _text(404, "not found")

    def _metadata(self, request: Request, segments: list[str]) -> Answer:
        if segments[:2] == ["instance", "guest-attributes"]:
            return self._guest_attributes(request, segments[2:])
        if request.method != "GET":
            return _text(405, "method not allowed")

        def render() -> Answer:
            found = _lookup(self._twin.document(), segments)
            return _text(404, "not found") if found is None else _render(*found, request.query)

        return self._watched(render, request.query)

    def _watched(self, render: Callable[[], Answer], query: Mapping[str, str]) -> Answer:
        """RENDER's answer with its ETag; held while it still has the ETag `last_etag`, when
        `wait_for_change=true`, until it changes, `timeout_sec` passes or the server closes."""
        try:
            deadline = time.monotonic() + _timeout(query)
        except ValueError:
            return _text(400, "timeout_sec must be a positive integer")
        waiting = query.get("wait_for_change", "").lower() == "true"
        last = query.get("last_etag", "NONE")
        with self._changed:
            answer = _with_etag(render())
            if not (waiting and answer.etag == last and not self._closing):
                return answer
            if self._held >= MAX_HELD:
                return _text(503, f"{MAX_HELD} requests wait for a change already; try again later")
            self._held += 1
            try:
                while answer.etag == last and not self._closing:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._changed.wait(remaining)
                    answer = _with_etag(render())
            finally:
                self._held -= 1
        return answer

    def _guest_attributes(self, request: Request, segments: list[str]) -> Answer:
        if not self.twin.guest_attributes_enabled():
            return _text(403, "guest attributes are disabled: set the metadata enable-guest-attributes=TRUE")
        if len(segments) > 2 or not all(GUEST_NAME.fullmatch(s) for s in segments):
            return _text(400, f"a guest attribute is NAMESPACE/KEY, each matching {GUEST_NAME.pattern}")
        if request.method == "GET":
            return self._watched(lambda: self._guest_value(segments, request.query), request.query)
        if request.method != "PUT":
            return _text(405, "method not allowed")
        if len(segments) != 2:
            return _text(400, "PUT a value to guest-attributes/NAMESPACE/KEY")
        if request.body is None:
            return _text(400, f"a guest attribute needs a Content-Length of at most {MAX_GUEST_VALUE_BYTES} bytes")
        try:
            value = request.body.decode()
        except UnicodeDecodeError:
            return _text(400, "a guest attribute's value must be UTF-8 text")
        namespace, key = segments
        with self._changed:
            others = [v for n, values in self._guest.items() for k, v in values.items() if (n, k) != (namespace, key)]
            size = sum(len(v.encode()) for v in others) + len(request.body)
            if len(others) + 1 > MAX_GUEST_ATTRIBUTES or size > MAX_GUEST_BYTES:
                return _text(
                    400, f"guest attributes are full: at most {MAX_GUEST_ATTRIBUTES}, of {MAX_GUEST_BYTES} bytes in all"
                )
            self._guest.setdefault(namespace, {})[key] = value
            self._changed.notify_all()
        return Answer(200, b"")

    def _guest_value(self, segments: list[str], query: Mapping[str, str]) -> Answer:
        found = _lookup(self._guest, segments, literal=True)
        return _text(404, "not found") if found is None else _render(*found, query)

    def _compute_view(self, request: Request, segments: list[str]) -> Answer:
        """The Compute API's `instances.get`, `getGuestAttributes` and `getSerialPortOutput` of the twin, standing
        in for Google's with its documents and error bodies, so that course-vm's client and gcloud read the twin as
        a GCE VM (tests/gcp/test_gcloud_reads.py holds them to the real gcloud); start and stop are not served."""
        expected = f"Bearer {self.token}".encode()
        if not hmac.compare_digest(request.authorization.encode("utf-8", "replace"), expected):
            return _api_error(401, "Request had invalid authentication credentials.", "authError")
        twin = self.twin
        resource = f"projects/{twin.project_id}/zones/{twin.zone}/instances/{twin.name}"
        if segments[:6] != resource.split("/") or len(segments) > 7:
            return _api_error(404, f"The resource '{'/'.join(segments)}' was not found", "notFound")
        if request.method != "GET":
            return _api_error(405, "Method not allowed.", "methodNotAllowed")
        method = segments[6] if len(segments) == 7 else ""
        if method == "":
            return _json(200, twin.compute_document())
        if method == "getGuestAttributes":
            return self._guest_items(resource, request.query.get("queryPath", ""))
        if method == "serialPort":
            contents = self._console() if request.query.get("port", "1") == "1" else ""
            return _json(
                200,
                {"kind": "compute#serialPortOutput", "contents": contents, "start": "0", "next": str(len(contents))},
            )
        return _api_error(404, f"The resource '{resource}/{method}' was not found", "notFound")

    def _guest_items(self, resource: str, query_path: str) -> Answer:
        """`getGuestAttributes?queryPath=NAMESPACE/` (or NAMESPACE/KEY); a 404 while nothing matches."""
        namespace, _, key = query_path.partition("/")
        items = [
            {"namespace": ns, "key": k, "value": v}
            for ns, values in self.guest_attributes.items()
            for k, v in values.items()
            if (not namespace or ns == namespace) and (not key or k == key)
        ]
        if not items:
            return _api_error(404, f"The resource '{resource}/guestAttributes/{query_path}' was not found", "notFound")
        return _json(200, {"kind": "compute#guestAttributes", "queryPath": query_path, "queryValue": {"items": items}})

    def _console(self) -> str:
        try:
            return self.console_log.read_text(errors="replace") if self.console_log else ""
        except OSError:
            return ""
