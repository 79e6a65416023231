"""The rendered setup script's logic, run by real bash with real curl and sha256sum.

Stand-ins (this test's point is the script's logic, not the system): the commands that change the
machine (apt-get, systemctl, usermod, runuser, getent, id, docker, sleep) are small scripts on PATH
that log their arguments; the Anaconda installer and docker-compose are fixture files served by a
local HTTP server. The real VM runs the real ones (tests/test_local_vm.py, when it exists).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.recipe.settings import Artifact
from provisioner.recipe.user_data import UserDataInputs, image_manifest, render_setup_script, render_system_script
from tests.conftest import require_tool
from tests.support.serving import serving
from tests.support.tls import loopback_tls

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
    # Stand-in for apt-cache. `depends docker.io`: docker.io as packaged before Debian 13, or with the line
    # DOCKER_CLI_LINE naming docker-cli. Like the real one it goes on writing after that line (here after a
    # pause, so that a reader that stops at that line cuts it off for sure). `policy docker-cli`: no
    # candidate for the first DOCKER_CLI_MISSING calls (a mirror mid-sync), then one.
    "apt-cache": """
if [[ $1 == depends ]]; then
  echo docker.io; echo '  Depends: containerd'; [[ -z ${DOCKER_CLI_LINE:-} ]] || echo "  $DOCKER_CLI_LINE"
  /bin/sleep 0.2; for n in $(seq 100); do echo "  Suggests: docker-doc-$n"; done
else
  asked=$(cat "$CALLS.policy" 2>/dev/null || echo 0); echo $((asked + 1)) >"$CALLS.policy"
  echo "apt-cache $*" >>"$CALLS"
  echo docker-cli:; echo '  Installed: (none)'
  if ((asked < ${DOCKER_CLI_MISSING:-0})); then echo '  Candidate: (none)'; else echo '  Candidate: 26.1.5+dfsg1-9'; fi
  echo '  Version table:'
fi""",
    "systemctl": 'echo "systemctl $*" >>"$CALLS"',
    "usermod": 'echo "usermod $*" >>"$CALLS"',
    "runuser": 'shift 3; exec "$@"',  # runuser -u USER -- CMD...
    # `getent passwd NAME`: NAME, with FAKE_UID and FAKE_HOME; `getent passwd`: the accounts, root and EXTRA_ACCOUNT.
    "getent": 'if [[ -n ${2:-} ]]; then echo "$2:x:${FAKE_UID:-1000}:1000::$FAKE_HOME:/bin/bash"; else '
    'echo "root:x:0:0::/root:/bin/bash"; [[ -z ${EXTRA_ACCOUNT:-} ]] || echo "$EXTRA_ACCOUNT"; fi',
    "id": 'echo "$(/usr/bin/id -gn)"',
    "install": 'args=(); while (($#)); do case $1 in -o|-g) shift 2;; *) args+=("$1"); shift;; esac; done; '
    'exec /usr/bin/install "${args[@]}"',
    # `docker run` prints hello-world's greeting, unless DOCKER_RUN_FAILS (then it fails as a broken daemon would).
    "docker": 'echo "docker $*" >>"$CALLS"; [[ $1 != run ]] || '
    '{ [[ -z ${DOCKER_RUN_FAILS:-} ]] && echo "Hello from Docker!"; }',
    "useradd": 'echo "useradd $*" >>"$CALLS"',
    "userdel": 'echo "userdel $*" >>"$CALLS"',
    "chown": 'echo "chown $*" >>"$CALLS"',
    "sleep": "exit 0",
}


STALL_SECONDS = 20


class _Handler(http.server.SimpleHTTPRequestHandler):
    failures: dict[str, int]
    stalls: dict[str, int]
    redirects: dict[str, str]
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        if self.path in self.redirects:
            self.send_response(302)
            self.send_header("Location", self.redirects[self.path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.failures.get(self.path, 0) > 0:
            self.failures[self.path] -= 1
            self.send_error(503, "try again")
            return
        if self.stalls.get(self.path, 0) > 0:
            # A server that starts the download, then stops sending (and hangs up STALL_SECONDS later).
            self.stalls[self.path] -= 1
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"#")
            self.wfile.flush()
            time.sleep(STALL_SECONDS)
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
    stalls: dict[str, int]
    redirects: dict[str, str]

    def script(self, compose_sha: str | None = None, base_url: str | None = None, own_key: str = "") -> Path:
        base_url = base_url or self.base_url
        text = render_setup_script(
            UserDataInputs(
                username="student",
                ssh_public_key=STUDENT_KEY,
                student_public_key=own_key,
                anaconda=Artifact("anaconda", "2022.05", f"{base_url}/anaconda.sh", _sha(INSTALLER)),
                docker_compose=Artifact("compose", "v2.6.1", f"{base_url}/compose", compose_sha or _sha(COMPOSE)),
            )
        )
        path = self.root / "course-vm-setup"
        path.write_text(text)
        return path

    def artifacts(self, compose_sha: str | None = None) -> tuple[Artifact, Artifact]:
        return (
            Artifact("anaconda", "2022.05", f"{self.base_url}/anaconda.sh", _sha(INSTALLER)),
            Artifact("compose", "v2.6.1", f"{self.base_url}/compose", compose_sha or _sha(COMPOSE)),
        )

    def system_script(self) -> Path:
        """The bake's script, as `course-vm image bake` renders it."""
        anaconda, compose = self.artifacts()
        path = self.root / "course-vm-bake"
        path.write_text(render_system_script(anaconda, compose, image_manifest(anaconda, compose)))
        return path

    def baked_script(self, compose_sha: str | None = None) -> Path:
        """The setup of a VM that boots from a baked image."""
        anaconda, compose = self.artifacts(compose_sha)
        inputs = UserDataInputs(
            username="student", ssh_public_key=STUDENT_KEY, anaconda=anaconda, docker_compose=compose, baked=True
        )
        path = self.root / "course-vm-setup"
        path.write_text(render_setup_script(inputs))
        return path

    def image_environment(self) -> dict[str, str]:
        """Where the stand-in image keeps its manifest and its Anaconda."""
        return {
            "COURSE_VM_IMAGE_MANIFEST": str(self.root / "image" / "manifest"),
            "COURSE_VM_IMAGE_ANACONDA": str(self.root / "image" / "anaconda3"),
        }

    def run(self, script: Path, **env: str) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": f"{self.root / 'bin'}:/usr/bin:/bin",
            "CALLS": str(self.calls),
            "FAKE_HOME": str(self.home),
            "COURSE_VM_CACHE": str(self.root / "cache"),
            "COURSE_VM_CONSOLE": str(self.root / "console"),
            # The files the account check reads and (for a system account) rewrites: never this machine's.
            "COURSE_VM_ETC": str(self.root / "etc"),
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


STUDENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet student"
# /etc/sudoers.d/90-cloud-init-users as cloud-init writes it for the student.
CLOUD_INIT_SUDOERS = (
    "# Created by cloud-init v. 22.4.2 on Fri, 27 Nov 2026 14:00:00 +0000\n\n"
    "\n# User rules for student\nstudent ALL=(ALL) NOPASSWD:ALL\n"
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
    # What cloud-init's users_groups leaves: the key in ~/.ssh, NOPASSWD sudo in sudoers.d.
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text(STUDENT_KEY + "\n")
    etc = tmp_path / "etc"
    (etc / "sudoers.d").mkdir(parents=True)
    (etc / "ssh" / "sshd_config.d").mkdir(parents=True)
    (etc / "login.defs").write_text("# as Debian's\nUID_MIN\t\t\t 1000\nUID_MAX\t\t\t60000\n#SYS_UID_MIN\t\t  100\n")
    (etc / "sudoers.d" / "90-cloud-init-users").write_text(CLOUD_INIT_SUDOERS)

    requests: list[str] = []
    failures: dict[str, int] = {}
    stalls: dict[str, int] = {}
    redirects: dict[str, str] = {}
    with _serve(served, requests, failures, stalls, redirects) as server:
        yield Machine(
            tmp_path,
            home,
            tmp_path / "calls.log",
            f"http://127.0.0.1:{server.server_address[1]}",
            requests,
            failures,
            stalls,
            redirects,
        )


@contextlib.contextmanager
def _serve(
    served: Path,
    requests: list[str],
    failures: dict[str, int],
    stalls: dict[str, int],
    redirects: dict[str, str],
    tls: ssl.SSLContext | None = None,
) -> Iterator[http.server.ThreadingHTTPServer]:
    """An HTTP (or, with TLS, HTTPS) server on loopback serving SERVED, steered by the dicts."""
    handler = type(
        "Handler", (_Handler,), {"requests": requests, "failures": failures, "stalls": stalls, "redirects": redirects}
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(served)))
    if tls:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    with serving(server):
        yield server


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


@pytest.mark.parametrize(
    "line",
    ["Recommends: docker-cli", "Recommends: <docker-cli>", "Depends: docker-cli", "|Recommends: docker-cli"],
)
def test_where_the_docker_command_is_its_own_package_it_is_installed_too(machine: Machine, line: str) -> None:
    # Debian 13's docker.io recommends docker-cli (apt-cache's <docker-cli>: named, but not in the
    # index it read), and the recipe installs no recommends.
    assert machine.run(machine.script(), DOCKER_CLI_LINE=line).returncode == 0
    calls = machine.calls.read_text().splitlines()
    install = next(c for c in calls if c.startswith("apt-get") and " install " in c)
    assert install.endswith(" install --no-install-recommends docker.io apparmor docker-cli")


def test_a_docker_cli_without_a_candidate_yet_is_waited_for(machine: Machine) -> None:
    # A mirror caught mid-sync: docker.io names docker-cli, which has no version to install yet.
    result = machine.run(machine.script(), DOCKER_CLI_LINE="Recommends: <docker-cli>", DOCKER_CLI_MISSING="2")
    assert result.returncode == 0, result.stdout
    calls = machine.calls.read_text().splitlines()
    install = next(i for i, c in enumerate(calls) if c.startswith("apt-get") and " install " in c)
    assert calls[install].endswith(" install --no-install-recommends docker.io apparmor docker-cli")
    assert [c for c in calls[:install] if c.startswith("apt-cache policy")] == ["apt-cache policy docker-cli"] * 3
    assert sum(c.endswith(" update") for c in calls[:install]) == 3, "apt's index read again while waiting"


def test_a_docker_cli_that_never_gets_a_candidate_fails_the_step_with_one_line(machine: Machine) -> None:
    result = machine.run(machine.script(), DOCKER_CLI_LINE="Recommends: <docker-cli>", DOCKER_CLI_MISSING="9")
    assert result.returncode != 0
    assert "docker.io needs docker-cli, but the Debian mirror has no installable docker-cli yet" in result.stdout
    assert not any(" install " in c for c in machine.calls.read_text().splitlines() if c.startswith("apt-get"))


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


def test_a_download_bigger_than_the_limit_is_refused_at_once(machine: Machine) -> None:
    # The limit (2 GiB on the VM) made smaller than the installer, through the script's test hook.
    limit = len(INSTALLER) - 1
    result = machine.run(machine.script(), COURSE_VM_MAX_DOWNLOAD_BYTES=str(limit))
    assert result.returncode != 0
    assert "[course-vm] FAILED anaconda exit=1" in result.stdout
    assert f"refusing {machine.base_url}/anaconda.sh: it is bigger than {limit} bytes" in result.stdout
    assert machine.requests.count("/anaconda.sh") == 1, "a file too big is not worth a retry"
    assert not list((machine.root / "cache").glob("Anaconda3*")), "the partial file was kept"


def test_a_stalled_download_is_cut_off_and_retried(machine: Machine) -> None:
    # The time limit (30 minutes on the VM) made 2 seconds, through the script's test hook.
    machine.stalls["/compose"] = 1
    started = time.monotonic()
    result = machine.run(machine.script(), COURSE_VM_DOWNLOAD_SECONDS="2")
    assert time.monotonic() - started < STALL_SECONDS - 5, "the setup waited for a server that stopped sending"
    assert result.returncode == 0, result.stdout
    assert machine.requests.count("/compose") == 2
    assert "(attempt 1 of 5), retrying" in result.stdout


def test_a_redirect_to_another_protocol_is_not_followed(machine: Machine) -> None:
    # curl follows a redirect to ftp:// by default; the recipe speaks only http(s) to a local mirror.
    connections: list[object] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(0.2)

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    connection, _ = listener.accept()
                    connections.append(connection)
                    connection.close()

        stop = threading.Event()
        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        machine.redirects["/compose"] = f"ftp://127.0.0.1:{listener.getsockname()[1]}/compose"
        try:
            result = machine.run(machine.script())
        finally:
            stop.set()
            thread.join(5)
    assert connections == [], "curl followed the redirect to ftp://"
    assert result.returncode != 0
    assert "[course-vm] FAILED docker-compose exit=1" in result.stdout
    assert 'Protocol "ftp" not supported or disabled' in result.stdout


@pytest.fixture
def tls(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A certificate for 127.0.0.1, and the bundle that makes curl trust it (CURL_CA_BUNDLE)."""
    return loopback_tls(tmp_path / "tls")


def test_an_https_download_is_never_redirected_to_http(machine: Machine, tls: tuple[ssl.SSLContext, Path]) -> None:
    # An https URL is fetched over https only: a redirect (or a network path) cannot downgrade it.
    context, certificate = tls
    requests: list[str] = []
    redirects = {"/anaconda.sh": f"{machine.base_url}/anaconda.sh"}
    with _serve(machine.root / "served", requests, {}, {}, redirects, tls=context) as server:
        https = f"https://127.0.0.1:{server.server_address[1]}"
        result = machine.run(machine.script(base_url=https), CURL_CA_BUNDLE=str(certificate))
    assert "/compose" in requests and "END docker-compose" in result.stdout, "plain https must still work"
    assert result.returncode != 0
    assert "[course-vm] FAILED anaconda exit=1" in result.stdout
    assert 'Protocol "http" not supported or disabled' in result.stdout
    assert "/anaconda.sh" not in machine.requests, "curl followed the redirect to http://"


def test_a_url_of_another_protocol_is_refused(machine: Machine) -> None:
    # Settings validation allows only https (and http for local mirrors); the script holds without it.
    # The two downloads run side by side and the first failure ends the setup, so either may be the
    # one that says so.
    result = machine.run(machine.script(base_url="file:///etc"))
    assert result.returncode != 0
    assert re.search(r"refusing file:///etc/\S+: only https:// and http:// downloads are allowed", result.stdout), (
        result.stdout
    )


@pytest.mark.parametrize("uid", [0, 42, 999, 60001, 65534])
def test_a_system_account_is_refused_and_loses_what_cloud_init_gave_it(machine: Machine, uid: int) -> None:
    # cloud-init gives the key and NOPASSWD sudo to an existing account of that name (e.g. _apt, nobody).
    keys = machine.home / ".ssh" / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOfTheImage backup@image\n" + STUDENT_KEY + "\n")
    result = machine.run(machine.script(), FAKE_UID=str(uid))
    assert result.returncode != 0
    assert f"  account| student is a system account of this image (uid {uid}); choose another username\n" in (
        result.stdout
    )
    assert "[course-vm] FAILED account exit=1" in result.stdout
    assert "BEGIN packages" not in result.stdout and machine.requests == []
    etc = machine.root / "etc"
    assert (etc / "sudoers.d" / "90-cloud-init-users").read_text() == (
        "# Created by cloud-init v. 22.4.2 on Fri, 27 Nov 2026 14:00:00 +0000\n\n\n"
    )
    assert keys.read_text() == "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOfTheImage backup@image\n"
    # Google's guest agent may write the key again (from the ssh-keys metadata): no SSH login at all.
    assert (etc / "ssh" / "sshd_config.d" / "05-course-vm-system-account.conf").read_text() == "DenyUsers student\n"
    assert "systemctl try-reload-or-restart ssh.service" in machine.calls.read_text()


def test_a_system_account_loses_the_students_own_key_too(machine: Machine) -> None:
    own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKeyOfTheStudent alice@laptop"
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOtherKeyOfTheImage backup@image\n"
    keys = machine.home / ".ssh" / "authorized_keys"
    keys.write_text(other + own + "\n" + STUDENT_KEY + "\n")
    result = machine.run(machine.script(own_key=" ".join(own.split()[:2])), FAKE_UID="42")
    assert "student is a system account of this image (uid 42)" in result.stdout
    assert keys.read_text() == other


@pytest.mark.parametrize("uid", [1000, 1001, 60000])
def test_a_regular_account_made_before_cloud_init_keeps_its_grants(machine: Machine, uid: int) -> None:
    # On GCE, Google's guest agent may create the student (useradd: a regular uid) before cloud-init does.
    result = machine.run(machine.script(), FAKE_UID=str(uid))
    assert result.returncode == 0, result.stdout
    assert (machine.root / "etc" / "sudoers.d" / "90-cloud-init-users").read_text() == CLOUD_INIT_SUDOERS
    assert (machine.home / ".ssh" / "authorized_keys").read_text() == STUDENT_KEY + "\n"
    assert not list((machine.root / "etc" / "ssh" / "sshd_config.d").iterdir())


def test_without_login_defs_system_uids_are_those_below_1000(machine: Machine) -> None:
    (machine.root / "etc" / "login.defs").unlink()
    assert machine.run(machine.script(), FAKE_UID="1000").returncode == 0
    result = machine.run(machine.script(), FAKE_UID="999")
    assert "student is a system account of this image (uid 999)" in result.stdout


def test_a_system_accounts_keys_symlink_is_not_written_through(machine: Machine) -> None:
    # The account may own its home: its authorized_keys may point at a file root must not rewrite.
    target = machine.root / "etc" / "precious"
    target.write_text(f"{STUDENT_KEY}\nother content\n")
    keys = machine.home / ".ssh" / "authorized_keys"
    keys.unlink()
    keys.symlink_to(target)
    result = machine.run(machine.script(), FAKE_UID="42")
    assert "student is a system account of this image (uid 42)" in result.stdout
    assert target.read_text() == f"{STUDENT_KEY}\nother content\n"
    assert list((machine.home / ".ssh").iterdir()) == [keys], "a file of the setup's was left in the home"


# The bake's system part, and a VM from the image it makes.


def test_the_bake_installs_the_system_part_checks_it_as_a_throwaway_user_and_writes_the_manifest(
    machine: Machine,
) -> None:
    result = machine.run(machine.system_script(), **machine.image_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [m.split()[1] for m in markers(result.stdout) if m.startswith("BEGIN")]
    assert sorted(steps[:3]) == ["anaconda", "docker-compose", "packages"]
    assert steps[3:] == ["docker", "check", "manifest"] and markers(result.stdout)[-1].startswith("DONE ")
    image = machine.root / "image"
    assert (image / "anaconda3" / "bin" / "conda").is_file()
    anaconda, compose = machine.artifacts()
    assert (image / "manifest").read_text() == image_manifest(anaconda, compose) + "\n"
    cache = machine.root / "cache"
    assert sorted(p.name for p in cache.iterdir()) == ["docker-compose-v2.6.1"], "the installer is not kept"
    calls = machine.calls.read_text()
    assert "usermod" not in calls, "the bake makes no student"
    assert "useradd --create-home --groups docker --shell /bin/bash course-vm-bake-check" in calls
    assert calls.index("docker run --rm hello-world") < calls.rindex("userdel --remove course-vm-bake-check\n")


def _group() -> str:
    return subprocess.run(["id", "-gn"], capture_output=True, text=True, check=True).stdout.strip()


def bake(machine: Machine) -> None:
    assert machine.run(machine.system_script(), **machine.image_environment()).returncode == 0
    machine.calls.write_text("")


def test_a_baked_vm_checks_the_image_first_then_does_only_the_students_part(machine: Machine) -> None:
    bake(machine)
    machine.requests.clear()
    result = machine.run(machine.baked_script(), **machine.image_environment())
    assert result.returncode == 0, result.stdout + result.stderr
    steps = [m.split()[1] for m in markers(result.stdout) if m.startswith("BEGIN")]
    assert steps[:2] == ["image", "account"] and "packages" not in steps and "curl" not in steps
    assert sorted(steps[2:5]) == ["anaconda", "docker", "docker-compose"] and steps[5:] == ["shell", "sshd"]
    assert machine.requests == [], "nothing is downloaded: the image has it"
    calls = machine.calls.read_text()
    assert "apt-get" not in calls and "usermod -aG docker student" in calls
    assert f"chown -R student:{_group()} {machine.root / 'image' / 'anaconda3'}" in calls
    conda = machine.home / "anaconda3"
    assert conda.is_symlink() and conda.resolve() == (machine.root / "image" / "anaconda3").resolve()
    assert (machine.home / "soft" / "docker-compose").read_bytes() == COMPOSE
    assert "conda initialize" in (machine.home / ".bashrc").read_text()
    again = machine.run(machine.baked_script(), **machine.image_environment())
    assert again.returncode == 0 and "already downloaded" in again.stdout


def test_a_students_own_anaconda_on_a_kept_home_disk_stays(machine: Machine) -> None:
    bake(machine)
    own = machine.home / "anaconda3" / "bin"
    own.mkdir(parents=True)
    (own / "conda").write_text("#!/bin/sh\n")
    (own / "conda").chmod(0o755)
    result = machine.run(machine.baked_script(), **machine.image_environment())
    assert result.returncode == 0, result.stdout
    assert not (machine.home / "anaconda3").is_symlink()
    assert "Anaconda already installed" in result.stdout


def test_an_image_without_what_the_settings_ask_for_fails_the_first_step_saying_what_differs(
    machine: Machine,
) -> None:
    bake(machine)
    result = machine.run(machine.baked_script(compose_sha="0" * 64), **machine.image_environment())
    assert result.returncode == 1
    assert markers(result.stdout)[:2] == ["BEGIN image", "FAILED image exit=1"]
    assert "BEGIN account" not in result.stdout, "nothing else runs"
    held = [line for line in result.stdout.splitlines() if line.startswith("  image| ")]
    assert held == [
        f"  image| the image holds 'docker-compose v2.6.1 {_sha(COMPOSE)}' where these settings ask for "
        f"'docker-compose v2.6.1 {'0' * 64}'",
        "  image| image out of date: bake again ('course-vm image bake'), or set bakedImage to false",
    ]


def test_an_image_that_was_never_baked_fails_the_first_step(machine: Machine) -> None:
    result = machine.run(machine.baked_script(), **machine.image_environment())
    assert result.returncode == 1
    assert "this image was not baked by course-vm" in result.stdout
    assert markers(result.stdout)[:2] == ["BEGIN image", "FAILED image exit=1"]


@pytest.mark.parametrize("broken", ["docker", "docker-compose"])
def test_a_bake_whose_check_fails_fails_at_that_step_and_writes_no_manifest(machine: Machine, broken: str) -> None:
    env = machine.image_environment()
    if broken == "docker":
        env["DOCKER_RUN_FAILS"] = "1"
    else:
        # A docker-compose that does not run (its checksum matching: a release that is broken).
        machine.root.joinpath("served", "compose").write_bytes(BROKEN_COMPOSE)
    script = machine.system_script() if broken == "docker" else _system_script_for(machine, BROKEN_COMPOSE)
    result = machine.run(script, **env)
    assert result.returncode != 0
    assert "FAILED check exit=" in result.stdout and "DONE" not in result.stdout
    assert not (machine.root / "image" / "manifest").exists(), "a bake that failed its check marks no image"


BROKEN_COMPOSE = b"#!/bin/sh\nexit 3\n"


def _system_script_for(machine: Machine, compose: bytes) -> Path:
    """The bake's script for a served docker-compose of COMPOSE's bytes (its checksum matching)."""
    anaconda, _ = machine.artifacts()
    other = Artifact("compose", "v2.6.1", f"{machine.base_url}/compose", _sha(compose))
    path = machine.root / "course-vm-bake"
    path.write_text(render_system_script(anaconda, other, image_manifest(anaconda, other)))
    return path


def test_a_bake_that_would_leave_a_login_account_in_the_image_fails_its_check(machine: Machine) -> None:
    # As cloud-init's default user (`debian`, uid 1000) would be: every VM's, with sudo, and on the student's uid.
    env = {**machine.image_environment(), "EXTRA_ACCOUNT": "debian:x:1000:1000:Debian:/home/debian:/bin/bash"}
    result = machine.run(machine.system_script(), **env)
    assert result.returncode != 0
    assert "check| the image would hold these accounts: debian; a bake makes none" in result.stdout
    assert not (machine.root / "image" / "manifest").exists()
