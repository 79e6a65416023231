"""What an SSH session that is open but idle moves in a minute, against the idle stop's floor.

The idle stop (cloud-init/auto-stop.sh.j2) counts an SSH session as use only when its sshd process
reads and writes more than ACTIVE_BYTES between two runs a minute apart. This measures, with
Debian's real sshd (configured with the VM's ClientAliveInterval 60 and ClientAliveCountMax 5) and
real ssh clients on loopback, what sessions nobody uses move in that minute:

- `ssh -N` (a port forward alone) with no keepalive;
- `ssh -N -o ServerAliveInterval=15`;
- a session without a terminal whose client sends a 64-byte heartbeat every 30 s (or 5 s) and reads it
  back, as an editor's remote server and its window trade heartbeats;
- an idle terminal (`ssh -tt`).

It prints each session's bytes per minute, the floor, and the ratio of the floor to the largest.
Needs root (a throwaway user for sshd, as the tests). docs/reference.md quotes its figures.

    sudo venv/bin/python benchmarks/ssh_idle_traffic.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import wait_for_port
from tests.support.auto_stop import Client, session_bytes, ssh_command
from tests.support.sshd import make_sshd, remove_sshd

TEMPLATE = Path(__file__).resolve().parent.parent / "cloud-init" / "auto-stop.sh.j2"


def floor() -> int:
    """ACTIVE_BYTES, as the script sets it."""
    found = re.search(r"^ACTIVE_BYTES=(\d+)$", TEMPLATE.read_text(), re.MULTILINE)
    assert found, f"no ACTIVE_BYTES in {TEMPLATE}"
    return int(found.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to measure (default 60)")
    seconds = parser.parse_args().seconds
    sshd = make_sshd()
    config = sshd.base / "sshd_config"
    config.write_text(config.read_text() + "ClientAliveInterval 60\nClientAliveCountMax 5\n")
    sessions = {
        "ssh -N, no keepalive": (["-N"], []),
        "ssh -N -o ServerAliveInterval=15": (["-N", "-o", "ServerAliveInterval=15"], []),
        "heartbeat every 30 s (no terminal)": (["-T"], ["cat"]),
        "heartbeat every 5 s (no terminal)": (["-T"], ["cat"]),
        "terminal, nothing typed (ssh -tt)": (["-tt"], ["cat"]),
    }
    clients: dict[str, Client] = {}
    try:
        sshd.authorize()
        sshd.start()
        wait_for_port(sshd.port)
        pids: dict[str, int] = {}
        for name, (flags, command) in sessions.items():
            known = set(session_bytes(sshd))
            clients[name] = Client(ssh_command(sshd, flags, command))
            while not (new := set(session_bytes(sshd)) - known):
                time.sleep(0.1)
            (pids[name],) = new
        before = session_bytes(sshd)
        started = time.monotonic()
        beats = 0
        while (elapsed := time.monotonic() - started) < seconds:
            for name, every in (("heartbeat every 30 s (no terminal)", 30), ("heartbeat every 5 s (no terminal)", 5)):
                if beats % (every // 5) == 0:
                    clients[name].send(f"heartbeat {beats}".ljust(63, ".").encode() + b"\n")
            beats += 1
            time.sleep(max(0.0, min(5.0 * beats - elapsed, seconds - elapsed)))
        after = session_bytes(sshd)
        elapsed = time.monotonic() - started
    finally:
        for client in clients.values():
            client.end()
        remove_sshd(sshd)
    per_minute = {name: (after[key] - before[key]) * 60 / elapsed for name, key in pids.items()}
    for name, moved in per_minute.items():
        print(f"{name + ':':40} {moved:8.0f} bytes/minute")
    limit = floor()
    print(f"{'floor (ACTIVE_BYTES):':40} {limit:8d} bytes/minute")
    largest = max(per_minute.values())
    print(f"ratio: {limit / max(largest, 1):.1f}x the busiest idle session (measured over {elapsed:.0f} s)")
    return 0 if largest < limit else 1


if __name__ == "__main__":
    sys.exit(main())
