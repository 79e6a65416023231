"""The benchmarks still run and print their numbers (their speed goals are not asserted here)."""

from __future__ import annotations

import importlib.util
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


def test_the_bake_benchmark_prints_both_runs_the_bake_and_the_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    # The benchmark boots three VMs under TCG (about 8 minutes): run by hand, its figures in the README.
    # Here its report, from given times.
    spec = importlib.util.spec_from_file_location("bake_benchmark", ROOT / "benchmarks" / "bake.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bake_benchmark", module)  # where its dataclass looks itself up
    spec.loader.exec_module(module)
    lines = module.summary(module.Run(ready=120.0, setup=100.0), module.Run(ready=60.0, setup=10.0), 150.0)
    assert lines == [
        "plain image: ready  120.0 s, setup  100.0 s",
        "baked image: ready   60.0 s, setup   10.0 s",
        "bake (once per class):  150.0 s",
        "ready ratio: 0.50",
        "setup ratio: 0.10 (goal: 0.15 or less) ok",
    ]
    missed = module.summary(module.Run(ready=120.0, setup=100.0), module.Run(ready=90.0, setup=40.0), 150.0)
    assert missed[-1] == "setup ratio: 0.40 (goal: 0.15 or less) MISSED"
