"""The failures course-vm names a next step for, as the real Pulumi CLI and engine report each, and where.

Read from pulumi/pulumi at the commit tests/driver/recorded/README.md names:

- What the engine says (a resource that failed, a provider that cannot be configured, a program that raised) is
  an error diagnosticEvent in the event log, shown on stdout by the progress display (its Diagnostics section);
  the engine's failure is then a bail (result.BailError), which the CLI does not print again: stderr stays empty
  (pkg/cmd/pulumi/cmd/cmd.go processCmdErrors), and the CLI exits 1 (pkg/cmd/pulumi/cmd/exit_codes.go).
- The engine closes with its own `update failed` (`preview failed`) only when a step failed
  (deploymentExecutor.reportExecResult, after the step executor errored); a program or a provider's
  configuration that failed before any step ends the run as a bail, without it (recorded program-error.json).
- What the CLI itself refuses before the engine runs (a locked stack, a passphrase, a missing stack) is printed
  on stderr as `error: ...` (cmdutil.DisplayErrorMessage).

Each of the engine's is given here as events (see stand_in_pulumi: `fail={"up": {"events": ...}}`), the CLI's
as its stderr.
"""

from __future__ import annotations

from typing import Any

from tests.support.pulumi_events import COURSE_VM, STUDENT_VM, VM_CHILDREN, error_diagnostic, step, urn

PROVIDER = "google-beta@8.10.0"
"""The Terraform provider under pulumi-gcp, as the bridge names it after a failed operation's message."""

API_DISABLED = (
    "sdk-v2/provider2.go:572: sdk.helper_schema: Error creating instance: googleapi: Error 403: Compute Engine API "
    "has not been used in project 123456789012 before or it is disabled. Enable it by visiting "
    "https://console.developers.google.com/apis/api/compute.googleapis.com/overview?project=123456789012 then retry. "
    "If you enabled this API recently, wait a few minutes for the action to propagate to our systems and retry.\n"
    "Details:\n"
    '[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]\n'
    f", accessNotConfigured: provider={PROVIDER}"
)
"""The GCP provider's error as the instance's create fails in a project without the Compute Engine API (the
message of the error diagnosticEvent naming the instance; pulumi-terraform-bridge's `sdk-v2/provider2.go:LINE:
sdk.helper_schema: ...: provider=...` form)."""

QUOTA = (
    "sdk-v2/provider2.go:572: sdk.helper_schema: Error creating instance: googleapi: Error 403: Quota 'CPUS' "
    f"exceeded.  Limit: 8.0 in region europe-west1., quotaExceeded: provider={PROVIDER}"
)
"""The GCP provider's error as the instance's create fails for want of quota (as API_DISABLED)."""

CREDENTIALS = (
    "rpc error: code = Unknown desc = failed to load application credentials.\n"
    "To use your default gcloud credentials, run:\n"
    "\t`gcloud auth application-default login`\n"
    "See https://www.pulumi.com/registry/packages/gcp/installation-configuration/ for details.\n"
    "Expanded error message: Attempted to load application default credentials since neither `credentials` nor "
    "`access_token` was set in the provider block.  No credentials loaded. To use your gcloud credentials, run "
    "'gcloud auth application-default login'.  Original error: google: could not find default credentials. See "
    "https://cloud.google.com/docs/authentication/external/set-up-adc for more information"
)
"""pulumi-gcp's CheckConfig error without application-default credentials (its preConfigureCallback, as its
TestCheckConfigNoCredentials records it), a gRPC error the engine reports as it is, naming the default provider
(deploymentExecutor.reportError with the event's URN) before any step: a bail, no `preview failed`."""

LOCKED = (
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete "
    "the lock file with `pulumi cancel`.\n"
    "  file:///home/me/.local/state/course-vm/pulumi/.pulumi/locks/organization/course-vm/dev/5b1c.json: "
    "created by me@laptop (pid 4242) at 2026-11-27T14:00:00Z\n"
)
"""What the CLI prints on stderr (exit 1) when another process holds the stack's lock on a DIY backend
(pkg/backend/diy/lock.go checkForLock): only an update or a destroy takes the lock, a preview (or
`destroy --preview-only`) does not (diyBackend.Preview, Destroy)."""

CRASH = (
    "Program failed with an unhandled exception:\n"
    "Traceback (most recent call last):\n"
    '  File "/work/course-vm/__main__.py", line 14, in <module>\n'
    "    key = ensure_key_pair(seat.ssh_key_path)\n"
    "ValueError: boom\n"
)
"""The Python language host's error diagnostic (pulumi.log.error, naming no resource) for a program that raised
(sdk/python/cmd/pulumi-language-python-exec: the traceback from the user's program on); it then exits 32, which
the language host takes for a bail: no further error, no `preview failed`."""


def failed_create(message: str, stack: str = "dev") -> list[dict[str, Any]]:
    """The events of an update whose creation of the one VM's instance failed with the provider's MESSAGE: the
    step, the error diagnostic naming the instance, its resOpFailedEvent (the stand-in adds the engine's
    closing `update failed`, a step having failed)."""
    return failed_step("create", "vm", message, stack)


def failed_step(op: str, role: str, message: str, stack: str = "dev") -> list[dict[str, Any]]:
    """The events of an update (or destroy) whose step OP on the one VM's ROLE (VM_CHILDREN) failed with the
    provider's MESSAGE (see failed_create)."""
    vm_urn = urn(stack, [COURSE_VM, STUDENT_VM], "course-vm")
    types = [COURSE_VM, STUDENT_VM, VM_CHILDREN[role]]
    pre = step(op, types, f"course-vm-{role}", vm_urn, stack, planning=False)
    metadata = pre["resourcePreEvent"]["metadata"]
    # Status 1 (StatusUnknown): the bridge fails with gRPC's UNKNOWN (plugin.resourceStateAndError).
    failed = {"sequence": 0, "timestamp": pre["timestamp"], "resOpFailedEvent": {"metadata": metadata, "status": 1,
                                                                                  "steps": 0}}  # fmt: skip
    return [pre, error_diagnostic(message, metadata["urn"]), failed]


def provider_unconfigured(message: str = CREDENTIALS, stack: str = "dev") -> list[dict[str, Any]]:
    """The events of a run whose default GCP provider could not be configured: its error naming the provider."""
    return [error_diagnostic(message, urn(stack, ["pulumi:providers:gcp"], "default_8_10_0"))]


def program_failed(message: str = CRASH) -> list[dict[str, Any]]:
    """The events of a run whose program failed before any step: the language host's error naming no resource."""
    return [error_diagnostic(message)]


def run_error(message: str) -> list[dict[str, Any]]:
    """The events of a run whose program raised pulumi.RunError(MESSAGE) (__main__.py, for course-vm's own errors):
    the language host logs MESSAGE alone (no traceback) and exits 1, which the Go host reports as the program's
    error, the engine as `an unhandled error occurred: ...` (deploy/program_source.go); both name no resource."""
    exited = "an unhandled error occurred: program exited with non-zero exit code: 1"
    return [error_diagnostic(message), error_diagnostic(exited)]
