"""A newcomer's first hour (issue 22), case by case: the installed `course-vm`, run as a subprocess with a fresh
HOME and no Pulumi CLI (this machine has none), gives each case its exit status and the words it needs.

Ctrl-C during `up`'s preview needs a Pulumi CLI: tests/cli/test_lifecycle.py runs it with the stand-in one.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import provisioner
from provisioner.errors import ExitStatus
from tests.conftest import ROOT
from tests.support.installed import Installed, install_wheel

GOOD = ("--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "203.0.113.7/32")
EUROPEAN_ROSTER = "\ufeffname;sshPublicKey;email\r\nana;;ana@example.edu\r\nbo;;bo@example.edu\r\n".encode()


@dataclass(frozen=True)
class Case:
    """`course-vm ARGS` in HOME/CWD after FILES (paths under HOME) are written: its STATUS, and each of SAID in
    what it printed; `{home}` in ARGS and SAID is the fresh HOME."""

    args: tuple[str, ...]
    status: int
    said: tuple[str, ...]
    not_said: tuple[str, ...] = ()
    cwd: str = ""
    files: dict[str, bytes] = field(default_factory=dict)


CASES = {
    # 1. `up` checks its flags before the prerequisites, all at once, each Fix a `course-vm up` command.
    "up flags first": Case(
        ("up", "--project", "My_Proj", "--zone", "europe-west1", "--allow", "1.2.3.4/33"), ExitStatus.BAD_INPUT,
        ("gcp:project: got 'My_Proj'", "`course-vm up --zone europe-west1-b`", "allowedSshCidrs[0]: got '1.2.3.4/33'"),
        ("Pulumi CLI", "pulumi config"),
    ),
    "up --allow without its address": Case(
        ("up", "--project", "course-project-1", "--zone", "europe-west1-b", "--allow", "/32"), ExitStatus.BAD_INPUT,
        ("no address before the slash", "curl -s https://checkip.amazonaws.com", "Invoke-RestMethod"),
        ("Pulumi CLI",),
    ),
    # 2. One project folder: see test_the_checkout_and_the_installed_command_share_one_project_folder.
    "env names the project folder": Case(("env",), ExitStatus.OK, ("cd {home}/config/course-vm",)),
    # 3. A relative roster path is the working directory's, and the message shows the path tried.
    "up roster path": Case(
        ("up", *GOOD, "--set", "studentsCsv=roster.csv"), ExitStatus.BAD_INPUT,
        ("{home}/class/roster.csv cannot be read",), cwd="class",
    ),
    # 4. `render` works with no Pulumi and no stack.
    "render with no Pulumi": Case(
        ("render", "--set", "username=ana"), ExitStatus.OK, ('#cloud-config', '  - name: "ana"'),
    ),
    # 5. The installed command runs from anywhere.
    "version": Case(("--version",), ExitStatus.OK, (f"course-vm {provisioner.__version__}",)),
    # 7. A roster a European Excel saved: `;`, a byte-order mark, CRLF.
    "European roster": Case(
        ("render", "--set", "studentsCsv=roster.csv", "--student", "bo"), ExitStatus.OK, ('  - name: "bo"',),
        cwd="class", files={"class/roster.csv": EUROPEAN_ROSTER},
    ),
    "roster without a name column": Case(
        ("render", "--set", "studentsCsv=roster.csv"), ExitStatus.BAD_INPUT,
        ("{home}/class/roster.csv has no `name` column", "'student|email'"),
        cwd="class", files={"class/roster.csv": b"student|email\nana|ana@example.edu\n"},
    ),
    # 9. `up --set`: checked like the stack's settings; a good one goes on to the prerequisites.
    "up --set refused": Case(
        ("up", *GOOD, "--set", "autoStopIdleMinutes=never"), ExitStatus.BAD_INPUT,
        ("`course-vm up --set autoStopIdleMinutes=60`",),
    ),
    "up --set accepted": Case(
        ("up", *GOOD, "--set", "spot=true", "--set", "autoStopIdleMinutes=0"), ExitStatus.MISSING_PREREQUISITE,
        ("course-vm up needs", "the Pulumi CLI is not on PATH"),
    ),
    # 10. The command line.
    "up --help": Case(("up", "--help"), ExitStatus.OK, ("example", "--set KEY=VALUE", "(default:")),
    "mistyped option": Case(
        ("up", "--zon", "x"), ExitStatus.BAD_INPUT, ("usage: course-vm up", "unrecognized arguments: --zon x")
    ),
    "no subcommand": Case(("local",), ExitStatus.BAD_INPUT, ("course-vm local: error: choose a command",)),
    "public key as identity": Case(
        ("check", "--host", "127.0.0.1", "--user", "ana", "--identity", "{home}/.ssh/k.pub", "--host-key", "KEY"),
        ExitStatus.BAD_INPUT, ("--identity {home}/.ssh/k.pub is a public key", "Fix: --identity {home}/.ssh/k"),
        ("chmod",),
    ),
    "no key as identity": Case(
        ("check", "--host", "127.0.0.1", "--user", "ana", "--identity", "/etc/passwd", "--host-key", "KEY"),
        ExitStatus.BAD_INPUT, ("--identity /etc/passwd is not an OpenSSH private key",), ("chmod",),
    ),
    "host key cut short": Case(
        ("check", "--host", "127.0.0.1", "--user", "ana", "--identity", "{home}/.ssh/k", "--host-key",
         "ssh-ed25519 AAAA"),
        ExitStatus.BAD_INPUT, ("cut short when copied", "Fix: copy the whole line"),
    ),
    "check with no Pulumi": Case(("check",), ExitStatus.MISSING_PREREQUISITE, ("needs the Pulumi CLI",)),
    "local list with none": Case(("local", "list"), ExitStatus.OK, ("no local VMs. Create one: course-vm local up",)),
}  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    return install_wheel(tmp_path_factory.mktemp("newcomer"))


def fresh_home(base: Path) -> Path:
    """A HOME with nothing of course-vm's, and an ed25519 key pair at ~/.ssh/k (made by OpenSSH's ssh-keygen)."""
    home = base / "home"
    (home / ".ssh").mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / ".ssh" / "k")], check=True)
    return home


@pytest.mark.integration
@pytest.mark.parametrize("name", CASES)
def test_a_newcomers_case(name: str, installed: Installed, tmp_path: Path) -> None:
    case = CASES[name]
    home = fresh_home(tmp_path)
    for path, data in case.files.items():
        (home / path).parent.mkdir(parents=True, exist_ok=True)
        (home / path).write_bytes(data)
    (home / case.cwd).mkdir(parents=True, exist_ok=True)
    host_key = " ".join((home / ".ssh" / "k.pub").read_text().split()[:2])  # any well-formed key line
    args = [arg.format(home=home) if arg != "KEY" else host_key for arg in case.args]
    result = installed.run(*args, home=home, cwd=home / case.cwd)
    printed = result.stdout + result.stderr
    assert result.returncode == case.status, printed
    for said in case.said:
        assert said.format(home=home) in printed, printed
    for unsaid in (*case.not_said, "course-vm: course-vm", "Traceback", "required: ", "_command"):
        assert unsaid not in printed, printed


@pytest.mark.integration
def test_the_checkout_and_the_installed_command_share_one_project_folder(installed: Installed, tmp_path: Path) -> None:
    # Neither is told XDG_CONFIG_HOME: both take its default, ~/.config/course-vm.
    home = fresh_home(tmp_path)
    environment = {"PATH": "/usr/bin:/bin", "HOME": str(home)}
    runs = [
        subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, check=False)
        for command, cwd in (
            ([str(installed.prefix / "bin" / "course-vm"), "env"], home),
            ([sys.executable, "-m", "provisioner", "env"], ROOT),
        )
    ]
    assert [run.returncode for run in runs] == [0, 0], [run.stderr for run in runs]
    assert [run.stdout.splitlines()[-1] for run in runs] == [f"cd {home}/.config/course-vm"] * 2
