"""Benchmark: checking a class of 20 ready VMs takes less than twice as long as checking one.

The VMs are real OpenSSH servers on loopback (tests/sshd.py: a throwaway user each, with stand-ins
for cloud-init and docker behind them), so what is measured is course-vm's side: SSH logins, the
checks' round trips and the worker pool. Needs root (it creates the users) and Debian's sshd.

    sudo venv/bin/python benchmarks/check_class.py [--targets 20] [--rounds 3]

Prints the time for one target, for all targets, and their ratio; exits 1 if the ratio is 2 or more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.class_checker import DEFAULT_WORKERS, TargetSource, check_class
from provisioner.ssh import Target
from tests.conftest import wait_for_port
from tests.sshd import Sshd, make_sshd, remove_sshd

GOAL = 2.0


def source(server: Sshd) -> TargetSource:
    target = Target("127.0.0.1", server.port, server.user, server.client_key, (server.host_key,))
    return lambda _deadline: target


def timed(targets: dict[str, TargetSource], workers: int) -> float:
    started = time.monotonic()
    report = check_class(targets, timeout=120, workers=workers)
    seconds = time.monotonic() - started
    if not report.ok:
        raise SystemExit("a stand-in VM failed its check:\n" + report.table())
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="each time is the median of this many runs")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    args = parser.parse_args()

    servers: list[Sshd] = []
    try:
        for _ in range(args.targets):
            server = make_sshd()
            servers.append(server)
            server.authorize()
            server.start()
        for server in servers:
            wait_for_port(server.port)
        targets = {f"student{i:02d}": source(server) for i, server in enumerate(servers)}
        first = dict(list(targets.items())[:1])
        timed(first, args.workers)  # warm up: imports, first connections
        one = statistics.median(timed(first, args.workers) for _ in range(args.rounds))
        many = statistics.median(timed(targets, args.workers) for _ in range(args.rounds))
    finally:
        for server in servers:
            remove_sshd(server)

    ratio = many / one
    verdict = "ok" if ratio < GOAL else "MISSED"
    print(f"check 1 VM:            {one:6.2f} s (median of {args.rounds})")
    print(f"check {args.targets} VMs at once:  {many:6.2f} s (median of {args.rounds}, {args.workers} workers)")
    print(f"ratio:                 {ratio:6.2f}x (goal: under {GOAL:.0f}x) {verdict}")
    return 0 if ratio < GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
