"""The Pulumi CLI's failures as course-vm's errors: what failed, the engine's own lines, and a next step."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from provisioner.driver.events import EngineLog
from provisioner.driver.workspace import CliResult, chosen_backend
from provisioner.errors import CourseVmError, EngineError, MissingPrerequisiteError


def passphrase_error(stack_name: str, text: str, environment: Mapping[str, str]) -> CourseVmError | None:
    """The course-vm error for a Pulumi passphrase failure in TEXT (the CLI's error output), given the
    ENVIRONMENT course-vm added (backend_environment); None when TEXT is about something else."""
    ours = environment.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    fix = (
        "Fix: export PULUMI_CONFIG_PASSPHRASE_FILE=FILE (a file holding the stack's passphrase) "
        "or PULUMI_CONFIG_PASSPHRASE"
    )
    if "passphrase must be set" in text:
        return MissingPrerequisiteError(
            f"stack {stack_name} on {chosen_backend()} keeps its secrets with a passphrase, and none is set "
            "(course-vm brings its own only to its own backend). "
            f"{fix}: the one typed at `pulumi stack init`"
        )
    if "incorrect passphrase" in text:
        given = f"course-vm's passphrase file {ours}" if ours else "the passphrase you set"
        return CourseVmError(
            f"{given} does not decrypt stack {stack_name}'s secrets: the stack was made with another "
            f"passphrase (e.g. one typed at `pulumi stack init`). {fix}: the one the stack was made with"
        )
    return None


def is_missing_stack(result: CliResult) -> bool:
    """Whether the CLI failed because the stack it was given does not exist (StackNotFoundError), or it was
    given none and none is selected."""
    return bool(re.search(r"no stack named.*found|no stack selected", result.stderr))


def no_such_stack(name: str | None, existing: Sequence[str]) -> CourseVmError:
    """The error for a stack NAME that a command was asked about and that does not exist (None: no stack is
    selected, and the command was told none): every command's."""
    if name is None:
        listed = f"the stacks that exist: {', '.join(sorted(existing))}" if existing else "no stack exists yet"
        return CourseVmError(
            f"no stack is selected and none was named ({listed}); nothing was created or deleted. "
            "Fix: name one with --stack"
        )
    if existing:
        there, fix = f"the stacks that exist: {', '.join(sorted(existing))}", "name one of them with --stack"
    else:
        there, fix = (
            "no stack exists yet",
            f"create it with `course-vm up --stack {name} --project YOUR-PROJECT-ID`",
        )
    return CourseVmError(f"there is no stack {name} ({there}); nothing was created or deleted. Fix: {fix}")


RAW_CLI_NOTE = (
    'The pulumi commands above reach this stack after `eval "$(course-vm env)"` '
    "(PowerShell: `course-vm env | Out-String | Invoke-Expression`)."
)
"""What `up` adds to the settings' problems: their Fix lines are raw pulumi commands."""


def engine_error(
    doing: str, stack_name: str, result: CliResult, log: EngineLog, *, project: str | None, again: str | None
) -> EngineError:
    """The error for the failed Pulumi CLI command RESULT, DOING what ("update stack dev"); LOG holds the
    events it wrote, whose error diagnostics are the engine's clearest lines; AGAIN is the course-vm
    command to run again (None: the same)."""
    diagnostics = [d.message for d in log.errors]
    lines = engine_lines([line for d in log.errors for line in d.lines], error_lines(result.stderr))
    said = "\n".join(f"  {line}" for line in lines) or "  (the Pulumi CLI said nothing more)"
    rerun = f"`course-vm {again}` again" if again else "the same command again"
    everything = "\n".join([result.stdout, result.stderr, *diagnostics])
    fix = next_step(everything, stack_name, project, rerun)
    return EngineError(f"Pulumi could not {doing}:\n{said}\nFix: {fix}")


def error_lines(stderr: str) -> list[str]:
    """The `error:` lines of the CLI's stderr, each with the indented lines that continue it: the CLI's own
    errors (a locked stack, a passphrase, a missing stack). What the engine reported it shows on stdout, in its
    progress display's Diagnostics section, and not again on stderr (a bail): those lines come from the event log."""
    kept: list[str] = []
    inside = False
    for line in stderr.splitlines():
        if line.lstrip().startswith("error:"):
            inside = True
        elif not (inside and line[:1].isspace() and line.strip()):
            inside = False
        if inside:
            kept.append(line)
    return kept


def engine_lines(*groups: Sequence[str]) -> list[str]:
    """GROUPS of the engine's lines, stripped, without duplicates or a Python traceback's frames."""
    kept: list[str] = []
    for group in groups:
        traceback_indent: int | None = None
        for line in group:
            indent = len(line) - len(line.lstrip())
            text = line.strip()
            if text == "Traceback (most recent call last):":
                traceback_indent = indent
                continue
            if traceback_indent is not None:
                if indent > traceback_indent or text.startswith('File "'):
                    continue
                traceback_indent = None
            if text and text not in kept:
                kept.append(text)
    return kept


_CREDENTIALS = (
    "could not find default credentials",
    "application default credentials",
    "invalid_grant",
    "oauth2: cannot fetch token",
    "reauthentication",
    "invalid_rapt",
    "unauthenticated",
)


def next_step(text: str, stack_name: str, project: str | None, again: str) -> str:
    """What to do about the failure the engine's TEXT describes."""
    if "currently locked by" in text or "Another update is currently in progress" in text:
        # course-vm env sets up the shell (POSIX or PowerShell) for the raw CLI: backend, passphrase, directory.
        return (
            f"if no other `up` or `down` of stack {stack_name} is still running, clear its lock with "
            f"`pulumi cancel --yes --stack {stack_name}` in a shell set up by `course-vm env` "
            '(`eval "$(course-vm env)"`; PowerShell: `course-vm env | Out-String | Invoke-Expression`), '
            f"then run {again}"
        )
    api = re.search(r"apis/api/([\w.-]+)/overview\?project=([\w-]+)", text)
    named = re.search(r"has not been used in project ([\w-]+)", text)
    if api or named or "SERVICE_DISABLED" in text or "accessNotConfigured" in text:
        service = api.group(1) if api else "compute.googleapis.com"
        where = api.group(2) if api else named.group(1) if named else project or "YOUR-PROJECT-ID"
        return (
            f"enable the API with `gcloud services enable {service} --project {where}`, wait a minute, then run {again}"
        )
    if re.search(r"QUOTA_EXCEEDED|quotaExceeded|Quota '[^']*' exceeded|quota exceeded", text, re.IGNORECASE):
        page = "https://console.cloud.google.com/iam-admin/quotas" + (f"?project={project}" if project else "")
        return f"ask for more quota at {page}, or use another zone (--zone) or a smaller machineType; then run {again}"
    if any(marker in text.lower() for marker in _CREDENTIALS):
        return f"log in for applications with `gcloud auth application-default login`, then run {again}"
    return f"act on the engine's lines above, then run {again}"
