"""End to end: `python -m provisioner local up` boots a real QEMU VM with the production recipe, as on GCE.

Real: the image (debootstrap, Debian 13), QEMU, cloud-init and its GCE datasource, Google's guest
agent, the recipe, apt and Debian's docker.io, dockerd, the docker group, the image pull through a
registry mirror, sshd, paramiko and the checker. The VM's metadata is what the Pulumi program gives
a GCE instance, served by course-vm's metadata server stand-in; its host keys are pinned from the
guest attributes it publishes, through the Compute API client `pulumi up` uses. One login goes the way
of `sshAccess: iap`: real ssh, Google's real gcloud as its ProxyCommand, and the IAP relay stand-in
(tests/support/iap_relay.py) to the VM's sshd; gcloud also reads those guest attributes.
Test data, served from the host (the guest reaches it as 169.254.2.2): a docker-compose and an
Anaconda installer stand-in (tests/support/local_artifacts.py), and a `hello-world` image built from
busybox-static in Debian's docker-registry (tests/support/local_registry.py). Only mirror settings
and their checksums differ from what GCP gets.
The full recipe runs once, from the plain image; `local image bake` then bakes that image (while the
first VM idles) and a VM from the bake does only the student's part, and passes the same checks.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko
import pytest

from provisioner.access.host_keys import parse_host_key
from provisioner.access.proxy import iap_proxy_command
from provisioner.access.ssh import connect, load_identity, run
from provisioner.access.ssh_config import hosts_file, ssh_config_block
from provisioner.errors import CourseVmError
from provisioner.local import qemu as local_qemu
from provisioner.local import vm as local_vm
from provisioner.local.image import Image, build_debian_image, image_at
from provisioner.local.process import arguments
from provisioner.local.twin import GUEST_SOCKET
from provisioner.recipe.user_data import GCE_HOME_DISK_DEVICE
from tests.conftest import E2E_FACTS, E2E_TIMINGS, require_tool
from tests.support import real_gcloud
from tests.support.cli import run_cli, started_cli
from tests.support.guest_http import guest_json
from tests.support.iap_relay import real_gcloud_tunnels
from tests.support.local_artifacts import served_artifacts, twin_settings
from tests.support.local_registry import hello_world_registry
from tests.support.pulumi_harness import run_program

pytestmark = pytest.mark.integration

WORK = "the student's notebook, saved on the first VM"


@dataclass
class E2e:
    """What the VMs of this module share, and the timings the module reports at its end."""

    image: Image
    state: Path
    settings: list[str]
    home_disk: Path
    """The good VM's home disk, which the bad-checksum VM gets next, as a replaced GCE VM would."""
    timings: list[tuple[str, float]] = field(default_factory=list)
    progress: list[tuple[float, str]] = field(default_factory=list)
    """The good VM's `local up` progress lines, timestamped."""
    student: Typist | None = None
    """A terminal on the good VM where a key is typed every 20 s while its tests run: with
    autoStopIdleMinutes=1 it keeps the VM from powering itself off between them."""
    bake: Bake | None = None
    """`local image bake` of the image, started while the good VM idles (see baked_image)."""


@dataclass
class Bake:
    """`local image bake`, running in a process of its own, and when it started."""

    process: subprocess.Popen[str]
    started: float = field(default_factory=time.monotonic)

    def result(self) -> tuple[int, str, str]:
        """Its exit status, stdout and stderr, once it has finished."""
        stdout, stderr = self.process.communicate(timeout=1500)
        return self.process.returncode, stdout, stderr


class Typist:
    """A student at a terminal on the VM: a real SSH login with a pty (sshd-session USER@pts/N), where a key
    is typed every 20 s until `stop_typing`, which leaves the session open and idle."""

    def __init__(self, client: paramiko.SSHClient) -> None:
        self.client = client
        self.channel = client.invoke_shell()
        self.output = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._type, daemon=True)
        self._thread.start()

    def _type(self) -> None:
        while True:
            try:
                self.channel.send(b"\n")  # what the shell reads: the terminal's access time moves
            except (OSError, EOFError, paramiko.SSHException):
                return
            if self._stop.wait(20):
                return

    def stop_typing(self) -> None:
        self._stop.set()
        self._thread.join(30)

    def wait_for(self, text: bytes, seconds: float) -> bool:
        """Whether TEXT reached the terminal within SECONDS."""
        deadline = time.monotonic() + seconds
        while text not in self.output and time.monotonic() < deadline and not self.channel.closed:
            while self.channel.recv_ready():
                self.output += self.channel.recv(65536)
            time.sleep(0.5)
        return text in self.output

    def close(self) -> None:
        self.stop_typing()
        self.client.close()


def require_root_and_tools() -> None:
    if os.geteuid() != 0:
        message = "the local VM test builds an image with debootstrap: run it as root"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    for tool in ("qemu-system-x86_64", "qemu-img", "debootstrap", "mkfs.ext4"):
        require_tool(tool)


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[E2e]:
    require_root_and_tools()
    work = tmp_path_factory.mktemp("local-vm")
    # Local VMs' state and the ssh config entries `local up` writes go to this module's own HOME.
    environment = pytest.MonkeyPatch()
    environment.setenv("XDG_STATE_HOME", str(work / "state"))
    environment.setenv("HOME", str(work / "home"))
    request.addfinalizer(environment.undo)
    started = time.monotonic()
    image = build_debian_image(print, cache=Path(os.environ.get("COURSE_VM_TEST_IMAGE_CACHE", work / "images")))
    build_seconds = time.monotonic() - started
    with served_artifacts(work / "artifacts") as artifacts, hello_world_registry(work / "registry") as registry:
        settings = [
            *twin_settings(artifacts, registry, work / "keys" / "course-vm"),
            "homeDiskSizeGb=10",
            # Short, so that test_an_idle_vm_powers_itself_off waits minutes, not an hour.
            "autoStopIdleMinutes=1",
        ]
        build = "image build (debootstrap)" if build_seconds > 10 else "image (cached)"
        # conftest.py prints these at the end of the run, whatever pytest captured.
        timings = request.config.stash.setdefault(E2E_TIMINGS, [])
        timings.append((build, build_seconds))
        yield E2e(image, work / "state", settings, work / "home.qcow2", timings)


def local(
    e2e: E2e, *args: str, timeout: float = 1500
) -> tuple[subprocess.CompletedProcess[str], list[tuple[float, str]]]:
    """Run `python -m provisioner local ARGS`, timestamping each progress line as it arrives."""
    env = {**os.environ, "XDG_STATE_HOME": str(e2e.state)}
    started = time.monotonic()
    # No preexec_fn (for_ctrl_c): it is unsafe beside this module's HTTP server threads (subprocess docs).
    with started_cli("local", *args, env=env, for_ctrl_c=False) as process:
        assert process.stderr is not None and process.stdout is not None
        progress = [(time.monotonic() - started, line.rstrip("\n")) for line in process.stderr]
        stdout = process.stdout.read()
        process.wait(timeout)
    stderr = "\n".join(line for _, line in progress)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), progress


def start_bake(e2e: E2e) -> Bake:
    """`local image bake` of the module's image with its settings, started now (once), as a user runs it.

    Its cache is this run's own, so that every run bakes (a cached bake would be reused)."""
    if e2e.bake is None:
        env = {**os.environ, "XDG_STATE_HOME": str(e2e.state), "XDG_CACHE_HOME": str(e2e.state.parent / "cache")}
        bake = ["image", "bake", "--image", str(e2e.image.disk.parent), *(f"--set={s}" for s in e2e.settings)]
        e2e.bake = Bake(started_cli("local", *bake, env=env, for_ctrl_c=False))
    return e2e.bake


def local_cli(e2e: E2e, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `python -m provisioner local ARGS` to the end, as a user would."""
    return run_cli("local", *args, env={**os.environ, "XDG_STATE_HOME": str(e2e.state)}, timeout=timeout)


def first(progress: list[tuple[float, str]], pattern: str) -> float:
    return next(t for t, line in progress if re.search(pattern, line))


@pytest.fixture(scope="module")
def good_vm(e2e: E2e) -> Iterator[local_vm.LocalVm]:
    result, progress = local(
        e2e,
        "up",
        "--name",
        "e2e",
        "--image",
        str(e2e.image.disk.parent),
        "--home-disk",
        str(e2e.home_disk),
        "--json",
        *(f"--set={s}" for s in e2e.settings),
    )
    report = json.loads(result.stdout) if result.stdout.strip() else {}
    assert (local_vm.state_dir() / "e2e" / "vm.json").exists(), f"local up did not boot a VM:\n{result.stderr}"
    vm = local_vm.load("e2e")
    try:
        assert result.returncode == 0, f"{result.stderr}\n{json.dumps(report, indent=2)}"
        e2e.student = Typist(connect(vm.target(), load_identity(vm.identity), time.monotonic() + 60, print))
        published = first(progress, "host keys, from its guest attributes")
        logged_in = first(progress, "logged in; waiting for cloud-init")
        e2e.timings += [
            (f"boot to host keys in the guest attributes ({vm.accel})", published),
            ("boot to first SSH login", logged_in),
        ]
        e2e.progress = progress
        e2e.timings += recipe_timings(vm)
        e2e.timings += [(f"check: {c['name']}", c["seconds"]) for c in report["checks"]]
        e2e.timings.append(("local up, in all", progress[-1][0]))
        yield vm
    finally:
        if e2e.student is not None:
            e2e.student.close()
        local_vm.down("e2e")


def recipe_timings(vm: local_vm.LocalVm) -> list[tuple[str, float]]:
    with connect(vm.target(), load_identity(vm.identity), time.monotonic() + 60, print) as client:
        log = run(client, "sudo -n cat /var/log/cloud-init-output.log", 30).stdout
    return [
        (f"recipe step {step}", float(seconds))
        for step, seconds in re.findall(r"^\[course-vm\] END (\S+) (\d+)s$", log, re.MULTILINE)
    ] + [("recipe in all", float(m.group(1))) for m in re.finditer(r"^\[course-vm\] DONE (\d+)s$", log, re.MULTILINE)]


def test_the_course_vm_works_for_the_student(good_vm: local_vm.LocalVm, e2e: E2e) -> None:
    # good_vm asserted `local up` exited 0: every check passed. Check again through the CLI, as a user would.
    result = local_cli(e2e, "check", "--name", "e2e", "--json", timeout=600)
    report = json.loads(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["docker hello-world"]["detail"] == "Hello from Docker!"
    assert checks["docker-compose on PATH"]["ok"] and checks["conda on PATH"]["ok"]
    with connect(good_vm.target(), load_identity(good_vm.identity), time.monotonic() + 60, print) as client:
        groups = run(client, "id -nG", 30).stdout.split()
        sudo_free = run(client, "docker info --format '{{.ServerVersion}}'", 60)
        home = run(client, f"findmnt -n -o SOURCE --target ~; readlink -f {GCE_HOME_DISK_DEVICE}", 30)
        # The student's work, which the next VM on this home disk must still have (see the bad-checksum test).
        saved = run(client, f"echo {WORK!r} > ~/work-in-progress.txt && sync", 30)
    assert "docker" in groups
    assert sudo_free.ok, sudo_free.summary()
    source, device = home.stdout.split()
    assert source == device, f"the home directory is on {source}, not on the home disk {device}"
    assert saved.ok, saved.summary()


def test_the_vm_is_a_gce_vm_to_its_own_software(
    good_vm: local_vm.LocalVm, e2e: E2e, request: pytest.FixtureRequest
) -> None:
    with connect(good_vm.target(), load_identity(good_vm.identity), time.monotonic() + 60, print) as client:
        cloud_id = run(client, "cloud-id", 30).stdout.strip()
        agent = run(client, "systemctl is-active google-guest-agent.service", 30).stdout.strip()
        groups = run(client, "id -nG", 30).stdout.split()
        schema = run(client, "sudo -n cloud-init schema --system 2>&1", 120)
        managed = run(client, "sudo -n cat /var/lib/google/google_users", 30).stdout.split()
        client_alive = run(client, "sudo -n sshd -T | grep '^clientalive'", 30).stdout.split("\n")
    published = [line for _, line in e2e.progress if "'s host keys, from its " in line]
    facts = request.config.stash.setdefault(E2E_FACTS, [])
    facts += [
        ("cloud-id", cloud_id),
        ("google-guest-agent", agent),
        ("the student's groups", " ".join(groups)),
        ("host keys pinned from", published[-1].split("from its ", 1)[1] if published else "?"),
        ("cloud-init schema --system", schema.stdout.strip().splitlines()[-1] if schema.stdout.strip() else "?"),
    ]
    assert cloud_id == "gce"
    assert agent == "active"
    assert {"docker", "google-sudoers"} <= set(groups), groups
    assert good_vm.user in managed, "the guest agent manages the student's account"
    assert published and all("from its guest attributes" in line for line in published), published
    assert schema.ok, schema.summary()
    # A laptop that went to sleep leaves no session behind: sshd drops it after 5 unanswered minutes.
    assert sorted(filter(None, client_alive)) == ["clientalivecountmax 5", "clientaliveinterval 60"], client_alive
    # What the VM booted from is what the Pulumi program gives a GCE instance with these settings.
    assert served_attributes(good_vm) == pulumi_instance_metadata(e2e)


def served_attributes(vm: local_vm.LocalVm) -> dict[str, str]:
    """The instance attributes the VM's metadata server gives the guest, asked on the guest's own socket."""
    attributes = guest_json(vm.directory / GUEST_SOCKET, "/computeMetadata/v1/instance/attributes/?recursive=true")
    assert isinstance(attributes, dict)
    return dict(attributes)


def pulumi_instance_metadata(e2e: E2e) -> dict[str, str]:
    """The metadata `__main__.py` registers for the Instance, run under the Pulumi SDK's mocks with
    the test's settings (plus what GCP alone needs)."""
    config = {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west1-b",
        "course-vm:allowedSshCidrs": json.dumps(["203.0.113.7/32"]),
    }
    config.update({f"course-vm:{k}": v for k, v in (s.split("=", 1) for s in e2e.settings)})
    run = run_program(config)
    return dict(run.one("gcp:compute/instance:Instance").inputs["metadata"])


def test_local_ssh_is_pinned_and_works(good_vm: local_vm.LocalVm, e2e: E2e) -> None:
    result = local_cli(e2e, "ssh", "--name", "e2e", "--", "whoami", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == good_vm.user
    known = good_vm.known_hosts.read_text()
    assert known == "".join(k.known_hosts_line("127.0.0.1", good_vm.ssh_port) + "\n" for k in good_vm.host_keys)
    # Plain ssh through the entry `local up` wrote: pinned host key, no prompt.
    config = Path(os.environ["HOME"]) / ".ssh" / "config"
    plain = subprocess.run(
        [require_tool("ssh"), "-F", str(config), "-o", "BatchMode=yes", good_vm.host_alias, "whoami"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout.strip() == good_vm.user


def test_the_twin_is_reached_through_googles_real_gcloud_and_the_iap_relay(
    good_vm: local_vm.LocalVm, tmp_path: Path
) -> None:
    """The path of a class at home (sshAccess iap), end to end: real ssh through the Host block course-vm
    writes, its ProxyCommand Google's real gcloud, the IAP relay stand-in, then the twin's sshd, whose keys
    are pinned under the instance's name as `up` pins them from the guest attributes."""
    twin = good_vm.twin
    assert twin is not None
    pins = tmp_path / "iap.known_hosts"
    pins.write_text("".join(key.known_hosts_line(twin.instance, 22) + "\n" for key in good_vm.host_keys))
    proxy = iap_proxy_command(twin.project, twin.zone)
    config = tmp_path / "config"
    config.write_text(
        ssh_config_block("twin", twin.instance, good_vm.user, str(good_vm.identity), str(pins), proxy_command=proxy,
                         forwards=())
    )  # fmt: skip
    with real_gcloud_tunnels(tmp_path / "iap", good_vm.ssh_port) as tunnels:
        done = subprocess.run(
            [require_tool("ssh"), "-F", str(config), "-o", "BatchMode=yes", "twin", "id -un"],
            env={**os.environ, **tunnels.environment(os.environ["PATH"])},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        tunnels.check()
    assert (done.returncode, done.stdout.strip()) == (0, good_vm.user), done.stderr
    assert [(c.query["project"], c.query["zone"], c.query["instance"]) for c in tunnels.relay.connects] == [
        (twin.project, twin.zone, twin.instance)
    ]
    # The keys were pinned from the guest attributes the guest agent published; Google's client reads
    # them from the twin's Compute API view as it would from GCE's.
    where = [twin.instance, "--project", twin.project, "--zone", twin.zone, "--format=json"]
    read = real_gcloud.run(
        ["compute", "instances", "get-guest-attributes", *where, "--query-path=hostkeys/"],
        tmp_path / "gcloud-config",
        twin.compute_api,
        token=twin.token,
    )
    assert read.returncode == 0, read.stderr
    published = {(item["key"], item["value"]) for item in json.loads(read.stdout)}
    assert {(key.type, key.blob) for key in good_vm.host_keys} <= published  # hostkeys/TYPE: the base64 blob


def test_rerunning_the_setup_succeeds_and_changes_nothing(good_vm: local_vm.LocalVm, e2e: E2e) -> None:
    snapshot = (
        "sha256sum ~/.bashrc ~/soft/docker-compose /etc/docker/daemon.json /etc/ssh/sshd_config.d/10-course-vm.conf "
        "~/anaconda3/bin/conda; readlink ~/.docker/cli-plugins/docker-compose; id -nG; "
        "systemctl is-enabled docker.service; stat -c '%U %a %n' ~/soft ~/soft/docker-compose ~/anaconda3"
    )
    with connect(good_vm.target(), load_identity(good_vm.identity), time.monotonic() + 60, print) as client:
        before = run(client, snapshot, 60)
        started = time.monotonic()
        again = run(client, "sudo -n /usr/local/sbin/course-vm-setup", 600)
        e2e.timings.append(("re-running the setup", time.monotonic() - started))
        after = run(client, snapshot, 60)
    assert again.ok, again.summary(30)
    assert "[course-vm] DONE" in again.stdout
    assert "already downloaded" in again.stdout and "Anaconda already installed" in again.stdout
    assert before.ok and before.stdout == after.stdout


def test_an_idle_vm_warns_its_terminal_and_powers_itself_off(good_vm: local_vm.LocalVm, e2e: E2e) -> None:
    # The last test of the good VM. Its timer runs every minute. Once nobody types in the student's
    # terminal, which stays logged in, the first run that sees no use warns that terminal and the console
    # (with autoStopIdleMinutes=1, at once) and the next powers the VM off; QEMU exits.
    assert e2e.student is not None
    journal = "sudo -n journalctl -u course-vm-auto-stop.service --no-pager -o cat | tail -n 3"
    with connect(good_vm.target(), load_identity(good_vm.identity), time.monotonic() + 60, print) as client:
        timer = run(
            client, "systemctl is-active course-vm-auto-stop.timer; systemctl is-enabled course-vm-auto-stop.timer", 30
        )
        # A run since the typing began (the timer's first comes a minute after the setup armed it).
        said = run(client, journal, 30)
        waited = time.monotonic()
        while "in use: input was typed in a terminal" not in said.stdout and time.monotonic() - waited < 150:
            time.sleep(10)
            said = run(client, journal, 30)
    assert timer.stdout.split() == ["active", "enabled"], timer.summary()
    assert "in use: input was typed in a terminal" in said.stdout, said.summary(20)
    # The bake's VM runs while this one idles: their waits overlap, and an idle VM takes little of the CPU.
    start_bake(e2e)
    e2e.student.stop_typing()
    started = time.monotonic()
    warning = b"[course-vm] idle stop: nothing has used this VM since"
    assert e2e.student.wait_for(warning, 360), f"no warning on the idle terminal: {bytes(e2e.student.output[-600:])!r}"
    e2e.timings.append(("idle terminal warned (autoStopIdleMinutes=1)", time.monotonic() - started))
    while good_vm.running() and time.monotonic() - started < 480:
        time.sleep(1)
    e2e.timings.append(("idle VM powers off (autoStopIdleMinutes=1)", time.monotonic() - started))
    assert not good_vm.running(), "the VM was still running 8 minutes after its terminal went idle"
    console = good_vm.console_log.read_text(errors="replace")
    assert warning.decode() in console
    assert "[course-vm] idle stop: powering off after 1 idle minutes (autoStopIdleMinutes)" in console
    assert console.index(warning.decode()) < console.index("[course-vm] idle stop: powering off")


@pytest.fixture(scope="module")
def baked_image(e2e: E2e) -> Image:
    """The module's image baked with its settings by `local image bake`, as a user runs it."""
    bake = start_bake(e2e)
    status, stdout, stderr = bake.result()
    assert status == 0, stderr
    e2e.timings.append(("local image bake, in all (beside the idle VM)", time.monotonic() - bake.started))
    baked = image_at(Path(stdout.strip()))
    assert baked.manifest is not None and baked.format == "qcow2" and baked.gce
    return baked


def test_a_vm_from_the_baked_image_does_only_the_students_part_and_works(baked_image: Image, e2e: E2e) -> None:
    good = local_vm.state_dir() / "e2e"
    if good.exists():
        local_vm.down("e2e")  # one VM at a time: they would share the machine's two cores
    image = str(baked_image.disk.parent)
    try:
        result, progress = local(e2e, "up", "--name", "e2e-baked", "--image", image, "--json",
                                 *(f"--set={s}" for s in e2e.settings))  # fmt: skip
        report = json.loads(result.stdout) if result.stdout.strip() else {}
        assert result.returncode == 0, f"{result.stderr}\n{json.dumps(report, indent=2)}"
        baked = local_vm.load("e2e-baked")
        e2e.timings += [(f"baked: {label}", seconds) for label, seconds in recipe_timings(baked)]
        e2e.timings.append(("local up from the baked image, in all", progress[-1][0]))
        with connect(baked.target(), load_identity(baked.identity), time.monotonic() + 60, print) as client:
            log = run(client, "sudo -n cat /var/log/cloud-init-output.log", 30).stdout
            conda = run(client, "readlink ~/anaconda3; stat -c %U /opt/anaconda3 /opt/anaconda3/bin/conda", 30)
            fresh = run(client, "cat /etc/machine-id; sudo -n cat /etc/course-vm/image; ls /var/cache/course-vm", 30)
    finally:
        local_vm.down("e2e-baked")
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["docker hello-world"]["detail"] == "Hello from Docker!" and checks["conda on PATH"]["ok"]
    steps = re.findall(r"^\[course-vm\] BEGIN (\S+)", log, re.MULTILINE)
    assert steps[:2] == ["image", "account"] and "packages" not in steps, "the bake's log went with the bake"
    # The image's Anaconda is the student's: conda installs into base without sudo.
    assert conda.stdout.split() == ["/opt/anaconda3", baked.user, baked.user], conda.summary()
    assert baked_image.manifest is not None
    machine_id, *manifest_and_cache = fresh.stdout.split("\n")
    assert len(machine_id) == 32, "each VM from the image makes a machine id of its own"
    assert "\n".join(manifest_and_cache).startswith(baked_image.manifest)
    assert "Anaconda3" not in fresh.stdout, "the image keeps the install, not the installer"


def test_an_image_without_what_the_settings_ask_for_fails_its_first_step_and_the_checker_says_so(
    good_vm: local_vm.LocalVm, baked_image: Image, e2e: E2e
) -> None:
    # This VM also gets the good VM's home disk, as a GCE VM replaced for a new recipe would: the
    # student's work must be there (cloud-init mounts it before any step), and the disk not formatted again.
    if good_vm.running():
        local_vm.down(good_vm.name)  # it synced its disks; one VM at a time may use the home disk
    settings = [s for s in e2e.settings if not s.startswith("dockerComposeSha256=")]
    settings.append("dockerComposeSha256=" + "0" * 64)
    try:
        result, progress = local(
            e2e,
            "up",
            "--name",
            "e2e-stale",
            "--image",
            str(baked_image.disk.parent),
            "--home-disk",
            str(e2e.home_disk),
            "--json",
            *(f"--set={s}" for s in settings),
        )
        e2e.timings.append(("local up from an image out of date, in all", progress[-1][0]))
        stale = local_vm.load("e2e-stale")
        with connect(stale.target(), load_identity(stale.identity), time.monotonic() + 60, print) as client:
            kept = run(client, "cat ~/work-in-progress.txt", 30)
    finally:
        local_vm.down("e2e-stale")
    assert kept.stdout.strip() == WORK, f"the student's work did not survive the new VM: {kept.summary()}"
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    cloud_init = report["checks"][0]
    assert cloud_init["name"] == "cloud-init" and not cloud_init["ok"]
    assert "recipe step 'image' failed (exit 1): the image holds 'docker-compose v2.6.1 " in cloud_init["detail"]
    assert f"where these settings ask for 'docker-compose v2.6.1 {'0' * 64}'" in cloud_init["detail"]
    assert "image out of date: bake again" in cloud_init["detail"]
    # And `local up` said so before it booted the VM, as `up`'s preview does on GCP.
    assert any(line.startswith("course-vm: warning: image out of date: bake again") for _, line in progress)


# The parts of the local VM that need no QEMU.


def test_a_home_disk_image_is_created_once_and_then_kept(tmp_path: Path) -> None:
    require_tool("qemu-img")
    path = local_vm.ensure_home_disk(tmp_path / "homes" / "alice.qcow2", 10)
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
    assert (info["format"], info["virtual-size"]) == ("qcow2", 10 << 30)
    path.write_bytes(path.read_bytes() + b"the student's work")
    before = path.read_bytes()
    assert local_vm.ensure_home_disk(path, 20) == path
    assert path.read_bytes() == before, "an existing home disk is never recreated"


def test_a_vm_record_round_trips_and_pins_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    directory = local_vm.state_dir() / "one"
    directory.mkdir(parents=True)
    key = parse_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet")
    qemu = fake_qemu(directory / "qemu.pid")
    vm = local_vm.LocalVm("one", directory, qemu.pid, 2222, "student", tmp_path / "key", (key,), "tcg")
    vm.save()
    assert local_vm.load("one") == vm
    assert local_vm.names() == ["one"]
    assert vm.known_hosts.read_text() == f"[127.0.0.1]:2222 {key}\n"
    assert vm.ssh_command()[-1] == "student@127.0.0.1"
    assert "StrictHostKeyChecking=yes" in vm.ssh_command()
    try:
        assert vm.running()
    finally:
        qemu.kill()
        qemu.wait()
    assert not vm.running()
    assert not replace(vm, pid=os.getpid()).running(), "a PID that is not its QEMU's (after a reboot) is no VM"


def test_a_vms_entry_forwards_its_ports_and_a_record_from_before_forwards_jupyter_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    directory = local_vm.state_dir() / "one"
    directory.mkdir(parents=True)
    key = parse_host_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet")
    vm = local_vm.LocalVm("one", directory, 0, 2222, "student", tmp_path / "key", (), "tcg", None, ("5001:5000",), True)
    vm.pinned((key,))
    assert local_vm.load("one") == replace(vm, host_keys=(key,))
    entry = hosts_file().read_text()
    assert "    ForwardAgent yes\n    LocalForward localhost:5001 localhost:5000\n" in entry
    record = json.loads((directory / "vm.json").read_text())
    del record["forwards"], record["forward_agent"]
    (directory / "vm.json").write_text(json.dumps(record))
    assert (local_vm.load("one").forwards, local_vm.load("one").forward_agent) == (("8888",), False)


def test_unknown_vm_says_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    with pytest.raises(CourseVmError, match="local up --name nope"):
        local_vm.load("nope")
    assert local_vm.down("nope") is False


def fake_qemu(pid_file: Path) -> subprocess.Popen[bytes]:
    """A process whose command line is QEMU's, as a VM's QEMU names its pid file (a sleep inside)."""
    process = subprocess.Popen(
        ["qemu-system-x86_64", "-c", "import time; time.sleep(60)", "-pidfile", str(pid_file)],
        executable=sys.executable,
    )
    deadline = time.monotonic() + 10
    while not arguments(process.pid) and time.monotonic() < deadline:
        time.sleep(0.01)  # its command line is empty for a moment after the start
    return process


def test_down_stops_only_this_vms_own_qemu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    one, other = local_vm.state_dir() / "one", local_vm.state_dir() / "one-2"
    for directory in (one, other):
        directory.mkdir(parents=True)
    # After a reboot qemu.pid may name anyone: a sleep, another VM's QEMU (whose paths start with
    # this VM's directory), a `tail -f` of this VM's console log.
    strangers = [
        subprocess.Popen(["sleep", "60"]),
        fake_qemu(other / "qemu.pid"),
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(one), str(one / "qemu.pid")]),
    ]
    try:
        for stranger in strangers:
            (one / "qemu.pid").write_text(f"{stranger.pid}\n")
            (one / "metadata.pid").write_text(f"{stranger.pid}\n")
            one.mkdir(exist_ok=True)
            assert local_vm.down("one", progress=print) is True
            assert stranger.poll() is None, f"local down killed {stranger.args!r}"
            assert f"qemu.pid: process {stranger.pid} is not this VM's QEMU" in capsys.readouterr().out
            assert not one.exists()
            one.mkdir()
        ours = fake_qemu(one / "qemu.pid")
        (one / "qemu.pid").write_text(f"{ours.pid}\n")
        assert local_vm.down("one") is True
        assert ours.wait(10) != 0
    finally:
        for process in strangers:
            process.kill()
            process.wait()


def modes(root: Path) -> dict[str, str]:
    """The permission bits of ROOT and everything under it, by relative path."""
    return {str(path.relative_to(root)): oct(path.stat().st_mode & 0o777) for path in [root, *sorted(root.rglob("*"))]}


def stand_in_qemu(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    script: str,
    arguments: Callable[[Path], list[str]] = lambda _directory: [],
) -> None:
    """Boot SCRIPT, Python under QEMU's name, given ARGUMENTS (of the VM's directory) then `-pidfile
    PATH`, with state and home in TMP_PATH and a raw disk image at TMP_PATH/disk.img."""
    require_tool("qemu-img")
    require_tool("cloud-localds")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "disk.img").write_bytes(b"\0" * 65536)
    qemu = tmp_path / "bin" / "qemu-system-x86_64"
    qemu.parent.mkdir()
    qemu.symlink_to(sys.executable)
    monkeypatch.setattr(
        local_qemu,
        "command",
        lambda _image, directory, *_: [
            str(qemu),
            "-c",
            script,
            *arguments(directory),
            "-pidfile",
            str(directory / "qemu.pid"),
        ],
    )


def test_a_vms_directory_and_every_file_in_it_are_the_users_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # They hold the guest's disk (its SSH host private keys, the student's work), its console and records.
    # Python under QEMU's name: it writes its pid file and waits.
    stand_in_qemu(
        tmp_path, monkeypatch, "import os, sys, time; open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(60)"
    )
    usual = os.umask(0o022)  # as a user's shell has it
    with pytest.raises(CourseVmError, match="no SSH host keys on the console before the deadline"):
        local_vm.boot(
            "one",
            Image(tmp_path / "disk.img", "raw"),
            {"user-data": "#cloud-config\n"},
            user="student",
            identity=tmp_path / "key",
            accel="tcg",
            deadline=time.monotonic() + 2,
        )
    assert os.umask(usual) == 0o022, "boot() left its umask behind"
    found = modes(local_vm.state_dir())
    assert set(found) >= {"one/disk.qcow2", "one/seed.iso", "one/console.log", "one/vm.json", "one/qemu.pid"}
    assert found == {path: "0o700" if path in (".", "one") else "0o600" for path in found}


def test_a_home_disk_is_the_users_alone_even_one_made_before(tmp_path: Path) -> None:
    require_tool("qemu-img")
    path = local_vm.ensure_home_disk(tmp_path / "homes" / "alice.qcow2", 10)
    assert modes(tmp_path / "homes") == {".": "0o700", "alice.qcow2": "0o600"}
    path.chmod(0o644)  # as an earlier course-vm (and qemu-img) left it
    local_vm.ensure_home_disk(path, 10)
    assert modes(tmp_path / "homes") == {".": "0o700", "alice.qcow2": "0o600"}


# Python under QEMU's name: the first boot's guest kernel panics (as Debian 13's did once under
# multi-threaded TCG, patching its own code), the second prints host keys as cloud-init does.
PANIC_ONCE = """
import os, sys, time
directory = os.path.dirname(sys.argv[1])
open(sys.argv[1], "w").write(str(os.getpid()))
marker = os.path.join(directory, "booted-once")
with open(os.path.join(directory, "console.log"), "a") as console:
    if not os.path.exists(marker):
        open(marker, "w").close()
        console.write("[    3.778292] Kernel panic - not syncing: Fatal exception in interrupt\\n")
    else:
        console.write("-----BEGIN SSH HOST KEY KEYS-----\\n" + sys.argv[2] + "\\n-----END SSH HOST KEY KEYS-----\\n")
time.sleep(60)
"""


def test_a_guest_kernel_panic_at_boot_is_booted_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet root@vm"
    stand_in_qemu(tmp_path, monkeypatch, PANIC_ONCE, lambda directory: [str(directory / "qemu.pid"), host_key])
    said: list[str] = []
    vm = local_vm.boot(
        "one",
        Image(tmp_path / "disk.img", "raw"),
        {"user-data": "#cloud-config\n"},
        user="student",
        identity=tmp_path / "key",
        accel="tcg",
        deadline=time.monotonic() + 30,
        progress=said.append,
    )
    try:
        assert [key.fingerprint for key in vm.console_host_keys(time.monotonic() + 5)] == [
            parse_host_key(host_key).fingerprint
        ]
        assert any("kernel panicked while booting" in line for line in said), said
        assert vm.running() and local_vm.load("one").pid == vm.pid
    finally:
        local_vm.down("one")
