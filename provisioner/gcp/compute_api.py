"""The Compute API calls: a GCE VM's SSH host keys out of band (guest attributes, else the serial console),
its resources read before a change; starting and stopping a VM is provisioner/gcp/instance_power.py."""

from __future__ import annotations

import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from provisioner.access.host_keys import HostKey, host_keys_from_console, parse_host_key
from provisioner.access.ssh import HostKeySource, Progress
from provisioner.errors import ACCESS_TOKEN, CourseVmError, ExitStatus, UnreachableError

COMPUTE_API = "https://compute.googleapis.com/compute/v1"
# gcloud's own variables: an endpoint override (private service connect, proxies) and a ready token.
ENDPOINT_VARIABLE = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE"
TOKEN_VARIABLE = "CLOUDSDK_AUTH_ACCESS_TOKEN"  # noqa: S105 (a variable name, not a secret)
READ_SCOPE = "https://www.googleapis.com/auth/compute.readonly"
MANAGE_SCOPE = "https://www.googleapis.com/auth/compute"
TokenSource = Callable[[], str]


@dataclass(frozen=True)
class GceInstance:
    project: str
    zone: str
    name: str

    def path(self) -> str:
        return "/projects/{}/zones/{}/instances/{}".format(
            *(urllib.parse.quote(part, safe="") for part in (self.project, self.zone, self.name))
        )


def compute_api() -> str:
    """The Compute API base URL: `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE` read as gcloud reads it, else Google's.

    gcloud takes the override as the API's base URL, to which it adds `projects/...`; one that is only a
    host (`https://HOST/`) gets the API's own path, `compute/v1/`. It refuses a value without the trailing
    '/', and so does course-vm: the one variable points both at the same API.

    Raises CourseVmError when the override would carry the access token in clear: it must be
    https://, or plain http:// to this machine (a local fake or proxy); or lacks gcloud's trailing '/'.
    """
    given = os.environ.get(ENDPOINT_VARIABLE, "")
    if not given:
        return COMPUTE_API
    parts = urllib.parse.urlsplit(given)
    if "@" in parts.netloc:  # the value is not shown: it holds a password, or may
        raise CourseVmError(
            f"{ENDPOINT_VARIABLE} holds a user name or password before its host (not shown); the Compute API "
            f"calls carry your Google access token, never URL credentials. Fix: export {ENDPOINT_VARIABLE}="
            f"{parts.scheme or 'https'}://HOST/ without the `USER:PASSWORD@`, or unset it"
        )
    if not (parts.scheme == "https" and parts.hostname) and not (parts.scheme == "http" and _loopback(parts.hostname)):
        fix = (
            "https://" + given.split("://", 1)[1].rstrip("/") + "/"
            if parts.scheme in ("http", "ftp") and parts.hostname
            else "https://HOST/"
        )
        raise CourseVmError(
            f"{ENDPOINT_VARIABLE}: got {given!r}, but the Compute API calls carry your Google access token, so "
            "the endpoint must be https:// (plain http:// only to this machine: 127.0.0.0/8, ::1, localhost). "
            f"Fix: export {ENDPOINT_VARIABLE}={fix}, or unset it"
        )
    fix = f"Fix: export {ENDPOINT_VARIABLE}={parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/, or unset it"
    if parts.query or parts.fragment:
        raise CourseVmError(f"{ENDPOINT_VARIABLE}: got {given!r}, but the API's base URL has no `?` or `#` part. {fix}")
    if not given.endswith("/"):
        raise CourseVmError(
            f"{ENDPOINT_VARIABLE}: got {given!r}, but gcloud reads it only as a base URL ending in '/' (the API "
            f"at https://HOST/compute/v1/, or https://HOST/ for that path). {fix}"
        )
    # gcloud appends `projects/...` to the value as it is: only its one trailing '/' goes.
    return f"{parts.scheme}://{parts.netloc}/compute/v1" if parts.path == "/" else given[:-1]


def _loopback(host: str | None) -> bool:
    if host is None or host.lower() == "localhost":
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def application_default_token(scope: str = READ_SCOPE) -> str:
    """`CLOUDSDK_AUTH_ACCESS_TOKEN` if set, else a token for SCOPE from application-default
    credentials (`gcloud auth application-default login`).

    Raises CourseVmError when there are none.
    """
    if os.environ.get(TOKEN_VARIABLE):
        token = os.environ[TOKEN_VARIABLE]
        if not ACCESS_TOKEN.fullmatch(token):
            raise CourseVmError(token_problem(TOKEN_VARIABLE))
        return token
    import google.auth
    import google.auth.exceptions
    import google.auth.transport.requests

    try:
        credentials, _ = google.auth.default(scopes=[scope])
        credentials.refresh(google.auth.transport.requests.Request())  # type: ignore[no-untyped-call]
    except google.auth.exceptions.GoogleAuthError as error:
        raise CourseVmError(
            f"no usable Google credentials ({error}). Fix: gcloud auth application-default login"
        ) from None
    return str(credentials.token)


def token_problem(variable: str) -> str:
    """Why the access token in VARIABLE cannot be sent, without the token."""
    return (
        f"{variable} holds a character no access token has (a space, a line end such as a file saved on Windows "
        f'adds, or another control character); its value is not shown. Fix: export {variable}="$(gcloud auth '
        f'print-access-token)", or unset it'
    )


class NotFoundError(Exception):
    """The Compute API's 404: what was asked for does not exist (or not yet: guest attributes before the
    guest publishes them). Its message is the API's own; each caller says what that means for the user."""


class PermissionRefusedError(CourseVmError):
    """The Compute API's 401 or 403 (not a disabled API): the account may not do what was asked."""


class ServiceDisabledError(CourseVmError):
    """The Compute Engine API is not enabled in the project (Google's 403 SERVICE_DISABLED)."""

    exit_code = ExitStatus.MISSING_PREREQUISITE

    def __init__(self, project: str) -> None:
        self.project = project
        super().__init__(
            f"the Compute Engine API is not enabled in project {project}. Fix: "
            f"`gcloud services enable compute.googleapis.com --project {project}`, wait a minute, then try again"
        )


DISABLED_REASONS = {"SERVICE_DISABLED", "accessNotConfigured"}
"""The reasons Google gives a call to an API the project has not enabled: `error.details[]` (an
ErrorInfo) says SERVICE_DISABLED, the older `error.errors[]` says accessNotConfigured."""


def _service_disabled(body: dict[str, Any]) -> bool:
    error = body.get("error")
    if not isinstance(error, dict):
        return False
    entries = [*(error.get("errors") or []), *(error.get("details") or [])]
    return any(isinstance(entry, dict) and entry.get("reason") in DISABLED_REASONS for entry in entries)


def _project_of(path: str) -> str:
    """The project of an API PATH `/projects/P/...`."""
    parts = path.split("/")
    return urllib.parse.unquote(parts[2]) if len(parts) > 2 and parts[1] == "projects" else "YOUR-PROJECT-ID"


READ_PERMISSIONS = "compute.instances.getGuestAttributes and getSerialPortOutput"


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""An opener that goes to the address itself, whatever http_proxy says: for servers on this machine."""


def _opener(url: str) -> urllib.request.OpenerDirector:
    """How to reach URL: a server on loopback (the local twin) directly, for a proxy would see its token
    and add X-Forwarded-For, which the twin refuses; any other through the proxy settings, as urlopen does."""
    return _DIRECT if _loopback(urllib.parse.urlsplit(url).hostname) else urllib.request.build_opener()


def api_get(
    api: str, path: str, query: dict[str, str], token: str, permission: str = READ_PERMISSIONS
) -> dict[str, Any]:
    """GET PATH of the Compute API at API (see api_call)."""
    return api_call("GET", api, path, query, token, permission)


def api_call(method: str, api: str, path: str, query: dict[str, str], token: str, permission: str) -> dict[str, Any]:
    """METHOD PATH?QUERY of the Compute API at API with TOKEN: its JSON answer.

    Raises NotFoundError for a 404, ServiceDisabledError when the API is not enabled in the project,
    PermissionRefusedError naming PERMISSION when the token may not, urllib's errors for the rest.
    """
    url = f"{api}{path}?{urllib.parse.urlencode(query)}"
    headers = {"Authorization": f"Bearer {token}"}
    data = b"" if method == "POST" else None
    request = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310 (http(s) only)
    try:
        with _opener(url).open(request, timeout=30) as response:
            document = json.load(response)
    except urllib.error.HTTPError as error:
        body = _error_body(error)
        message = _error_message(body, error)
        if error.code == 404:
            raise NotFoundError(message) from None
        if error.code == 403 and _service_disabled(body):
            raise ServiceDisabledError(_project_of(path)) from None
        if error.code in (401, 403):
            raise PermissionRefusedError(
                f"the Compute API refused {method} {path} ({error.code}: {message}). Fix: log in with an account "
                f"that may do it ({permission}): gcloud auth application-default login"
            ) from None
        # The body is read once: the error goes on with the API's message as its reason.
        raise urllib.error.HTTPError(url, error.code, message, error.headers, None) from None
    return document if isinstance(document, dict) else {}


def read_resource(
    api: str, path: str, token: str, permission: str, missing: str, again: str = "course-vm up"
) -> dict[str, Any]:
    """One GET of the Compute API resource at PATH (`/projects/P/...`), for a check before AGAIN
    (the command to run once the API answers) creates anything.

    Raises CourseVmError with MISSING (its `{reason}`: the API's message) when it does not exist,
    ServiceDisabledError when the API is not enabled in the project, CourseVmError naming
    PERMISSION when it may not be read, and UnreachableError when the API does not answer.
    """
    try:
        return api_get(api, path, {}, token, permission)
    except NotFoundError as error:
        raise CourseVmError(missing.format(reason=error)) from None
    except (urllib.error.URLError, OSError) as error:
        if isinstance(error, urllib.error.HTTPError):
            what = f"answered GET {path} with HTTP {error.code}"
        else:
            what = f"did not answer GET {path} ({getattr(error, 'reason', error)})"
        raise UnreachableError(
            f"the Compute API ({api}) {what}; nothing was created. Fix: check the "
            f"network (a proxy, or CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE when set), then run `{again}` again"
        ) from None


def _error_body(error: urllib.error.HTTPError) -> dict[str, Any]:
    """The JSON body of an error answer (Google's `{"error": {...}}`), or {} when it is not JSON."""
    try:
        body = json.load(error)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_message(body: dict[str, Any], error: urllib.error.HTTPError) -> str:
    try:
        return str(body["error"]["message"])
    except (KeyError, TypeError):
        return str(error.reason)


def _from_guest_attributes(document: dict[str, Any]) -> tuple[HostKey, ...]:
    items = (document.get("queryValue") or {}).get("items") or []
    return tuple(
        parse_host_key(f"{item['key']} {item['value']}")
        for item in items
        if item.get("namespace") == "hostkeys" and "key" in item and "value" in item
    )


def published_host_keys(
    instance: GceInstance,
    progress: Progress = lambda _: None,
    *,
    api: str | None = None,
    token: TokenSource = application_default_token,
) -> HostKeySource:
    """INSTANCE's published host keys as a source the checker reads again after a mismatch
    (see `connect_published`): each read is `gce_host_keys` by the deadline it is given."""

    def published(deadline: float) -> tuple[HostKey, ...]:
        return gce_host_keys(instance, deadline, progress, api=api, token=token)

    return published


def gce_host_keys(
    instance: GceInstance,
    deadline: float,
    progress: Progress = lambda _: None,
    *,
    api: str | None = None,
    token: TokenSource = application_default_token,
    poll_seconds: float = 2.0,
) -> tuple[HostKey, ...]:
    """The instance's host keys, as its guest published them, waiting until it has.

    Guest attributes `hostkeys/` come first (what `gcloud compute ssh` pins); cloud-init's block on
    the serial console is the fallback. Raises UnreachableError when neither appears before the
    deadline, and CourseVmError when the instance does not exist or may not be read.
    """
    api = api or compute_api()  # checked before a token is fetched
    access = token()
    started, last = time.monotonic(), ""
    while True:
        reason = ""
        try:
            keys = _from_guest_attributes(
                api_get(api, instance.path() + "/getGuestAttributes", {"queryPath": "hostkeys/"}, access)
            )
            if keys:
                progress(f"{instance.name}'s host keys, from its guest attributes: {keys[0].fingerprint}")
                return keys
        except NotFoundError:
            reason = "guest attributes hostkeys/ not published yet"
        except (urllib.error.URLError, OSError) as error:
            reason = f"Compute API unreachable ({error})"
        if not reason.startswith("Compute API"):
            try:
                console = api_get(api, instance.path() + "/serialPort", {"port": "1"}, access)
                keys = host_keys_from_console(str(console.get("contents", "")))
                if keys:
                    progress(f"{instance.name}'s host keys, from its serial console: {keys[0].fingerprint}")
                    return keys
                reason = "host keys not yet published (guest attributes or serial console)"
            except NotFoundError as error:
                raise CourseVmError(
                    f"instance {instance.name} not found in {instance.project}/{instance.zone} "
                    f"({error}). Fix: check --gce-instance, --gce-zone and --gce-project"
                ) from None
            except (urllib.error.URLError, OSError) as error:
                reason = f"Compute API unreachable ({error})"
        now = time.monotonic()
        if now >= deadline:
            raise UnreachableError(
                f"{instance.name}: {reason} within {now - started:.0f}s. "
                "Fix: check that the VM is running and its guest agent or cloud-init started"
            )
        if reason != last:
            progress(f"waiting for {instance.name}'s host keys: {reason}")
            last = reason
        time.sleep(min(poll_seconds, max(deadline - now, 0)))


def bake_verdict(
    instance: GceInstance,
    deadline: float,
    progress: Progress = lambda _: None,
    *,
    api: str | None = None,
    token: TokenSource = application_default_token,
    poll_seconds: float = 6.0,
) -> str:
    """The verdict the bake's VM INSTANCE publishes in its guest attribute `course-vm/bake` when its
    setup has finished (see cloud-init/bake-finish.sh.j2), waiting until it has. Every 6 s at most:
    GCE allows 10 reads a minute of one VM's guest attributes.

    Raises UnreachableError when none appears before DEADLINE, CourseVmError when the instance may not be read.
    """
    api = api or compute_api()
    access, last, started = token(), "", time.monotonic()
    while True:
        try:
            document = api_get(api, instance.path() + "/getGuestAttributes", {"queryPath": "course-vm/bake"}, access)
            items = (document.get("queryValue") or {}).get("items") or []
            for item in items:
                if item.get("namespace") == "course-vm" and item.get("key") == "bake":
                    return str(item.get("value", ""))
            reason = "no verdict yet"
        except NotFoundError:
            reason = "the bake is still running"
        except (urllib.error.URLError, OSError) as error:
            reason = f"Compute API unreachable ({error})"
        now = time.monotonic()
        if now >= deadline:
            raise UnreachableError(
                f"{instance.name}: {reason}; no verdict within {now - started:.0f}s. Fix: bake again; if it times out "
                "again, its serial console says where it stopped"
            )
        if reason != last:
            progress(f"waiting for {instance.name}'s verdict: {reason}")
            last = reason
        time.sleep(min(poll_seconds, max(deadline - now, 0)))
