"""The rendered setup script's logic, run by real bash with real curl and sha256sum.

Stand-ins (this test's point is the script's logic, not the system): the commands that change the
machine (apt-get, systemctl, usermod, runuser, getent, id, docker, sleep) are small scripts on PATH
that log their arguments; the Anaconda installer and docker-compose are fixture files served by a
local HTTP server. The real VM runs the real ones (tests/test_local_vm.py, when it exists).
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.recipe.settings import Artifact
from provisioner.recipe.user_data import render_setup_script
from tests.conftest import require_tool

pytestmark = pytest.mark.integration

# Test data standing in for docker-compose and the Anaconda installer.
COMPOSE = b"#!/bin/sh\necho 'Docker Compose version v2.6.1 (fixture)'\n"
INSTALLER = b"""#!/bin/bash
# Fixture standing in for the Anaconda installer: accepts -b -u -p PREFIX and installs a fake conda.
set -eu
while getopts bup: option; do [[ $option == p ]] && prefix=$OPTARG; done
mkdir -p "$prefix/bin"
cat >"$prefix/bin/conda" <<'CONDA'
#!/bin/bash
# Fixture conda: `conda init bash` adds its block to ~/.bashrc once, as the real one does.
if [[ "$*" == "init bash" ]] && ! grep -q '>>> conda initialize >>>' "$HOME/.bashrc"; then
  printf '# >>> conda initialize >>>\\nconda stuff\\n# <<< conda initialize <<<\\n' >>"$HOME/.bashrc"
fi
CONDA
chmod +x "$prefix/bin/conda"
echo "installed into $prefix" >>"$CALLS"
"""

STUBS = {
    "apt-get": 'echo "apt-get $*" >>"$CALLS"; /bin/sleep "${APT_SECONDS:-0}"; [[ -z ${APT_FAILS:-} ]]',
    # Stand-in for apt-cache: docker.io as packaged since Debian 13 (DOCKER_CLI_SPLIT), or before.
    "apt-cache": 'echo docker.io; [[ -z ${DOCKER_CLI_SPLIT:-} ]] || echo "  Recommends: docker-cli"',
    "systemctl": 'echo "systemctl $*" >>"$CALLS"',
    "usermod": 'echo "usermod $*" >>"$CALLS"',
    "runuser": 'shift 3; exec "$@"',  # runuser -u USER -- CMD...
    "getent": 'echo "$2:x:1000:1000::$FAKE_HOME:/bin/bash"',
    "id": 'echo "$(/usr/bin/id -gn)"',
    "install": 'args=(); while (($#)); do case $1 in -o|-g) shift 2;; *) args+=("$1"); shift;; esac; done; '
    'exec /usr/bin/install "${args[@]}"',
    "docker": "exit 0",
    "sleep": "exit 0",
}


class _Handler(http.server.SimpleHTTPRequestHandler):
    failures: dict[str, int]
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.failures.get(self.path, 0) > 0:
            self.failures[self.path] -= 1
            self.send_error(503, "try again")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Machine:
    """A sandbox standing in for the VM: a home, stub commands, and the artifact server."""

    root: Path
    home: Path
    calls: Path
    base_url: str
    requests: list[str]
    failures: dict[str, int]

    def script(self, compose_sha: str | None = None) -> Path:
        text = render_setup_script(
            username="student",
            anaconda=Artifact("anaconda", "2022.05", f"{self.base_url}/anaconda.sh", _sha(INSTALLER)),
            docker_compose=Artifact("compose", "v2.6.1", f"{self.base_url}/compose", compose_sha or _sha(COMPOSE)),
        )
        path = self.root / "course-vm-setup"
        path.write_text(text)
        return path

    def run(self, script: Path, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "CALLS": str(self.calls),
            "FAKE_HOME": str(self.home),
            "COURSE_VM_CACHE": str(self.root / "cache"),
            "COURSE_VM_CONSOLE": str(self.root / "console"),
            **env,
        }
        return subprocess.run(
            [require_tool("bash"), str(script)],
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    require_tool("curl")
    served = tmp_path / "served"
    served.mkdir()
    (served / "compose").write_bytes(COMPOSE)
    (served / "anaconda.sh").write_bytes(INSTALLER)
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for name, body in STUBS.items():
        (stubs / name).write_text(f"#!/bin/bash\n{body}\n")
        (stubs / name).chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the student's own .bashrc\nalias ll='ls -l'\n")

    requests: list[str] = []
    failures: dict[str, int] = {}
    handler = type("Handler", (_Handler,), {"requests": requests, "failures": failures})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0),
        lambda *a: handler(*a, directory=str(served)),
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Machine(
            tmp_path, home, tmp_path / "calls.log", f"http://127.0.0.1:{server.server_address[1]}", requests, failures
        )
    finally:
        server.shutdown()
        server.server_close()


def markers(output: str) -> list[str]:
    return [
        line.split("] ", 1)[1].rsplit(" ", 1)[0] if line.startswith("[course-vm] END") else line.split("] ", 1)[1]
        for line in output.splitlines()
        if line.startswith("[course-vm] ")
    ]


def test_setup_does_every_step_and_marks_it(machine: Machine) -> None:
    result = machine.run(machine.script())
    assert result.returncode == 0, result.stdout + result.stderr
    found = markers(result.stdout)
    for step in ("packages", "docker", "docker-compose", "anaconda", "shell", "sshd"):
        assert f"BEGIN {step}" in found and f"END {step}" in found, found
    assert found[-1].startswith("DONE ")
    assert not [m for m in found if m.startswith("FAILED")]

    compose = machine.home / "soft" / "docker-compose"
    assert compose.read_bytes() == COMPOSE
    assert os.stat(compose).st_mode & 0o777 == 0o755
    plugin = machine.home / ".docker" / "cli-plugins" / "docker-compose"
    assert plugin.is_symlink() and plugin.resolve() == compose
    assert (machine.home / "anaconda3" / "bin" / "conda").exists()

    bashrc = (machine.home / ".bashrc").read_text()
    assert bashrc.startswith("# the student's own .bashrc\nalias ll='ls -l'\n")
    assert bashrc.count('export PATH="${HOME}/soft:${PATH}"\n') == 1
    assert bashrc.count(">>> conda initialize >>>") == 1

    calls = machine.calls.read_text().splitlines()
    install = next(i for i, c in enumerate(calls) if c.startswith("apt-get") and " install " in c)
    assert calls[install].endswith(" install --no-install-recommends docker.io apparmor")
    assert calls.index("usermod -aG docker student") > install, "docker group exists only after install"
    assert "systemctl enable --now docker.socket docker.service" in calls


def test_where_the_docker_command_is_its_own_package_it_is_installed_too(machine: Machine) -> None:
    # Debian 13's docker.io only recommends docker-cli, and the recipe installs no recommends.
    assert machine.run(machine.script(), DOCKER_CLI_SPLIT="1").returncode == 0
    calls = machine.calls.read_text().splitlines()
    install = next(c for c in calls if c.startswith("apt-get") and " install " in c)
    assert install.endswith(" install --no-install-recommends docker.io apparmor docker-cli")


def test_rerun_changes_nothing_and_downloads_nothing(machine: Machine) -> None:
    script = machine.script()
    assert machine.run(script).returncode == 0
    snapshot = {p: p.read_bytes() for p in machine.home.rglob("*") if p.is_file()}
    fetched = len(machine.requests)
    machine.calls.write_text("")

    again = machine.run(script)
    assert again.returncode == 0, again.stdout
    assert {p: p.read_bytes() for p in machine.home.rglob("*") if p.is_file()} == snapshot
    assert len(machine.requests) == fetched
    assert "installed into" not in machine.calls.read_text()
    assert "Anaconda already installed" in again.stdout


def test_checksum_mismatch_stops_at_that_step(machine: Machine) -> None:
    result = machine.run(machine.script(compose_sha="0" * 64))
    assert result.returncode != 0
    assert "[course-vm] FAILED docker-compose exit=1" in result.stdout
    assert f"checksum mismatch for {machine.base_url}/compose: expected sha256 {'0' * 64}, got {_sha(COMPOSE)}" in (
        result.stdout
    )
    assert "[course-vm] FAILED setup exit=1" in result.stdout
    assert "[course-vm] DONE" not in result.stdout
    assert "BEGIN shell" not in result.stdout
    assert not (machine.home / "soft" / "docker-compose").exists()
    assert not list((machine.root / "cache").glob("docker-compose*")), "an unverified file was kept"


def test_the_first_failure_stops_the_other_steps(machine: Machine) -> None:
    started = time.monotonic()
    result = machine.run(machine.script(compose_sha="0" * 64), APT_SECONDS="20")
    assert time.monotonic() - started < 10, "the setup waited for apt after docker-compose had failed"
    assert "[course-vm] FAILED docker-compose exit=1" in result.stdout
    assert "the others were stopped" in result.stdout
    assert "END packages" not in result.stdout
    assert "usermod" not in machine.calls.read_text()


def test_apt_failure_fails_the_setup(machine: Machine) -> None:
    result = machine.run(machine.script(), APT_FAILS="1")
    assert result.returncode != 0
    assert "[course-vm] FAILED packages exit=1" in result.stdout
    assert "BEGIN docker\n" not in result.stdout
    assert "usermod" not in machine.calls.read_text()


def test_downloads_are_retried(machine: Machine) -> None:
    machine.failures["/compose"] = 2
    result = machine.run(machine.script())
    assert result.returncode == 0, result.stdout
    assert machine.requests.count("/compose") == 3
    assert "(attempt 2 of 5), retrying" in result.stdout


def test_downloads_run_while_apt_installs(machine: Machine) -> None:
    result = machine.run(machine.script(), APT_SECONDS="1")
    assert result.returncode == 0, result.stdout
    found = markers(result.stdout)
    assert found.index("END anaconda") < found.index("END packages")
    assert found.index("END docker-compose") < found.index("END packages")


@pytest.mark.parametrize(
    ("path", "cached"),
    [("/compose", "docker-compose-v2.6.1"), ("/anaconda.sh", "Anaconda3-2022.05-Linux-x86_64.sh")],
    ids=["docker-compose", "the Anaconda installer"],
)
def test_a_cached_download_that_fails_its_checksum_is_fetched_again(machine: Machine, path: str, cached: str) -> None:
    # The cache (/var/cache/course-vm) is kept across re-runs; what lies there is re-verified, never trusted.
    cache = machine.root / "cache"
    cache.mkdir()
    (cache / cached).write_bytes(b'#!/bin/sh\necho "ran the tampered file" >>"$CALLS"\n')
    result = machine.run(machine.script())
    assert result.returncode == 0, result.stdout
    assert machine.requests.count(path) == 1
    assert (cache / cached).read_bytes() == (machine.root / "served" / path.lstrip("/")).read_bytes()
    assert "ran the tampered file" not in machine.calls.read_text()


def test_host_keys_are_printed_on_the_console_first(machine: Machine) -> None:
    keys = sorted(Path("/etc/ssh").glob("ssh_host_*_key.pub"))
    if not keys:
        pytest.skip("this machine has no SSH host keys to print")
    assert machine.run(machine.script()).returncode == 0
    console = (machine.root / "console").read_text()
    expected = "".join(k.read_text() for k in keys)
    assert console == f"-----BEGIN SSH HOST KEY KEYS-----\n{expected}-----END SSH HOST KEY KEYS-----\n"
