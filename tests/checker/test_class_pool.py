"""Checking a class: a bounded pool, one row per student, and no failure hiding another's result."""

from __future__ import annotations

import threading
import time

import pytest

from provisioner.access.ssh import Target
from provisioner.checker.class_pool import ClassReport, StudentResult, check_class
from provisioner.errors import UnreachableError
from provisioner.local.vm import free_loopback_port
from tests.support.sshd import Sshd


def target_of(server: Sshd, port: int | None = None) -> Target:
    return Target("127.0.0.1", port or server.port, server.user, server.client_key, (server.host_key,))


@pytest.mark.integration
def test_each_student_gets_a_row_whatever_happened_to_the_others(ready_sshd: Sshd) -> None:
    def broken(_deadline: float) -> Target:
        raise RuntimeError("the roster entry has no ip")

    report = check_class(
        {
            "alice": lambda _: target_of(ready_sshd),
            "bob": lambda _: target_of(ready_sshd, port=free_loopback_port()),
            "carol": broken,
        },
        timeout=5,
    )
    alice, bob, carol = report.results
    assert [r.student for r in report.results] == ["alice", "bob", "carol"], "roster order, not finishing order"
    assert alice.ok and alice.report is not None and alice.detail() == "all checks passed"
    assert not bob.ok and bob.exit_code == UnreachableError.exit_code and "could not log in" in bob.error
    assert not carol.ok and carol.detail() == "unexpected error: RuntimeError: the roster entry has no ip"
    assert report.exit_code == 3 and not report.ok
    assert report.as_json()["students"]["alice"]["ok"] is True  # type: ignore[index]


@pytest.mark.integration
def test_a_failed_check_names_the_check_in_the_row(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "denied")
    [row] = check_class({"alice": lambda _: target_of(ready_sshd)}, timeout=30).results
    assert row.exit_code == 1
    assert row.detail().startswith("docker hello-world: `docker run --rm hello-world` exited 126: ")


def test_no_more_than_workers_run_at_once() -> None:
    lock = threading.Lock()
    running, most = 0, 0

    def slow(_deadline: float) -> Target:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        raise UnreachableError("stand-in: no VM behind this target")

    started = time.monotonic()
    report = check_class({f"s{i}": slow for i in range(9)}, timeout=10, workers=3)
    assert most == 3
    assert len(report.results) == 9 and report.exit_code == 3
    assert time.monotonic() - started >= 0.6, "nine checks on three workers take three rounds"


def test_the_table_lines_up_and_counts_the_ready() -> None:
    report = ClassReport(
        (
            StudentResult("alice", 12.25, error="could not log in", exit_code=3),
            StudentResult("bo", 1.0, error="bad key", exit_code=2),
        )
    )
    assert report.table().splitlines() == [
        "STUDENT  HOST  RESULT     TIME  DETAIL",
        "alice    -     FAILED    12.2s  could not log in",
        "bo       -     FAILED     1.0s  bad key",
        "0 of 2 VMs ready; see FAILED rows",
    ]
    assert check_class({}).ok and check_class({}).exit_code == 0
