"""The checker against a real sshd (stand-ins for docker, cloud-init and friends; see tests/support/sshd.py)."""

from __future__ import annotations

import json
import pwd
import re
import subprocess
import threading
import time

import pytest

from provisioner.access.ssh import CommandResult, Target
from provisioner.access.ssh import run as ssh_run
from provisioner.checker import checks
from provisioner.checker.checks import CheckResult, Report, _parse_status, check_vm, diagnose_output_log
from provisioner.checker.class_pool import StudentResult
from provisioner.cli.console import print_report
from tests.support.sshd import Sshd, processes_of

NAMES = ["cloud-init", "docker hello-world", "docker-compose on PATH", "conda on PATH", "docker enabled at boot"]

FAILED_LOG = """\
[course-vm] BEGIN docker-compose
[course-vm] BEGIN packages
[course-vm] BEGIN anaconda
  docker-compose| checksum mismatch for https://mirror/compose: expected sha256 0000, got 1111
[course-vm] FAILED docker-compose exit=1
[course-vm] END packages 80s
[course-vm] END anaconda 150s
[course-vm] FAILED setup exit=1 after 151s: see the FAILED step above
"""


def target(sshd: Sshd) -> Target:
    return Target("127.0.0.1", sshd.port, sshd.user, sshd.client_key, (sshd.host_key,))


def by_name(report: Report) -> dict[str, CheckResult]:
    return {c.name: c for c in report.checks}


@pytest.mark.integration
def test_ready_vm_passes_every_check(ready_sshd: Sshd) -> None:
    messages: list[str] = []
    report = check_vm(target(ready_sshd), timeout=30, progress=messages.append)
    assert [c.name for c in report.checks] == NAMES
    assert report.ok, report.table()
    checks = by_name(report)
    assert checks["docker hello-world"].detail == "Hello from Docker!"
    assert checks["docker-compose on PATH"].detail == "Docker Compose version v2.6.1"
    assert checks["conda on PATH"].detail == "conda 4.12.0"
    assert "logged in; waiting for cloud-init to finish" in messages
    # One login: the VM was ready when it logged in, so its groups are those of a fresh login.
    assert ready_sshd.log.count("Accepted publickey") == 1
    table = report.table()
    assert table.splitlines()[0].split() == ["CHECK", "RESULT", "TIME", "DETAIL"]
    assert table.endswith("127.0.0.1: all checks passed")
    document = report.as_json()
    assert json.loads(json.dumps(document)) == document
    assert document["ok"] is True and document["host"] == "127.0.0.1"
    assert set(document["checks"][0]) == {"name", "ok", "seconds", "detail"}  # type: ignore[index]


@pytest.mark.integration
def test_path_only_from_interactive_bashrc_is_what_counts(ready_sshd: Sshd) -> None:
    # Without the .bashrc lines, docker-compose and conda are not found: the checks must see that.
    (ready_sshd.home / ".bashrc").write_text("# nothing\n")
    checks = by_name(check_vm(target(ready_sshd), timeout=30))
    assert not checks["docker-compose on PATH"].ok
    assert "docker-compose: command not found" in checks["docker-compose on PATH"].detail
    assert not checks["conda on PATH"].ok


@pytest.mark.integration
def test_cloud_init_error_names_the_failed_recipe_step(ready_sshd: Sshd) -> None:
    ready_sshd.set("cloud-init.json", json.dumps({"status": "error", "errors": ["('scripts_user', RuntimeError())"]}))
    ready_sshd.set("cloud-init.rc", "1")
    ready_sshd.set("output.log", FAILED_LOG)
    report = check_vm(target(ready_sshd), timeout=30)
    assert not report.ok
    cloud = by_name(report)["cloud-init"]
    assert not cloud.ok
    assert cloud.detail.startswith(
        "status: error (('scripts_user', RuntimeError())). recipe step 'docker-compose' "
        "failed (exit 1): checksum mismatch for https://mirror/compose"
    )
    assert "[course-vm] FAILED setup exit=1" in cloud.detail
    assert "FAILED: the VM is not ready" in report.table()


@pytest.mark.integration
def test_degraded_cloud_init_passes_with_a_note(ready_sshd: Sshd) -> None:
    ready_sshd.set(
        "cloud-init.json",
        json.dumps(
            {
                "status": "done",
                "extended_status": "degraded done",
                "errors": [],
                "recoverable_errors": {"WARNING": ["Failed to set locale"]},
            }
        ),
    )
    ready_sshd.set("cloud-init.rc", "2")
    cloud = by_name(check_vm(target(ready_sshd), timeout=30))["cloud-init"]
    assert cloud.ok
    assert cloud.detail == "done with recoverable errors: WARNING: Failed to set locale"


@pytest.mark.integration
def test_cloud_init_still_running_at_the_deadline(ready_sshd: Sshd) -> None:
    (ready_sshd.state / "result.json").unlink()
    ready_sshd.set("cloud-init.json", '{"status": "running"}')
    ready_sshd.set(
        "output.log", "[course-vm] BEGIN anaconda\n[course-vm] BEGIN packages\n[course-vm] END packages 3s\n"
    )
    report = check_vm(target(ready_sshd), timeout=4)
    cloud = by_name(report)["cloud-init"]
    assert not cloud.ok
    assert cloud.detail.startswith("still running after ")
    assert cloud.detail.endswith("recipe steps still running: anaconda")
    # The remote wait the checker gave up on ends by itself, soon: nothing keeps running on the VM.
    uid = pwd.getpwnam(ready_sshd.user).pw_uid
    deadline = time.monotonic() + 10
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(uid) == []


@pytest.mark.integration
def test_an_early_stage_error_does_not_end_the_wait_before_the_recipe(ready_sshd: Sshd) -> None:
    # cloud-init 22.4's `status --wait` returns "error" while the final stage still runs; the
    # checker must wait for all stages (result.json) and read the status then.
    (ready_sshd.state / "result.json").unlink()
    ready_sshd.set("cloud-init.json", '{"status": "error", "errors": ["early"]}')

    def finish() -> None:
        ready_sshd.set("cloud-init.json", '{"status": "done", "errors": []}')
        ready_sshd.set("result.json", "{}")

    timer = threading.Timer(2.0, finish)
    timer.start()
    try:
        cloud = by_name(check_vm(target(ready_sshd), timeout=30))["cloud-init"]
    finally:
        timer.cancel()
    assert cloud.ok, cloud.detail
    assert cloud.seconds >= 1.5


@pytest.mark.integration
def test_a_login_from_before_the_setup_changed_groups_is_not_used_for_the_checks(ready_sshd: Sshd) -> None:
    # As on a new VM: the checker logs in while cloud-init runs, then the setup adds the student to
    # a group (docker). That login lacks the group; the checks must run in a new one.
    (ready_sshd.state / "result.json").unlink()
    group = f"{ready_sshd.user}g"

    def setup_adds_a_group() -> None:
        subprocess.run(["groupadd", group], check=True)
        subprocess.run(["usermod", "-aG", group, ready_sshd.user], check=True)
        ready_sshd.set("result.json", "{}")

    timer = threading.Timer(1.0, setup_adds_a_group)
    timer.start()
    try:
        report = check_vm(target(ready_sshd), timeout=30)
    finally:
        timer.cancel()
        timer.join()
        subprocess.run(["gpasswd", "-d", ready_sshd.user, group], check=False, capture_output=True)
        subprocess.run(["groupdel", group], check=False, capture_output=True)
    assert report.ok, report.table()
    assert ready_sshd.log.count("Accepted publickey") == 2


@pytest.mark.integration
def test_a_cloud_init_without_json_status_is_read_in_its_text_form(ready_sshd: Sshd) -> None:
    ready_sshd.set("cloud-init.txt", "status: error\ndetail:\nsome stage failed\nerrors:\n\t- step broke\n")
    ready_sshd.set("cloud-init.rc", "1")
    cloud = by_name(check_vm(target(ready_sshd), timeout=30))["cloud-init"]
    assert not cloud.ok
    assert cloud.detail.startswith("status: error"), cloud.detail


@pytest.mark.integration
def test_docker_permission_denied_fails_that_check_only(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "denied")
    report = check_vm(target(ready_sshd), timeout=30)
    failed = [c.name for c in report.checks if not c.ok]
    assert failed == ["docker hello-world"]
    assert by_name(report)["docker hello-world"].detail == (
        "`docker run --rm hello-world` exited 126: docker: permission denied while trying to connect to the "
        "Docker daemon socket"
    )


@pytest.mark.integration
def test_docker_daemon_down_fails_that_check_only(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "daemon-down")
    report = check_vm(target(ready_sshd), timeout=30)
    assert [c.name for c in report.checks if not c.ok] == ["docker hello-world"]
    assert by_name(report)["docker hello-world"].detail == (
        "`docker run --rm hello-world` exited 1: docker: Cannot connect to the Docker daemon at "
        "unix:///var/run/docker.sock. Is the docker daemon running?"
    )


@pytest.mark.integration
def test_docker_exiting_0_without_the_greeting_fails_that_check(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "no-greeting")
    report = check_vm(target(ready_sshd), timeout=30)
    assert [c.name for c in report.checks if not c.ok] == ["docker hello-world"]
    assert "Downloaded newer image for hello-world:latest" in by_name(report)["docker hello-world"].detail


@pytest.mark.integration
def test_connection_dropping_mid_check_is_reported_and_later_checks_still_run(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "drop")
    report = check_vm(target(ready_sshd), timeout=30)
    checks = by_name(report)
    assert not report.ok
    assert "lost its connection" in checks["docker hello-world"].detail
    assert [c.name for c in report.checks] == NAMES


@pytest.mark.integration
def test_docker_not_enabled_at_boot(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker-enabled", "disabled")
    report = check_vm(target(ready_sshd), timeout=30)
    assert [c.name for c in report.checks if not c.ok] == ["docker enabled at boot"]
    assert (
        by_name(report)["docker enabled at boot"].detail == "`systemctl is-enabled docker.service` exited 0: disabled"
    )


@pytest.mark.integration
def test_escape_sequences_from_the_vm_never_reach_the_terminal(
    ready_sshd: Sshd, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a compromised or careless VM could print: a clipboard write (OSC 52), a screen clear (CSI),
    # an 8-bit CSI and a bell, in every place the report quotes the VM.
    osc52, csi = "\x1b]52;c;cm0gLXJmIH4K\x07", "\x1b[2J\x1b[31m"
    ready_sshd.set(
        "cloud-init.json", json.dumps({"status": "error", "errors": [f"boom{osc52}{csi}", "bell\x07\x9b0m"]})
    )
    ready_sshd.set("cloud-init.rc", "1")
    ready_sshd.set("output.log", FAILED_LOG.replace("checksum mismatch", f"{csi}checksum{osc52} mismatch"))
    ready_sshd.set("docker", f"Hello{osc52} from{csi} Docker?")
    report = check_vm(target(ready_sshd), timeout=30)
    for check in report.checks:
        assert not any(c in check.detail for c in "\x1b\x07\x9b"), check
    assert print_report(report, as_json=False) == 1
    printed = capsys.readouterr().out
    assert "\x1b" not in printed and "\x07" not in printed and "\x9b" not in printed
    cloud = by_name(report)["cloud-init"]
    assert cloud.detail.startswith("status: error (boom; bell\\x07). recipe step 'docker-compose' failed (exit 1): ")
    assert "checksum mismatch for https://mirror/compose" in cloud.detail
    assert by_name(report)["docker hello-world"].detail.endswith("exited 0: Hello from Docker?")


def test_a_report_built_by_hand_holds_only_printable_text() -> None:
    # The records clean what they are given: whatever builds a report cannot let a sequence through.
    check = CheckResult("docker hello-world", False, 1.0, "\x1b]52;c;eA==\x07denied\x1b[0m")
    assert check.detail == "denied"
    student = StudentResult("alice", 1.0, error='could not log in: Indecipherable protocol version "\x1b[2J"')
    assert student.error == 'could not log in: Indecipherable protocol version ""'


def test_diagnosis_without_markers_shows_the_tail() -> None:
    text = "\n".join(f"line {i}" for i in range(40))
    assert diagnose_output_log(text) == (
        "no recipe step failed; last lines of /var/log/cloud-init-output.log:\n"
        + "\n".join(f"line {i}" for i in range(25, 40))
    )
    assert diagnose_output_log("") == "/var/log/cloud-init-output.log is empty or unreadable"


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ('{"status": "done", "errors": []}', ("done", [])),
        ('{"status": "error", "extended_status": "error - done", "errors": ["boom"]}', ("error - done", ["boom"])),
        ("\nstatus: done\n", ("done", [])),
        (
            "status: error\ndetail:\nDataSourceGCE\nerrors:\n\t- ('scripts_user', Err())\n",
            ("error", ["('scripts_user', Err())"]),
        ),
        ("garbage", ("", [])),
    ],
)
def test_cloud_init_status_is_read_in_json_and_the_old_text_form(output: str, expected: tuple[str, list[str]]) -> None:
    assert _parse_status(output) == expected


def wait_for_no_processes(uid: int, seconds: float = 15) -> list[str]:
    deadline = time.monotonic() + seconds
    while processes_of(uid) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_of(uid)


@pytest.mark.integration
def test_every_remote_command_is_bounded_on_the_vm_itself(ready_sshd: Sshd, monkeypatch: pytest.MonkeyPatch) -> None:
    # Closing a channel does not stop a command without a terminal: each must end by itself.
    sent: list[str] = []

    def recording(client: object, command: str, timeout: float) -> CommandResult:
        sent.append(command)
        return ssh_run(client, command, timeout)  # type: ignore[arg-type]

    monkeypatch.setattr(checks, "run", recording)
    assert check_vm(target(ready_sshd), timeout=30).ok
    assert len(sent) >= 6
    assert [c for c in sent if not re.match(r"timeout -k \d+ \d+ bash -c ", c)] == []


@pytest.mark.integration
def test_a_check_that_times_out_leaves_nothing_running_on_the_vm(
    ready_sshd: Sshd, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready_sshd.set("docker", "hang")
    monkeypatch.setattr(checks, "HELLO_WORLD_TIMEOUT", 2.0)
    hello = by_name(check_vm(target(ready_sshd), timeout=30))["docker hello-world"]
    assert not hello.ok
    assert hello.detail == "`docker run --rm hello-world` did not finish within 2s"
    assert wait_for_no_processes(pwd.getpwnam(ready_sshd.user).pw_uid) == []


@pytest.mark.integration
def test_while_cloud_init_runs_the_check_says_which_step_runs_when_it_changes(ready_sshd: Sshd) -> None:
    (ready_sshd.state / "result.json").unlink()
    ready_sshd.set("cloud-init.json", '{"status": "running"}')
    ready_sshd.set("output.log", "[course-vm] BEGIN account\n")

    def later(seconds: float, log: str, finished: bool = False) -> threading.Timer:
        def step() -> None:
            ready_sshd.set("output.log", log)
            if finished:
                ready_sshd.set("cloud-init.json", '{"status": "done", "errors": []}')
                ready_sshd.set("result.json", "{}")

        timer = threading.Timer(seconds, step)
        timer.start()
        return timer

    two = "[course-vm] BEGIN account\n[course-vm] END account 1s\n"
    two += "[course-vm] BEGIN anaconda\n[course-vm] BEGIN packages\n"
    three = two + "[course-vm] END packages 4s\n"
    done = three + "[course-vm] END anaconda 9s\n[course-vm] DONE 10s\n"
    # Each state lasts longer than a poll (POLL_SECONDS), so each is seen.
    timers = [later(3, two), later(8, three), later(13, done), later(18, done, finished=True)]
    messages: list[str] = []
    try:
        report = check_vm(target(ready_sshd), timeout=60, progress=messages.append)
    finally:
        for timer in timers:
            timer.cancel()
    assert by_name(report)["cloud-init"].ok
    setup = [m for m in messages if m.startswith("setup:")]
    assert [re.sub(r"\d+s", "Ns", m) for m in setup] == [
        "setup: running account (begun before this check)",
        "setup: running anaconda (for Ns), packages (for Ns); done: account Ns",
        "setup: running anaconda (for Ns); done: account Ns, packages Ns",
        "setup: done in Ns; cloud-init is finishing",
    ]
    assert (
        setup[-2].endswith("done: account 1s, packages 4s")
        and setup[-1] == "setup: done in 10s; cloud-init is finishing"
    )
