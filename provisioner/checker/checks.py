"""The checker: wait for cloud-init, then check the VM the way a student uses it, as named predicates."""

from __future__ import annotations

import json
import math
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import paramiko

from provisioner.access.host_keys import HostKey
from provisioner.access.ssh import CommandResult, Progress, Target, connect_published, load_identity, run
from provisioner.terminal import printable

DEFAULT_TIMEOUT = 180.0
"""`check`'s one deadline for logging in and the setup being over. A VM whose setup is done needs
seconds; one just started again (`start`, after an idle stop) a minute or two to boot. A VM whose
setup still runs needs NEW_VM_TIMEOUT: `check --timeout` waits for it, saying which step runs."""
NEW_VM_TIMEOUT = 1800.0  # Anaconda alone takes minutes on a small VM: `local up`'s default, which boots a new one
CHECK_TIMEOUT = 120.0
HELLO_WORLD_TIMEOUT = 300.0  # includes pulling the image
POLL_SECONDS = 3.0
"""How often the checker looks at a setup that still runs: a changed step is reported this late at most."""
STILL_RUNNING_SECONDS = 60.0
"""How often an unchanged setup is reported again, so that a long step (Anaconda) is not taken for a hang."""
KILL_GRACE = 5
OUTPUT_LOG = "/var/log/cloud-init-output.log"
_MARKER = r"^\[course-vm\] "
# The log is root:adm 0640 on Ubuntu; the course user has passwordless sudo, other targets may not.
_READ_LOG = f"sudo -n tail -n 300 {OUTPUT_LOG} 2>/dev/null || tail -n 300 {OUTPUT_LOG}"
# One look at the setup: `running` and the recipe's markers so far, or `finished` and cloud-init's status.
# `cloud-init status --wait` returns as soon as any stage reports an error, even while the final
# stage (the recipe) still runs (seen with 22.4); result.json appears only when all stages are over.
# (COURSE_VM_CLOUD_INIT_RESULT lets the sshd tests stand in for that file.) The status is JSON where
# `--format` exists (22.1 and later), else the text form, which older releases print.
_SETUP_STATE = (
    'R="${COURSE_VM_CLOUD_INIT_RESULT:-/run/cloud-init/result.json}"; '
    'if [ ! -e "$R" ]; then case $(cloud-init status 2>/dev/null) in *disabled*|*"not run"*) ;; *) '
    f"echo running; {{ sudo -n grep -a '{_MARKER}' {OUTPUT_LOG} 2>/dev/null || "
    f"grep -a '{_MARKER}' {OUTPUT_LOG} 2>/dev/null; }} | tail -n 200; exit 0;; esac; fi; "
    "echo finished; out=$(cloud-init status --format json 2>/dev/null); rc=$?; "
    'if [ -n "$out" ]; then printf \'%s\\n\' "$out"; exit "$rc"; fi; '
    "cloud-init status --long"
)
# This login's group ids, then the user's group ids in the group database.
_GROUPS = 'id -G; id -G "$(id -un)"'


def bounded(command: str, seconds: float) -> str:
    """COMMAND as sent to the VM: ended there by `timeout` (TERM, then KILL after KILL_GRACE s) just after
    the checker stops waiting for it. Closing the channel does not stop a command without a terminal,
    and `timeout` signals its whole process group, so nothing the command started outlives it."""
    return f"timeout -k {KILL_GRACE} {math.ceil(seconds) + 1} bash -c {shlex.quote(command)}"


def _run(client: paramiko.SSHClient, command: str, seconds: float) -> CommandResult:
    """Run COMMAND on the VM for at most SECONDS, bounded there too (see `bounded`); the result names COMMAND."""
    return replace(run(client, bounded(command, seconds), seconds), command=command)


@dataclass(frozen=True)
class CheckResult:
    """One row of the report; its detail, which quotes the VM, holds only printable text."""

    name: str
    ok: bool
    seconds: float
    detail: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "detail", printable(self.detail))


@dataclass(frozen=True)
class Report:
    """Every check run against one VM; `ok` only when all passed."""

    host: str
    checks: tuple[CheckResult, ...]
    host_keys: tuple[HostKey, ...] = ()
    """The host keys the checker logged in with: the VM's published ones if they changed meanwhile."""

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def as_json(self) -> dict[str, object]:
        return {"host": self.host, "ok": self.ok, "checks": [asdict(c) for c in self.checks]}

    def table(self) -> str:
        """A readable table: check, result, time, detail (continuation lines indented)."""
        width = max([len("CHECK"), *(len(c.name) for c in self.checks)])
        lines = [f"{'CHECK':<{width}}  RESULT  {'TIME':>7}  DETAIL"]
        for c in self.checks:
            first, *rest = c.detail.splitlines() or [""]
            lines.append(f"{c.name:<{width}}  {'ok' if c.ok else 'FAILED':<6}  {c.seconds:>6.1f}s  {first}")
            lines += [f"{'':<{width + 26}}{line}" for line in rest]
        verdict = "all checks passed" if self.ok else "FAILED: the VM is not ready"
        lines.append(f"{self.host}: {verdict}")
        return "\n".join(lines)


def _command_check(
    name: str,
    client: paramiko.SSHClient,
    command: str,
    timeout: float,
    passed: Callable[[CommandResult], bool],
    success: Callable[[CommandResult], str],
) -> CheckResult:
    result = _run(client, command, timeout)
    ok = result.ok and passed(result)
    return CheckResult(name, ok, round(result.seconds, 1), success(result) if ok else result.summary())


def _first_line(result: CommandResult) -> str:
    lines = result.stdout.strip().splitlines()
    return lines[0] if lines else ""


def _last_line(result: CommandResult) -> str:
    lines = result.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def docker_hello_world(client: paramiko.SSHClient) -> CheckResult:
    """`docker run --rm hello-world` as the course user, without sudo, prints Docker's greeting."""
    return _command_check(
        "docker hello-world",
        client,
        "docker run --rm hello-world",
        HELLO_WORLD_TIMEOUT,
        lambda r: "Hello from Docker!" in r.stdout,
        lambda r: "Hello from Docker!",
    )


def docker_compose_on_path(client: paramiko.SSHClient) -> CheckResult:
    """`docker-compose version` works in an interactive bash (its PATH line lives in ~/.bashrc)."""
    return _command_check(
        "docker-compose on PATH",
        client,
        "bash -ic 'docker-compose version' </dev/null",
        CHECK_TIMEOUT,
        lambda r: "version" in r.stdout.lower(),
        _last_line,
    )


def conda_on_path(client: paramiko.SSHClient) -> CheckResult:
    """`conda --version` works in an interactive bash (conda init wrote ~/.bashrc)."""
    return _command_check(
        "conda on PATH",
        client,
        "bash -ic 'conda --version' </dev/null",
        CHECK_TIMEOUT,
        lambda r: r.stdout.strip().startswith("conda "),
        _last_line,
    )


def docker_enabled_at_boot(client: paramiko.SSHClient) -> CheckResult:
    """docker.service starts at the next boot too."""
    return _command_check(
        "docker enabled at boot",
        client,
        "systemctl is-enabled docker.service",
        CHECK_TIMEOUT,
        lambda r: _first_line(r) == "enabled",
        lambda r: "docker.service enabled",
    )


STUDENT_CHECKS = (docker_hello_world, docker_compose_on_path, conda_on_path, docker_enabled_at_boot)


def cloud_init_finished(client: paramiko.SSHClient, timeout: float, progress: Progress = lambda _: None) -> CheckResult:
    """cloud-init finished without errors; if not, which recipe step failed and the log's tail.

    While it runs, PROGRESS hears which recipe steps run and which are done, when that changes.
    """
    started = time.monotonic()
    deadline = started + timeout
    watch = _SetupWatch(progress, started)
    while True:
        result = _run(client, _SETUP_STATE, max(min(deadline - time.monotonic(), 60.0), 1.0))
        state, _, rest = result.stdout.partition("\n")
        if state == "finished":
            break
        seconds = round(time.monotonic() - started, 1)
        if result.connection_lost:
            return CheckResult("cloud-init", False, seconds, result.summary())
        if state == "running":
            watch.saw(rest)
        if time.monotonic() >= deadline:
            running = f"still running after {seconds:.0f}s. " + _diagnose(client, running=True)
            return CheckResult("cloud-init", False, seconds, running)
        time.sleep(min(POLL_SECONDS, max(deadline - time.monotonic(), 0.0)))
    status, errors = _parse_status(rest)
    seconds = round(time.monotonic() - started, 1)
    if status in ("done", "degraded done"):
        clean = status == "done" and result.status == 0 and not errors
        recoverable = "; ".join(errors or ["see cloud-init status --long"])
        return CheckResult(
            "cloud-init", True, seconds, "done" if clean else f"done with recoverable errors: {recoverable}"
        )
    why = f"status: {status or 'unknown'}" + (f" ({'; '.join(errors)})" if errors else "")
    return CheckResult("cloud-init", False, seconds, f"{why}. " + _diagnose(client, running=False))


class _SetupWatch:
    """Says which recipe steps run (and since when) and which are done, from the markers of the setup's log:
    when that changes, and again every STILL_RUNNING_SECONDS while it does not."""

    def __init__(self, progress: Progress, started: float) -> None:
        self.progress, self.started = progress, started
        self.begun: dict[str, float | None] = {}  # when a step was first seen running; None: before the check
        self.last: tuple[object, ...] | None = None
        self.said = -math.inf

    def saw(self, log: str) -> None:
        now = time.monotonic()
        first_look = self.last is None
        ended = dict(re.findall(r"^\[course-vm\] END (\S+) (\d+)s", log, re.MULTILINE))
        failed = dict(re.findall(r"^\[course-vm\] FAILED (\S+) exit=(\d+)", log, re.MULTILINE))
        done = re.search(r"^\[course-vm\] DONE (\d+)s", log, re.MULTILINE)
        for step in re.findall(r"^\[course-vm\] BEGIN (\S+)", log, re.MULTILINE):
            self.begun.setdefault(step, None if first_look else now)
        running = [step for step in self.begun if step not in ended and step not in failed]
        state = (tuple(running), tuple(ended), tuple(failed), bool(done))
        if state == self.last and now - self.said < STILL_RUNNING_SECONDS:
            return
        self.last, self.said = state, now
        if done:
            self.progress(f"setup: done in {_duration(float(done.group(1)))}; cloud-init is finishing")
            return
        parts = []
        if running:
            parts.append("running " + ", ".join(f"{step} ({self._since(step, now)})" for step in running))
        if ended:
            parts.append("done: " + ", ".join(f"{step} {_duration(float(s))}" for step, s in ended.items()))
        if failed:
            parts.append("FAILED: " + ", ".join(f"{step} (exit {code})" for step, code in failed.items()))
        self.progress("setup: " + ("; ".join(parts) or "not begun yet"))

    def _since(self, step: str, now: float) -> str:
        begun = self.begun[step]
        if begun is not None:
            return f"for {_duration(now - begun)}"
        if now - self.started < POLL_SECONDS:
            return "begun before this check"
        return f"for over {_duration(now - self.started)}"


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}m{rest:02d}s" if minutes else f"{rest}s"


def _parse_status(output: str) -> tuple[str, list[str]]:
    """(status, errors) from `cloud-init status` JSON, or from its older text form."""
    try:
        document = json.loads(output)
    except ValueError:
        match = re.search(r"^status: (.+)$", output, re.MULTILINE)
        errors = re.findall(r"^\s+- (.+)$", output, re.MULTILINE)
        return (match.group(1).strip() if match else ""), errors
    if not isinstance(document, dict):
        return "", []
    status = str(document.get("extended_status") or document.get("status") or "")
    errors = [str(e) for e in document.get("errors") or []]
    recoverable = document.get("recoverable_errors") or {}
    if isinstance(recoverable, dict):
        errors += [f"{level}: {m}" for level, messages in recoverable.items() for m in messages]
    return status, errors


def _diagnose(client: paramiko.SSHClient, running: bool) -> str:
    log = _run(client, _READ_LOG, 30)
    return diagnose_output_log(log.stdout, running=running)


def diagnose_output_log(text: str, running: bool = False) -> str:
    """What the recipe's markers in cloud-init-output.log say: the failed (or current) step and the tail."""
    failed = re.findall(r"^\[course-vm\] FAILED (\S+) exit=(\d+)", text, re.MULTILINE)
    failed = [(step, code) for step, code in failed if step != "setup"]
    lines = text.rstrip().splitlines()
    if failed:
        step, code = failed[0]
        own = [line.split("| ", 1)[1] for line in lines if line.startswith(f"  {step}| ")][-8:]
        return (
            f"recipe step '{step}' failed (exit {code})"
            + (": " + " | ".join(own) if own else "")
            + "\nlast lines of "
            + OUTPUT_LOG
            + ":\n"
            + "\n".join(lines[-15:])
        )
    begun = re.findall(r"^\[course-vm\] BEGIN (\S+)", text, re.MULTILINE)
    ended = set(re.findall(r"^\[course-vm\] END (\S+)", text, re.MULTILINE))
    pending = [step for step in begun if step not in ended]
    if running and pending:
        return f"recipe steps still running: {', '.join(pending)}"
    if not lines:
        return f"{OUTPUT_LOG} is empty or unreadable"
    return "no recipe step failed; last lines of " + OUTPUT_LOG + ":\n" + "\n".join(lines[-15:])


def session_has_current_groups(client: paramiko.SSHClient) -> bool:
    """Whether this login's groups are the user's groups now, as a new login would get them.

    Group membership is fixed when a session logs in: a login made before the setup added the
    student to `docker` does not have that group, and checking through it would fail falsely.
    """
    result = _run(client, _GROUPS, CHECK_TIMEOUT)
    lines = result.stdout.splitlines()
    return result.ok and len(lines) == 2 and set(lines[0].split()) == set(lines[1].split())


def check_vm(target: Target, timeout: float = DEFAULT_TIMEOUT, progress: Progress = lambda _: None) -> Report:
    """Wait for the VM and cloud-init within TIMEOUT seconds, then run the student checks.

    The checks run as a fresh login would: in the first login if its groups are already current
    (the VM was ready when it logged in), else in a new one.
    Keys TARGET's VM publishes may change while it boots (see `connect_published`); the report
    holds the ones the checks ran with. Raises SshKeyError (bad input), UnreachableError (no login
    before the deadline) and HostKeyMismatchError (the VM is not the one whose key was pinned).
    """
    key = load_identity(target.identity)
    deadline = time.monotonic() + timeout
    progress(f"connecting to {target.user}@{target.host}:{target.port} (up to {timeout:.0f}s)")
    client, target = connect_published(target, key, deadline, progress)
    try:
        progress("logged in; waiting for cloud-init to finish")
        checks = [cloud_init_finished(client, max(deadline - time.monotonic(), 1.0), progress)]
        if not session_has_current_groups(client):
            client.close()
            client, target = connect_published(target, key, max(deadline, time.monotonic() + 60), progress)
        for check in STUDENT_CHECKS:
            progress(f"checking {check.__name__.replace('_', ' ')}")
            checks.append(check(client))
    finally:
        client.close()
    return Report(target.host, tuple(checks), target.host_keys)
