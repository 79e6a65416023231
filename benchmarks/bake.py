"""How much sooner a VM from a baked image is ready than one that runs the whole setup, on the local twin.

Boots the local twin twice on this machine, from the plain twin image (`local image build`) and from a
baked one (`local image bake` of it), with the end-to-end test's stand-ins for the downloads (an
Anaconda installer stand-in, docker-compose, a hello-world registry: tests/support/). For each it
prints the time from `local up` to its passing check ("ready") and the setup's share of it: from
cloud-init's start in the guest to the checker's verdict, the part a bake removes (the boot before it
is the same for both). Then the two ratios, baked/plain. The bake itself is timed too: it runs once
per class, not per student. Needs root (the image build) and QEMU; about 8 minutes under TCG.

    sudo venv/bin/python benchmarks/bake.py [--image-cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SETUP_RATIO_GOAL = 0.15
# When cloud-init started, and the guest's clocks now, read on the guest at one moment. cloud-init keeps
# its start on the monotonic clock (seconds since boot), older ones on the wall clock: both are printed.
CLOUD_INIT_START = (
    "python3 -c 'import json, time; "
    'print(json.load(open("/var/lib/cloud/data/status.json"))["v1"]["init-local"]["start"], '
    "time.monotonic(), time.time())'"
)


@dataclass(frozen=True)
class Run:
    """One `local up`: seconds from its start to its checker's verdict, and from cloud-init's start to it."""

    ready: float
    setup: float


def summary(plain: Run, baked: Run, bake_seconds: float) -> list[str]:
    """The benchmark's lines: both runs, the bake, and the ratios baked/plain with the setup goal."""
    ready_ratio, setup_ratio = baked.ready / plain.ready, baked.setup / plain.setup
    verdict = "ok" if setup_ratio <= SETUP_RATIO_GOAL else "MISSED"
    return [
        f"plain image: ready {plain.ready:6.1f} s, setup {plain.setup:6.1f} s",
        f"baked image: ready {baked.ready:6.1f} s, setup {baked.setup:6.1f} s",
        f"bake (once per class): {bake_seconds:6.1f} s",
        f"ready ratio: {ready_ratio:.2f}",
        f"setup ratio: {setup_ratio:.2f} (goal: {SETUP_RATIO_GOAL} or less) {verdict}",
    ]


def course_vm(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=2400, check=False,
    )  # fmt: skip


def timed_up(env: dict[str, str], name: str, image: Path, settings: list[str]) -> Run:
    """`local up` of IMAGE as NAME: its Run, the VM removed after."""
    started = time.time()
    result = course_vm(env, "local", "up", "--name", name, "--image", str(image), *(f"--set={s}" for s in settings))
    verdict = time.time()
    try:
        if result.returncode != 0:
            raise SystemExit(f"local up of {image} failed:\n{result.stdout}{result.stderr}")
        asked = time.time()
        read = course_vm(env, "local", "ssh", "--name", name, "--", CLOUD_INIT_START)
        answered = time.time()
        cloud_init, monotonic, wall = (float(value) for value in read.stdout.split())
        # The guest's clocks are not the host's: place cloud-init's start on the host's by the guest's own now.
        guest_now = wall if cloud_init > 1e9 else monotonic
        cloud_init_on_host = (asked + answered) / 2 - (guest_now - cloud_init)
        return Run(ready=verdict - started, setup=verdict - cloud_init_on_host)
    finally:
        course_vm(env, "local", "down", "--name", name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-cache", type=Path, help="keep the built plain image here between runs")
    args = parser.parse_args()
    from provisioner.local.image import build_debian_image
    from tests.support.local_artifacts import served_artifacts, twin_settings
    from tests.support.local_registry import hello_world_registry

    with tempfile.TemporaryDirectory(prefix="course-vm-bake-benchmark-") as scratch:
        work = Path(scratch)
        env = {**os.environ, "XDG_STATE_HOME": str(work / "state"), "XDG_CACHE_HOME": str(work / "cache"),
               "HOME": str(work / "home")}  # fmt: skip
        image = build_debian_image(lambda _: None, cache=args.image_cache or work / "images")
        with served_artifacts(work / "artifacts") as artifacts, hello_world_registry(work / "registry") as registry:
            settings = twin_settings(artifacts, registry, work / "keys" / "course-vm")
            started = time.time()
            baked = course_vm(env, "local", "image", "bake", "--image", str(image.disk.parent),
                              *(f"--set={s}" for s in settings))  # fmt: skip
            bake_seconds = time.time() - started
            if baked.returncode != 0:
                raise SystemExit(f"local image bake failed:\n{baked.stderr}")
            plain_run = timed_up(env, "bench-plain", image.disk.parent, settings)
            baked_run = timed_up(env, "bench-baked", Path(baked.stdout.strip()), settings)
    lines = summary(plain_run, baked_run, bake_seconds)
    print("\n".join(lines))
    print(json.dumps({"plain": plain_run.__dict__, "baked": baked_run.__dict__, "bake": bake_seconds}))
    return 0 if lines[-1].endswith(" ok") else 1


if __name__ == "__main__":
    sys.exit(main())
