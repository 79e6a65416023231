"""A real OpenSSH server on loopback for the checker's tests, with a throwaway host key and user.

The server is Debian's real sshd. What the VM would run behind it is stood in for by small
scripts on the session's PATH (`docker`, `cloud-init`, `systemctl`, `sudo`), steered by files in
`state/`, and by `docker-compose` and `conda` stand-ins that only an interactive bash finds, through
the test user's ~/.bashrc, as on the VM. The real ones run in the local-VM end-to-end test.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from provisioner.access.host_keys import HostKey, parse_host_key
from provisioner.local.vm import free_loopback_port
from tests.conftest import require_tool

USER_PREFIX = "cvm"
"""Every test user's name is this and 8 hex digits."""
CREATED_USERS: list[tuple[str, int]] = []
"""(name, uid) of every test user this session made; tests/conftest.py checks at the end that none is left."""

HELLO = "Hello from Docker!\nThis message shows that your installation appears to be working correctly.\n"

STUBS = {
    # Stand-in for docker: `state/docker` says how `docker run` behaves.
    "docker": r"""
mode=$(cat "$STATE/docker" 2>/dev/null || echo ok)
case $mode in
  ok) printf '%s' "$HELLO" ;;
  denied) echo 'docker: permission denied while trying to connect to the Docker daemon socket' >&2; exit 126 ;;
  daemon-down)
    echo 'docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock.' \
      'Is the docker daemon running?' >&2
    exit 1 ;;
  no-greeting) echo 'Status: Downloaded newer image for hello-world:latest' ;;  # exits 0, but no greeting
  hang) sleep 600 ;;  # never answers: the checker gives up on it
  drop) # kill this session's sshd process: the connection drops mid-check
    p=$PPID
    while [ "$(cat /proc/$p/comm)" != sshd ]; do p=$(awk '{print $4}' /proc/$p/stat); done
    kill -9 "$p" ;;
  *) printf '%s' "$mode" ;;  # any other text: printed as the container's output, exit 0
esac
""",
    # Stand-in for cloud-init: prints state/cloud-init.json; state/result.json stands in for
    # /run/cloud-init/result.json (all stages over).
    "cloud-init": r"""
if [ "$2" = --help ]; then echo 'usage: cloud-init status [--format {json,tabular,yaml}] [-l] [-w]'; exit 0; fi
# state/cloud-init.txt: a release older than 22.1, which knows no --format and prints text.
if [ -e "$STATE/cloud-init.txt" ]; then
  case "$*" in *--format*) echo 'cloud-init: error: unrecognized arguments: --format' >&2; exit 2;; esac
  cat "$STATE/cloud-init.txt"
else
  cat "$STATE/cloud-init.json"
fi
exit "$(cat "$STATE/cloud-init.rc" 2>/dev/null || echo 0)"
""",
    "systemctl": 'echo "$(cat "$STATE/docker-enabled" 2>/dev/null || echo enabled)"',
    # Stand-in for sudo reading the output log: prints state/output.log.
    "sudo": 'cat "$STATE/output.log" 2>/dev/null',
}


@dataclass
class Sshd:
    """One sshd on 127.0.0.1:port, logging in `user` with `client_key` only."""

    base: Path
    user: str
    home: Path
    port: int
    host_key: HostKey
    client_key: Path
    client_public: str
    state: Path
    process: subprocess.Popen[bytes] | None = None
    timers: list[threading.Timer] = field(default_factory=list)

    @property
    def log(self) -> str:
        return (self.base / "sshd.log").read_text(errors="replace")

    def set(self, name: str, value: str) -> None:
        (self.state / name).write_text(value)

    def authorize(self, after: float = 0.0) -> None:
        self._later(after, lambda: (self.base / "authorized_keys").write_text(self.client_public + "\n"))

    def start(self, after: float = 0.0) -> None:
        def launch() -> None:
            with (self.base / "sshd.log").open("ab") as log:
                self.process = subprocess.Popen(
                    [shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(self.base / "sshd_config")],
                    stderr=log,
                )

        self._later(after, launch)

    def _later(self, seconds: float, action: object) -> None:
        if seconds <= 0:
            action()  # type: ignore[operator]
            return
        timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
        timer.start()
        self.timers.append(timer)

    def stop(self) -> None:
        for timer in self.timers:
            timer.cancel()
        if self.process:
            self.process.terminate()
            self.process.wait(10)


def other_host_key(folder: Path, key_type: str = "ed25519") -> str:
    """A new host key of KEY_TYPE that no sshd has (`TYPE BASE64 COMMENT` and a newline, as ssh-keygen writes
    FOLDER/other.pub): a pin that must not match."""
    subprocess.run(
        [require_tool("ssh-keygen"), "-q", "-t", key_type, "-N", "", "-f", str(folder / "other")], check=True
    )
    return (folder / "other.pub").read_text()


def make_sshd() -> Sshd:
    """Build (not start) an sshd with a new user, host key and client key. Needs root."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None:
        require_tool("sshd")
    keygen = require_tool("ssh-keygen")
    _need_root("the sshd tests")
    base = Path(tempfile.mkdtemp(prefix="course-vm-sshd-"))
    base.chmod(0o755)
    home = base / "home"
    entry = add_user(home)
    user = entry.pw_name

    for directory in (home, home / "soft", home / "anaconda3" / "bin"):
        directory.mkdir(parents=True)
    (home / "soft" / "docker-compose").write_text("#!/bin/sh\necho 'Docker Compose version v2.6.1'\n")
    (home / "anaconda3" / "bin" / "conda").write_text("#!/bin/sh\necho 'conda 4.12.0'\n")
    # As on the VM: both PATH lines only in ~/.bashrc, after the early return for non-interactive shells.
    (home / ".bashrc").write_text(
        "case $- in *i*) ;; *) return;; esac\n"
        'export PATH="${HOME}/soft:${PATH}"\n'
        'export PATH="${HOME}/anaconda3/bin:${PATH}"\n'
    )
    for path in (home / "soft" / "docker-compose", home / "anaconda3" / "bin" / "conda"):
        path.chmod(0o755)
    subprocess.run(["chown", "-R", f"{entry.pw_uid}:{entry.pw_gid}", str(home)], check=True)

    stubs, state = base / "bin", base / "state"
    stubs.mkdir()
    state.mkdir(mode=0o777)
    state.chmod(0o777)
    for name, body in STUBS.items():
        (stubs / name).write_text(f"#!/bin/bash\nSTATE={state}\nHELLO='{HELLO}'\n{body}")
        (stubs / name).chmod(0o755)
    (state / "cloud-init.json").write_text('{"status": "done", "extended_status": "done", "errors": []}')
    (state / "cloud-init.json").chmod(0o666)
    (state / "result.json").write_text("{}")  # cloud-init has finished all its stages

    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(base / "host_ed25519")], check=True)
    subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(base / "client")], check=True)
    (base / "client").chmod(0o400)
    port = free_loopback_port()
    (base / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {base / 'host_ed25519'}\n"
        f"AuthorizedKeysFile {base / 'authorized_keys'}\nPidFile none\nUsePAM no\nStrictModes no\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\n"
        f"AllowUsers {user}\nSetEnv PATH={stubs}:/usr/local/bin:/usr/bin:/bin "
        f"COURSE_VM_CLOUD_INIT_RESULT={state / 'result.json'}\nLogLevel VERBOSE\n"
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    return Sshd(
        base=base,
        user=user,
        home=home,
        port=port,
        host_key=parse_host_key((base / "host_ed25519.pub").read_text()),
        client_key=base / "client",
        client_public=(base / "client.pub").read_text().strip(),
        state=state,
    )


def _need_root(who: str) -> None:
    """Skip (on a developer machine) or fail (in CI) the test unless it runs as root."""
    if os.geteuid() != 0:
        message = f"{who} need root to create a throwaway user"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def remove_sshd(server: Sshd) -> None:
    """Stop the server, end every process of its user, delete the user. Fails loudly if any step fails.

    A remote command the checker gave up on may still run as the user; `userdel` refuses to
    delete a user with processes, and a silent failure once left 44 test users on one machine.
    """
    try:
        server.stop()
        delete_user(server.user)
    finally:
        shutil.rmtree(server.base, ignore_errors=True)


def add_user(home: Path) -> pwd.struct_passwd:
    """A new local user (USER_PREFIX and 8 hex digits) whose passwd entry names HOME, not made here; its entry.
    Recorded in CREATED_USERS, for delete_user and tests/conftest.py's check that none is left. Needs root."""
    user = f"{USER_PREFIX}{secrets.token_hex(4)}"  # unique, and no longer than a login may be
    # "*": no password, but not locked (sshd without PAM refuses locked accounts, even for keys).
    subprocess.run(["useradd", "-M", "-d", str(home), "-s", "/bin/bash", "-U", "-p", "*", user], check=True)
    entry = pwd.getpwnam(user)
    CREATED_USERS.append((user, entry.pw_uid))
    return entry


def delete_user(user: str) -> None:
    """End every process of test user USER, then delete it, its home and its group. Fails loudly if any step fails."""
    end_processes(pwd.getpwnam(user).pw_uid)
    deleted = subprocess.run(["userdel", "-r", user], check=False, capture_output=True, text=True)
    if deleted.returncode != 0:
        raise AssertionError(f"userdel -r {user} exited {deleted.returncode}: {deleted.stderr.strip()}")
    if group_names(user):
        raise AssertionError(f"groups of test user {user} left: {', '.join(group_names(user))}")


@contextlib.contextmanager
def local_user(home: Path) -> Iterator[pwd.struct_passwd]:
    """A throwaway local user whose home is HOME (made here, theirs, 0700), for the block's length: a client such
    as OpenSSH's ssh, which expands `~` from the passwd entry, never $HOME, run as them finds its files there
    (`as_user`). Deleted with its processes and home at the end. Needs root (skipped or failed as make_sshd is)."""
    _need_root("tests that run a client as a throwaway user")
    entry = add_user(home)
    try:
        home.mkdir(mode=0o700)
        os.chown(home, entry.pw_uid, entry.pw_gid)
        yield entry
    finally:
        delete_user(entry.pw_name)


def as_user(entry: pwd.struct_passwd) -> dict[str, Any]:
    """subprocess.run's arguments that run a program as ENTRY's user and group only (no group of root's)."""
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def end_processes(uid: int, seconds: float = 10.0) -> None:
    """Kill every process of UID and wait until none is left; AssertionError if some survive."""
    deadline = time.monotonic() + seconds
    while survivors := processes_of(uid):
        if time.monotonic() > deadline:
            raise AssertionError(f"processes of test user {uid} survive SIGKILL: {survivors}")
        for process in survivors:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(process.split()[0]), signal.SIGKILL)
        time.sleep(0.05)


def processes_of(uid: int) -> list[str]:
    """`PID COMMAND` of every process whose real or effective user is UID (read from /proc, as pgrep does)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # it ended meanwhile
        real, effective = fields.get("Uid", "").split()[:2] or ["", ""]
        if str(uid) in (real, effective):
            found.append(f"{status.parent.name} {fields.get('Name', '').strip()}")
    return found


def group_names(prefix: str) -> list[str]:
    """The groups whose name starts with PREFIX (a test user's own group, and groups tests add for it)."""
    return [entry.gr_name for entry in grp.getgrall() if entry.gr_name.startswith(prefix)]


def leftovers() -> list[str]:
    """What the test users this session made left behind: users, their processes and groups."""
    found: list[str] = []
    for user, uid in CREATED_USERS:
        if user in {entry.pw_name for entry in pwd.getpwall()}:
            found.append(f"user {user} still exists")
        found += [f"process of {user} still runs: {process}" for process in processes_of(uid)]
        found += [f"group {group} still exists" for group in group_names(user)]
    return found
