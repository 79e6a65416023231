"""Benchmark: checking a class of 20 ready VMs takes less than twice as long as checking one.

The VMs are real OpenSSH servers on loopback (tests/support/sshd.py: a throwaway user each, with stand-ins
for cloud-init and docker behind them), reached through a proxy per VM that delays every packet by
half of --rtt-ms each way, standing in for the network between a laptop and a GCP region (40 ms
round trip by default). What is measured is course-vm's side: SSH logins, the checks' round trips
and the worker pool. Needs root (it creates the users) and Debian's sshd.

    sudo venv/bin/python benchmarks/check_class.py [--targets 20] [--rounds 3] [--rtt-ms 40]

Prints the time for one VM, for all of them at once, and their ratio; exits 1 if the ratio is 2 or
more. With --rtt-ms 0 the 20 sshd instances, which on GCP would be 20 machines, share this one
machine's cores: that ratio measures how fast this machine runs 20 servers, not the checker, so
the script prints the CPU time the run took as well.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from provisioner.access.ssh import Target
from provisioner.checker.class_pool import DEFAULT_WORKERS, TargetSource, check_class
from provisioner.local.vm import free_loopback_port
from tests.conftest import wait_for_port
from tests.support.sshd import Sshd, make_sshd, remove_sshd

GOAL = 2.0


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Copy READER to WRITER, each chunk DELAY seconds later, in order, then close WRITER."""
    loop = asyncio.get_running_loop()
    try:
        while data := await reader.read(65536):
            loop.call_later(delay, writer.write, data)
    except ConnectionError:
        pass
    loop.call_later(delay, writer.close)


async def _serve(routes: list[tuple[int, int]], delay: float, ready: multiprocessing.synchronize.Event) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(_forward(reader, server_writer, delay), _forward(server_reader, writer, delay))

    for listen, port in routes:
        await asyncio.start_server(functools.partial(connection, port=port), "127.0.0.1", listen)
    ready.set()
    await asyncio.Event().wait()


def _proxy(routes: list[tuple[int, int]], delay: float, ready: multiprocessing.synchronize.Event) -> None:
    asyncio.run(_serve(routes, delay, ready))


def _cpu_seconds() -> float:
    """CPU time the whole machine spent busy so far (all processes, all cores)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / 100


def timed(targets: dict[str, TargetSource], workers: int) -> tuple[float, float]:
    """(seconds, machine CPU seconds) to check TARGETS."""
    started, cpu = time.monotonic(), _cpu_seconds()
    report = check_class(targets, timeout=120, workers=workers)
    seconds, cpu = time.monotonic() - started, _cpu_seconds() - cpu
    if not report.ok:
        raise SystemExit("a stand-in VM failed its check:\n" + report.table())
    return seconds, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="each time is the median of this many runs")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    parser.add_argument("--rtt-ms", type=float, default=40.0, help="network round trip to each VM (0: none)")
    args = parser.parse_args()

    servers: list[Sshd] = []
    fork = multiprocessing.get_context("fork")
    proxy: multiprocessing.context.ForkProcess | None = None
    try:
        for _ in range(args.targets):
            server = make_sshd()
            servers.append(server)
            server.authorize()
            server.start()
        for server in servers:
            wait_for_port(server.port)
        ports = {server.port: server.port for server in servers}
        if args.rtt_ms > 0:
            ports = {server.port: free_loopback_port() for server in servers}
            ready = fork.Event()
            routes = [(listen, port) for port, listen in ports.items()]
            proxy = fork.Process(target=_proxy, args=(routes, args.rtt_ms / 2000, ready), daemon=True)
            proxy.start()
            ready.wait(30)

        def source(server: Sshd) -> TargetSource:
            target = Target("127.0.0.1", ports[server.port], server.user, server.client_key, (server.host_key,))
            return lambda _deadline: target

        targets = {f"student{i:02d}": source(server) for i, server in enumerate(servers)}
        first = dict(list(targets.items())[:1])
        timed(first, args.workers)  # warm up: imports, first connections
        one = [timed(first, args.workers) for _ in range(args.rounds)]
        many = [timed(targets, args.workers) for _ in range(args.rounds)]
    finally:
        if proxy is not None:
            proxy.kill()
        for server in servers:
            remove_sshd(server)

    one_s, many_s = statistics.median(s for s, _ in one), statistics.median(s for s, _ in many)
    many_cpu = statistics.median(c for _, c in many)
    ratio = many_s / one_s
    verdict = "ok" if ratio < GOAL else "MISSED"
    print(f"check 1 VM:            {one_s:6.2f} s (median of {args.rounds})")
    print(f"check {args.targets} VMs at once:  {many_s:6.2f} s (median of {args.rounds}, {args.workers} workers)")
    print(f"ratio:                 {ratio:6.2f}x (goal: under {GOAL:.0f}x) {verdict}")
    print(
        f"network: {args.rtt_ms:.0f} ms round trip; this machine's CPU busy {many_cpu:.2f} s "
        f"while checking {args.targets} VMs (servers included)"
    )
    return 0 if ratio < GOAL else 1


if __name__ == "__main__":
    raise SystemExit(main())
