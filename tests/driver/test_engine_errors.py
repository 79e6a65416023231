"""The Pulumi CLI's failures as course-vm's errors: what failed, the engine's own lines, and a next step."""

from __future__ import annotations

import json
from typing import Any

import pytest

from provisioner.driver.engine_errors import (
    engine_error,
    engine_lines,
    error_lines,
    is_missing_stack,
    next_step,
    no_such_stack,
    passphrase_error,
)
from provisioner.driver.events import EngineLog, parse_events
from provisioner.driver.workspace import CliResult
from provisioner.errors import EngineError, ExitStatus
from tests.support.pulumi_errors import (
    API_DISABLED,
    CRASH,
    CREDENTIALS,
    LOCKED,
    QUOTA,
    failed_create,
    program_failed,
    provider_unconfigured,
)
from tests.support.pulumi_events import diagnostics_shown, engine_failed, error_diagnostic, update_events

# The real CLI's lines (pkg/secrets/passphrase/manager.go; pkg/backend: StackNotFoundError).
MISSING = (
    'error: getting secrets manager: constructing secrets manager of type "passphrase": passphrase must be set '
    "with PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables"
)
INCORRECT = (
    "error: failed to decrypt: incorrect passphrase, please set PULUMI_CONFIG_PASSPHRASE to the correct "
    "passphrase or set PULUMI_CONFIG_PASSPHRASE_FILE to a file containing the passphrase"
)


def failed(stderr: str, stdout: str = "") -> CliResult:
    return CliResult(("up", "--yes"), 1, stdout, stderr)


def engine_failure(events: list[dict[str, Any]]) -> tuple[CliResult, EngineLog]:
    """An update the engine failed with EVENTS, as the CLI ends it: its events ended as the engine ends them, their
    diagnostics shown on stdout, nothing on stderr (a bail), exit 1."""
    ended = engine_failed(events, preview=False)
    return failed("", stdout=diagnostics_shown(ended, "dev")), parse_events(json.dumps(event) for event in ended)


# A passphrase that is missing or does not fit: one clear error, before anything changes.


def test_a_missing_passphrase_says_which_backend_and_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    error = passphrase_error("mine", MISSING, {})
    assert error is not None and error.exit_code == ExitStatus.MISSING_PREREQUISITE
    assert str(error) == (
        "stack mine on s3://their-bucket keeps its secrets with a passphrase, and none is set (course-vm brings its "
        "own only to its own backend). Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE (a file holding the stack's "
        "passphrase) or PULUMI_CONFIG_PASSPHRASE: the one typed at `pulumi stack init`"
    )


def test_a_passphrase_that_does_not_fit_says_which_one_was_tried() -> None:
    ours = passphrase_error("dev", INCORRECT, {"PULUMI_CONFIG_PASSPHRASE_FILE": "/state/pulumi/passphrase"})
    assert ours is not None and ours.exit_code == ExitStatus.BAD_INPUT
    assert str(ours) == (
        "course-vm's passphrase file /state/pulumi/passphrase does not decrypt stack dev's secrets: the stack was "
        "made with another passphrase (e.g. one typed at `pulumi stack init`). Fix: export "
        "PULUMI_CONFIG_PASSPHRASE_FILE=FILE (a file holding the stack's passphrase) or PULUMI_CONFIG_PASSPHRASE: "
        "the one the stack was made with"
    )
    theirs = passphrase_error("dev", INCORRECT, {})
    assert str(theirs).startswith("the passphrase you set does not decrypt stack dev's secrets")


def test_other_failures_are_not_taken_for_passphrase_errors() -> None:
    assert passphrase_error("dev", "error: could not reach the backend", {}) is None


# A stack that does not exist: every command's one message.


def test_a_missing_stack_is_known_by_the_clis_words() -> None:
    assert is_missing_stack(failed("error: no stack named 'typo' found\n"))
    assert not is_missing_stack(failed("error: could not reach the backend\n"))
    assert not is_missing_stack(failed("", stdout="no stack named 'typo' found"))


def test_a_missing_stack_names_the_stacks_that_exist() -> None:
    error = no_such_stack("typo", ["dev", "alice"])
    assert error.exit_code == ExitStatus.BAD_INPUT
    assert str(error) == (
        "there is no stack typo (the stacks that exist: alice, dev); nothing was created or deleted. "
        "Fix: name one of them with --stack"
    )


def test_a_missing_stack_where_none_exists_says_how_to_create_one() -> None:
    assert str(no_such_stack("dev", [])) == (
        "there is no stack dev (no stack exists yet); nothing was created or deleted. "
        "Fix: create it with `course-vm up --stack dev --project YOUR-PROJECT-ID`"
    )


# The engine's failures: what failed, the engine's lines (its diagnostics first), a next step.


def test_an_engine_error_says_what_failed_in_the_engines_lines_and_what_to_do() -> None:
    result, log = engine_failure(failed_create(QUOTA))
    error = engine_error("update stack dev", "dev", result, log, project="course-project-1", again="up")
    assert isinstance(error, EngineError) and error.exit_code == ExitStatus.ENGINE_FAILED
    assert str(error) == (
        "Pulumi could not update stack dev:\n"
        "  error: sdk-v2/provider2.go:572: sdk.helper_schema: Error creating instance: googleapi: Error 403: Quota "
        "'CPUS' exceeded.  Limit: 8.0 in region europe-west1., quotaExceeded: provider=google-beta@8.10.0\n"
        "  error: update failed\n"
        "Fix: ask for more quota at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1, or "
        "use another zone (--zone) or a smaller machineType; then run `course-vm up` again"
    )


def test_the_engines_diagnostics_are_its_lines_in_order_without_their_colour() -> None:
    # The engine's own closing error is `update failed` after the prefix `error: `, as its progress display shows it.
    events = [error_diagnostic("<{%reset%}>the VM is not ready:\ndocker FAILED<{%reset%}>\n"),
              error_diagnostic("update failed")]  # fmt: skip
    log = parse_events(json.dumps(event) for event in events)
    error = engine_error("update stack dev", "dev", failed(""), log, project=None, again=None)
    assert str(error) == (
        "Pulumi could not update stack dev:\n"
        "  error: the VM is not ready:\n"
        "  docker FAILED\n"
        "  error: update failed\n"
        "Fix: act on the engine's lines above, then run the same command again"
    )


def test_an_engine_that_said_nothing_is_said_so() -> None:
    error = engine_error("read stack dev", "dev", failed("warning: slow\n"), EngineLog(), project=None, again="down")
    assert str(error) == (
        "Pulumi could not read stack dev:\n  (the Pulumi CLI said nothing more)\n"
        "Fix: act on the engine's lines above, then run `course-vm down` again"
    )


def test_no_line_is_said_twice() -> None:
    assert engine_lines(["error: one", "  more"], ["error: one", "error: two"]) == ["error: one", "more", "error: two"]


def test_a_programs_traceback_is_left_out_but_its_last_line_kept() -> None:
    # The language host's diagnostic names no resource, and the engine adds nothing after it (a bail).
    result, log = engine_failure(program_failed(CRASH))
    assert [d.message for d in log.errors] == [CRASH]
    assert engine_lines([line for d in log.errors for line in d.lines], error_lines(result.stderr)) == [
        "error: Program failed with an unhandled exception:",
        "ValueError: boom",
    ]


def test_the_error_lines_are_those_of_error_with_their_indented_continuations() -> None:
    stderr = "Updating (dev)\nerror: one\n  more of one\n\nnot it\n  nor this\nerror: two\n"
    assert error_lines(stderr) == ["error: one", "  more of one", "error: two"]


def test_an_updates_events_name_the_failure_of_a_vm() -> None:
    result, log = engine_failure(update_events({"bob": "failed: the VM is not ready"}))
    error = engine_error("update stack dev", "dev", result, log, project=None, again="up")
    said = "Pulumi could not update stack dev:\n  error: the VM is not ready\n  error: update failed\nFix: "
    assert str(error).startswith(said)


AGAIN = "`course-vm up` again"


@pytest.mark.parametrize(
    ("text", "project", "fix"),
    [
        (
            LOCKED,
            None,
            "if no other `up` or `down` of stack fall is still running, clear its lock with `pulumi cancel --yes "
            '--stack fall` in a shell set up by `course-vm env` (`eval "$(course-vm env)"`; PowerShell: '
            f"`course-vm env | Out-String | Invoke-Expression`), then run {AGAIN}",
        ),
        (
            "error: [409] Conflict: Another update is currently in progress.",
            None,
            "if no other `up` or `down` of stack fall is still running, clear its lock with `pulumi cancel --yes "
            '--stack fall` in a shell set up by `course-vm env` (`eval "$(course-vm env)"`; PowerShell: '
            f"`course-vm env | Out-String | Invoke-Expression`), then run {AGAIN}",
        ),
        (
            API_DISABLED,
            "course-project-1",
            "enable the API with `gcloud services enable compute.googleapis.com --project 123456789012`, wait a "
            f"minute, then run {AGAIN}",
        ),
        (
            "Error 403: Cloud Resource Manager API has not been used in project my-proj before or it is disabled.",
            None,
            f"enable the API with `gcloud services enable compute.googleapis.com --project my-proj`, wait a minute, "
            f"then run {AGAIN}",
        ),
        (
            "googleapi: Error 403: ... SERVICE_DISABLED",
            "course-project-1",
            "enable the API with `gcloud services enable compute.googleapis.com --project course-project-1`, wait a "
            f"minute, then run {AGAIN}",
        ),
        (
            "googleapi: Error 403: accessNotConfigured",
            None,
            "enable the API with `gcloud services enable compute.googleapis.com --project YOUR-PROJECT-ID`, wait a "
            f"minute, then run {AGAIN}",
        ),
        (
            "https://console.developers.google.com/apis/api/iap.googleapis.com/overview?project=other-1 then retry",
            "course-project-1",
            f"enable the API with `gcloud services enable iap.googleapis.com --project other-1`, wait a minute, then "
            f"run {AGAIN}",
        ),
        (
            QUOTA,
            None,
            "ask for more quota at https://console.cloud.google.com/iam-admin/quotas, or use another zone (--zone) or "
            f"a smaller machineType; then run {AGAIN}",
        ),
        (
            "Error 403: QUOTA_EXCEEDED",
            "course-project-1",
            "ask for more quota at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1, or use "
            f"another zone (--zone) or a smaller machineType; then run {AGAIN}",
        ),
        (
            CREDENTIALS,
            None,
            f"log in for applications with `gcloud auth application-default login`, then run {AGAIN}",
        ),
        (
            'oauth2: "invalid_grant" "reauth related error (invalid_rapt)"',
            None,
            f"log in for applications with `gcloud auth application-default login`, then run {AGAIN}",
        ),
        ("error: something else", None, f"act on the engine's lines above, then run {AGAIN}"),
    ],
)
def test_each_known_failure_has_its_next_step(text: str, project: str | None, fix: str) -> None:
    assert next_step(text, "fall", project, AGAIN) == fix


def test_the_next_step_reads_the_diagnostics_and_stdout_too() -> None:
    # A provider that cannot be configured fails before any step: its error alone, no `update failed`.
    result, log = engine_failure(provider_unconfigured(CREDENTIALS))
    assert [d.urn.rsplit("::", 1)[-1] for d in log.errors] == ["default_8_10_0"]
    from_events = engine_error("update stack dev", "dev", result, log, project=None, again="up")
    assert str(from_events).endswith("Fix: log in for applications with `gcloud auth application-default login`, "
                                      "then run `course-vm up` again")  # fmt: skip
    # Without an event log to read, the progress display's Diagnostics section on stdout still names the failure.
    shown, _log = engine_failure(failed_create(QUOTA))
    from_stdout = engine_error("update stack dev", "dev", shown, EngineLog(), project=None, again="up")
    assert "Fix: ask for more quota at https://console.cloud.google.com/iam-admin/quotas" in str(from_stdout)


def test_a_locked_stack_is_the_clis_error_on_stderr() -> None:
    error = engine_error("update stack dev", "dev", failed(LOCKED), EngineLog(), project=None, again="up")
    assert str(error).splitlines()[1:3] == [f"  {line.strip()}" for line in LOCKED.splitlines()]
    assert "clear its lock with `pulumi cancel --yes --stack dev`" in str(error)
