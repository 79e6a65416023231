"""Starting and stopping a GCE VM, and reading its status, through the Compute API: `instances.start`
and `.stop`, the zone operation each returns (read with `zoneOperations.get`), and `instances.get`."""

from __future__ import annotations

import re
import time
import urllib.error
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from provisioner.access.ssh import Progress
from provisioner.errors import CourseVmError, EngineError, UnreachableError
from provisioner.gcp.compute_api import (
    MANAGE_SCOPE,
    GceInstance,
    NotFoundError,
    PermissionRefusedError,
    TokenSource,
    api_call,
    api_get,
    application_default_token,
    compute_api,
)
from provisioner.gcp.quotas import QUOTAS_PAGE, QuotaError
from provisioner.stack import DEFAULT_STACK, command

OPERATION_NAME = re.compile(r"[a-z][-a-z0-9]{0,62}")
"""A zone operation's name as GCE gives them (`operation-1725000000001-6150f5e1a2b3c-3f0e2a1b-8c7d6e5f`): only
such a name read back from the API is put in a URL that gets the access token."""


def start_instance(
    instance: GceInstance,
    deadline: float,
    progress: Progress = lambda _: None,
    *,
    api: str | None = None,
    token: TokenSource = lambda: application_default_token(MANAGE_SCOPE),
    poll_seconds: float = 2.0,
    stack: str = DEFAULT_STACK,
) -> None:
    """Start INSTANCE (nothing happens to one that runs) and wait until GCE reports it RUNNING.

    Raises CourseVmError when it does not exist or may not be started, UnreachableError when it
    is not running by the deadline or the Compute API cannot be reached; when GCE's start
    operation fails (no room in the zone, a quota), the error says why at once.
    """
    _change_power(instance, "start", "RUNNING", deadline, progress, api, token, poll_seconds, stack)


def stop_instance(
    instance: GceInstance,
    deadline: float,
    progress: Progress = lambda _: None,
    *,
    api: str | None = None,
    token: TokenSource = lambda: application_default_token(MANAGE_SCOPE),
    poll_seconds: float = 2.0,
    stack: str = DEFAULT_STACK,
) -> None:
    """Stop INSTANCE (nothing happens to one that is stopped) and wait until GCE reports it TERMINATED.

    Its disks and static address stay (and are still billed). Raises CourseVmError when it does
    not exist or may not be stopped, UnreachableError when it is not stopped by the deadline or the
    Compute API cannot be reached.
    """
    _change_power(instance, "stop", "TERMINATED", deadline, progress, api, token, poll_seconds, stack)


def instance_status(
    instance: GceInstance,
    *,
    api: str | None = None,
    token: TokenSource = application_default_token,
    stack: str = DEFAULT_STACK,
) -> str:
    """INSTANCE's status as GCE reports it now (RUNNING, TERMINATED, STAGING, STOPPING, SUSPENDED, ...).

    One `instances.get`. Raises CourseVmError when it does not exist or may not be read,
    UnreachableError when the Compute API cannot be reached or fails.
    """
    api = api or compute_api()  # checked before a token is fetched
    access = token()
    with _instance_errors(instance, "read", stack):
        return str(api_get(api, instance.path(), {}, access, "compute.instances.get").get("status", "")) or "unknown"


def _change_power(
    instance: GceInstance, verb: str, wanted: str, deadline: float, progress: Progress, api: str | None,
    token: TokenSource, poll_seconds: float, stack: str,
) -> None:  # fmt: skip
    """POST instances.VERB, then read its operation until it is DONE (raising its error, if it failed) and the
    instance until GCE reports it WANTED, or the deadline passes."""
    api = api or compute_api()  # checked before a token is fetched
    access = token()
    permission = f"compute.instances.{verb}"
    with _instance_errors(instance, verb, stack):
        operation = api_call("POST", api, instance.path() + f"/{verb}", {}, access, permission)
    pending = _operation_path(instance, operation)
    while True:
        with _instance_errors(instance, verb, stack):
            if pending is not None:
                operation = _operation(api, pending, access)
            failed = _operation_errors(operation)
            status = "" if failed else str(api_get(api, instance.path(), {}, access, permission).get("status", ""))
        if failed:
            raise _failed_operation(instance, verb, failed, stack)
        if pending is not None and operation.get("status") in ("DONE", None):
            pending = None  # done (or gone): the instance's status says the rest
        if status == wanted:
            return
        now = time.monotonic()
        if now >= deadline:
            raise UnreachableError(f"{instance.name} is still {status or 'not ' + wanted}. Fix: try again later")
        progress(f"{instance.name}: {status}")
        time.sleep(min(poll_seconds, max(deadline - now, 0)))


def _operation_path(instance: GceInstance, operation: dict[str, Any]) -> str | None:
    """The API path of OPERATION (what instances.start or .stop answered) in INSTANCE's zone; None when it
    has no name GCE would give one (then the instance's status alone is read)."""
    name = operation.get("name")
    if not isinstance(name, str) or not OPERATION_NAME.fullmatch(name):
        return None
    return instance.path().rsplit("/instances/", 1)[0] + f"/operations/{name}"


def _operation(api: str, path: str, access: str) -> dict[str, Any]:
    """zoneOperations.get of PATH; {} when the operation is gone (GCE keeps them a while only), or the account
    may start and stop but not read operations (a custom role without compute.zoneOperations.get): the
    instance's status then says how it went, as it did before operations were read."""
    try:
        return api_get(api, path, {}, access, "compute.zoneOperations.get")
    except (NotFoundError, PermissionRefusedError):
        return {}


def _operation_errors(operation: dict[str, Any]) -> list[tuple[str, str]]:
    """(code, message) of each of OPERATION's `error.errors[]`, each message on one line; [] when it has none."""
    error = operation.get("error")
    if not isinstance(error, dict):
        return []
    entries = [entry for entry in error.get("errors") or [] if isinstance(entry, dict)]
    found = [
        (str(entry.get("code", "")), " ".join(str(entry.get("message", "")).split()).rstrip(".")) for entry in entries
    ]
    return found or [("UNKNOWN", "the operation failed and gave no reason")]


def _failed_operation(instance: GceInstance, verb: str, failed: list[tuple[str, str]], stack: str) -> CourseVmError:
    """The error for INSTANCE's VERB operation that ended with FAILED: GCE's codes and words, and the fix."""
    said = f"GCE could not {verb} instance {instance.name} (" + "; ".join(f"{c}: {m}" for c, m in failed) + ")"
    codes = {code for code, _ in failed}
    again = command(verb, stack)
    if any(code.startswith("ZONE_RESOURCE_POOL_EXHAUSTED") for code in codes):
        return UnreachableError(
            f"{said}. Fix: zone {instance.zone} has no room for this machine type now; run `{again}` again in a "
            "few minutes"
        )
    if "QUOTA_EXCEEDED" in codes:
        return QuotaError(
            f"{said}. Fix: stop another VM of the project, or ask for more at "
            f"{QUOTAS_PAGE.format(project=instance.project)}, then run `{again}` again"
        )
    return EngineError(f"{said}. Fix: run `{command('status', stack)}` to see the VM's state, then try again")


@contextmanager
def _instance_errors(instance: GceInstance, doing: str, stack: str) -> Iterator[None]:
    """The Compute API's failures while DOING (start, stop, read) INSTANCE of STACK as course-vm's
    errors: what failed, the API's own words in parentheses, and what to do."""
    try:
        yield
    except NotFoundError as error:
        raise CourseVmError(
            f"instance {instance.name} not found in {instance.project}/{instance.zone} ({error}). "
            f"Fix: `{command('up', stack)}` creates it again"
        ) from None
    except urllib.error.HTTPError as error:
        message = str(error.reason).rstrip(".")
        said = f"the Compute API could not {doing} instance {instance.name} ({error.code}: {message})"
        if error.code == 429 or error.code >= 500:
            raise UnreachableError(f"{said}. Fix: try again in a minute") from None
        raise CourseVmError(
            f"{said}. Fix: run `{command('status', stack)}` to see the VM's state, then try again"
        ) from None
    except (urllib.error.URLError, OSError) as error:
        raise UnreachableError(
            f"the Compute API is unreachable from here ({getattr(error, 'reason', error)}). "
            "Fix: check this machine's network, then try again"
        ) from None
