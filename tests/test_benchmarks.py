"""The benchmarks still run and print their numbers (their speed goals are not asserted here)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_the_class_check_benchmark_prints_both_times_and_the_ratio(ready_sshd: object) -> None:
    # ready_sshd: the benchmark needs what the sshd tests need (root, Debian's sshd), and skips or
    # fails the same way when it is missing.
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "check_class.py"), "--targets", "3", "--rounds", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: the goal was missed, which is not a test failure
    lines = result.stdout.splitlines()
    assert re.fullmatch(r"check 1 VM: +\d+\.\d\d s \(median of 1\)", lines[0]), result.stdout
    assert re.fullmatch(r"check 3 VMs at once: +\d+\.\d\d s \(median of 1, 32 workers\)", lines[1]), result.stdout
    assert re.fullmatch(r"ratio: +\d+\.\d\dx \(goal: under 2x\) (ok|MISSED)", lines[2]), result.stdout
    assert lines[3].startswith("network: 40 ms round trip; this machine's CPU busy "), result.stdout


def test_the_ssh_idle_traffic_measurement_prints_each_session_the_floor_and_the_ratio(ready_sshd: object) -> None:
    # ready_sshd: as above; the measurement makes its own sshd and user.
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "ssh_idle_traffic.py"), "--seconds", "6"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode in (0, 1), result.stderr  # 1: an idle session moved more than the floor
    lines = result.stdout.splitlines()
    assert len(lines) == 7, result.stdout
    for line in lines[:5]:
        assert re.fullmatch(r".+: +\d+ bytes/minute", line), result.stdout
    assert re.fullmatch(r"floor \(ACTIVE_BYTES\): +65536 bytes/minute", lines[5]), result.stdout
    assert re.fullmatch(r"ratio: \d+\.\dx the busiest idle session \(measured over \d+ s\)", lines[6]), result.stdout
