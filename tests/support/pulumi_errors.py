"""What the Pulumi CLI prints on stderr when the engine fails: the failures course-vm names a next step for."""

from __future__ import annotations

API_DISABLED = (
    "error: 1 error occurred:\n"
    "\t* Error creating instance: googleapi: Error 403: Compute Engine API has not been used in project 123456789012 "
    "before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/compute.googleapis"
    ".com/overview?project=123456789012 then retry.\n"
    "Details:\n"
    '[{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "SERVICE_DISABLED"}]\n'
    ", accessNotConfigured\n"
    "error: update failed\n"
)
QUOTA = (
    "error: 1 error occurred:\n"
    "\t* Error creating instance: googleapi: Error 403: Quota 'CPUS' exceeded.  Limit: 8.0 in region europe-west1., "
    "quotaExceeded\n"
    "error: update failed\n"
    "error: update failed\n"
)
CREDENTIALS = (
    "error: pulumi:providers:gcp resource 'default_8_10_0' has a problem: could not find default credentials. "
    "See https://cloud.google.com/docs/authentication/external/set-up-adc for more information\n"
)
LOCKED = (
    "error: the stack is currently locked by 1 lock(s). Either wait for the other process(es) to end or delete "
    "the lock file with `pulumi cancel`.\n"
    "  file:///home/me/.local/state/course-vm/pulumi/.pulumi/locks/organization/course-vm/dev/5b1c.json: "
    "created by me@laptop (pid 4242) at 2026-11-27T14:00:00Z\n"
)
CRASH = (
    "error: Program failed with an unhandled exception:\n"
    "  Traceback (most recent call last):\n"
    '    File "/work/course-vm/__main__.py", line 14, in <module>\n'
    "      key = ensure_key_pair(seat.ssh_key_path)\n"
    "  ValueError: boom\n"
)
