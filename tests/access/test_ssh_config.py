"""~/.ssh/config entries, on real files in a throwaway HOME, read back by OpenSSH's own parser."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from provisioner.access.ssh_config import (
    INCLUDE_MARK,
    add_host,
    config_path,
    hosts_file,
    remove_host,
    ssh_config_block,
)
from provisioner.errors import CourseVmError
from tests.conftest import require_tool
from tests.support.iap_relay import RealGcloudTunnels
from tests.support.openssh import resolved, resolved_all
from tests.support.sshd import Sshd

USERS_CONFIG = """# my own settings
Host work
    HostName work.example.org
    User me

Host *
    ServerAliveInterval 30
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def block(alias: str = "course-vm-local-a", port: int = 2222) -> str:
    return ssh_config_block(alias, "127.0.0.1", "student", "/keys/course-vm", "/vm/known_hosts", port)


def test_a_new_config_gets_the_include_and_our_file(home: Path) -> None:
    add_host("course-vm-local-a", block())
    config = home / ".ssh" / "config"
    assert config.read_text() == f'Include "{hosts_file()}"  {INCLUDE_MARK}\n'
    assert os.stat(config).st_mode & 0o777 == 0o600
    assert os.stat(home / ".ssh").st_mode & 0o777 == 0o700
    assert os.stat(hosts_file()).st_mode & 0o777 == 0o600


@pytest.mark.integration
def test_openssh_reads_the_host_and_the_users_own_hosts_still_work(home: Path) -> None:
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "config").write_text(USERS_CONFIG)
    add_host("course-vm-local-a", block())
    ours = resolved(home, "course-vm-local-a")
    assert (ours["hostname"], ours["port"], ours["user"]) == ("127.0.0.1", "2222", "student")
    assert ours["stricthostkeychecking"] == "true"
    assert ours["userknownhostsfile"] == "/vm/known_hosts"
    assert ours["identitiesonly"] == "yes"
    # Bound to the laptop's loopback, whatever a GatewayPorts of the user's own would say.
    assert resolved_all(home, "course-vm-local-a", "localforward") == [
        "[localhost]:8888 [localhost]:8888",
        "[localhost]:5000 [localhost]:5000",
    ]
    assert ours["forwardagent"] == "no"
    theirs = resolved(home, "work")
    assert (theirs["hostname"], theirs["user"], theirs["serveraliveinterval"]) == ("work.example.org", "me", "30")


def test_the_users_config_is_kept_byte_for_byte_and_restored(home: Path) -> None:
    config = home / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    config.write_text(USERS_CONFIG)
    config.chmod(0o644)
    add_host("course-vm-local-a", block())
    add_host("course-vm-local-b", block("course-vm-local-b", 2223))
    add_host("course-vm-local-a", block(port=2224))  # replaced, not added twice
    text = config.read_text()
    assert text == f'Include "{hosts_file()}"  {INCLUDE_MARK}\n' + USERS_CONFIG
    assert os.stat(config).st_mode & 0o777 == 0o644
    ours = hosts_file().read_text()
    assert ours.count("Host course-vm-local-a\n") == 1 and "Port 2224" in ours and "Port 2222" not in ours

    assert remove_host("course-vm-local-a") is True
    assert (
        "course-vm-local-a" not in hosts_file().read_text() and "Host course-vm-local-b\n" in hosts_file().read_text()
    )
    assert remove_host("course-vm-local-b") is True
    assert config.read_text() == USERS_CONFIG
    assert not hosts_file().exists()
    assert remove_host("course-vm-local-b") is False


def test_a_symlinked_config_stays_a_link(home: Path) -> None:
    dotfiles = home / "dotfiles"
    dotfiles.mkdir()
    (dotfiles / "ssh_config").write_text(USERS_CONFIG)
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "config").symlink_to(dotfiles / "ssh_config")
    add_host("course-vm-local-a", block())
    assert (home / ".ssh" / "config").is_symlink()
    assert (dotfiles / "ssh_config").read_text().endswith(USERS_CONFIG)
    remove_host("course-vm-local-a")
    assert (dotfiles / "ssh_config").read_text() == USERS_CONFIG


def test_a_bad_alias_is_refused(home: Path) -> None:
    with pytest.raises(ValueError, match="bad ssh host alias"):
        add_host("evil\nHost *", block())


def test_ssh_config_block_quotes_a_key_path_with_spaces() -> None:
    text = ssh_config_block("course-vm", "1.2.3.4", "student", "/home/a b/key")
    assert '    IdentityFile "/home/a b/key"\n' in text
    assert "Port" not in text and "StrictHostKeyChecking" not in text


@pytest.mark.integration
def test_a_home_with_a_space_is_included_and_read_by_openssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "Jane Doe"
    monkeypatch.setenv("HOME", str(home))
    add_host("course-vm-local-a", block())
    ours = resolved(home, "course-vm-local-a")
    assert (ours["hostname"], ours["port"], ours["user"]) == ("127.0.0.1", "2222", "student")
    assert ours["userknownhostsfile"] == "/vm/known_hosts"


def test_the_include_line_of_an_older_course_vm_is_replaced_and_removed(home: Path) -> None:
    config = home / ".ssh" / "config"
    config.parent.mkdir(mode=0o700)
    # What course-vm wrote before it quoted the path.
    config.write_text(f"Include {home}/.ssh/course-vm.config  {INCLUDE_MARK}\n" + USERS_CONFIG)
    add_host("course-vm-local-a", block())
    assert config.read_text() == f'Include "{hosts_file()}"  {INCLUDE_MARK}\n' + USERS_CONFIG
    remove_host("course-vm-local-a")
    assert config.read_text() == USERS_CONFIG


@pytest.mark.parametrize("bad", ['a"b', "a\nInclude /tmp/x", "a\\b", "100%"])
def test_a_home_that_ssh_config_cannot_hold_is_refused_before_anything_is_written(
    tmp_path: Path, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / bad))
    with pytest.raises(CourseVmError, match=r"cannot be written into an ssh config.*Fix:"):
        add_host("course-vm-local-a", block())
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"alias": "evil\nHost *"}, "alias 'evil\\nHost *' is not a plain name"),
        ({"host": "1.2.3.4\nMatch exec id"}, "host '1.2.3.4\\nMatch exec id' is not an IP address"),
        ({"host": "example.org"}, "host 'example.org' is not an IP address"),
        ({"host": "fe80::1%eth0"}, "host 'fe80::1%eth0' is not an IP address"),
        ({"host": 16909060}, "host 16909060 is not an IP address"),
        ({"user": "root\nHost *"}, "user 'root\\nHost *' is not a Linux login"),
        ({"user": None}, "user None is not a Linux login"),
        ({"identity_file": None}, "identity file None is not a path"),
        ({"identity_file": "/k/a\tb"}, "identity file '/k/a\\tb' holds a control character"),
        ({"identity_file": '/k/"x'}, "identity file '/k/\"x' holds a control character"),
        ({"known_hosts_file": "/k/${HOME}"}, "known_hosts file '/k/${HOME}' holds a control character"),
        ({"known_hosts_file": "/k/%h"}, "known_hosts file '/k/%h' holds a control character"),
        ({"identity_file": "#x"}, "identity file '#x' starts with #, which ssh reads as a comment"),
        ({"known_hosts_file": " #x"}, "known_hosts file ' #x' starts with #, which ssh reads as a comment"),
        ({"port": 0}, "port 0 is not a TCP port"),
        ({"port": "22\nHost *"}, "port '22\\nHost *' is not a TCP port"),
    ],
)
def test_a_value_ssh_would_read_as_syntax_is_refused(fields: dict[str, object], problem: str) -> None:
    given: dict[str, object] = {
        "alias": "course-vm",
        "host": "1.2.3.4",
        "user": "student",
        "identity_file": "/k/course-vm",
        "known_hosts_file": "/k/course-vm.dev.known_hosts",
        **fields,
    }
    with pytest.raises(CourseVmError) as raised:
        ssh_config_block(**given)  # type: ignore[arg-type]
    message = str(raised.value)
    assert problem in message and "cannot write an ssh Host block" in message and "Fix: " in message
    assert "\n" not in message


def test_every_bad_value_is_named_at_once() -> None:
    with pytest.raises(CourseVmError, match="host 'x' is not an IP address; user 'Root' is not a Linux login"):
        ssh_config_block("course-vm", "x", "Root", "/k/course-vm")


def test_a_windows_host_block_writes_its_paths_with_forward_slashes() -> None:
    """OpenSSH reads two backslashes in a config line as one (an escape), so a UNC path would lose
    one; OpenSSH for Windows takes `/` as a separator, and a path written so means one thing."""
    text = ssh_config_block(
        "course-vm",
        "203.0.113.7",
        "student",
        "C:\\Users\\Alice Smith\\.ssh\\course-vm",
        "C:\\Users\\Alice Smith\\.ssh\\course-vm.dev.known_hosts",
        windows=True,
    )
    assert text == (
        "Host course-vm\n"
        "    HostName 203.0.113.7\n"
        "    User student\n"
        '    IdentityFile "C:/Users/Alice Smith/.ssh/course-vm"\n'
        "    IdentitiesOnly yes\n"
        '    UserKnownHostsFile "C:/Users/Alice Smith/.ssh/course-vm.dev.known_hosts"\n'
        "    StrictHostKeyChecking yes\n"
        "    LocalForward localhost:8888 localhost:8888\n    LocalForward localhost:5000 localhost:5000\n"
    )


@pytest.mark.parametrize(
    ("path", "written"),
    [
        ("C:\\Users\\alice\\.ssh\\course-vm.config", "C:/Users/alice/.ssh/course-vm.config"),
        ("C:/Users/alice/.ssh/course-vm.config", "C:/Users/alice/.ssh/course-vm.config"),
        ("\\\\server\\share\\alice\\course-vm", "//server/share/alice/course-vm"),
    ],
)
def test_a_windows_path_in_an_ssh_config(path: str, written: str) -> None:
    assert config_path(path, "our ssh config file", windows=True) == written


@pytest.mark.parametrize(
    "bad", ["C:\\Users\\%USERNAME%\\key", "C:\\Users\\$env\\key", 'C:\\Users\\"a"\\key', "C:\\k\nMatch exec calc"]
)
def test_on_windows_what_ssh_reads_as_syntax_is_still_refused(bad: str) -> None:
    with pytest.raises(CourseVmError, match="holds a control character, a quote, % or \\$"):
        ssh_config_block("course-vm", "1.2.3.4", "student", bad, windows=True)
    with pytest.raises(CourseVmError, match=r"cannot be written into an ssh config.*Fix:"):
        config_path(bad, "our ssh config file", windows=True)


def test_on_linux_and_macos_a_backslash_is_still_refused() -> None:
    """There a backslash is part of a file's name, which ssh would read as an escape."""
    with pytest.raises(
        CourseVmError, match="identity file 'C:\\\\\\\\k' holds a control character, a quote, a backslash"
    ):
        ssh_config_block("course-vm", "1.2.3.4", "student", "C:\\k", windows=False)


def test_a_block_for_the_users_own_keys_names_no_identity_file() -> None:
    block = ssh_config_block("course-vm-alice", "1.2.3.4", "alice", "", "~/.ssh/pins", default_keys=True)
    assert block == (
        "Host course-vm-alice\n    HostName 1.2.3.4\n    User alice\n"
        "    UserKnownHostsFile ~/.ssh/pins\n    StrictHostKeyChecking yes\n"
        "    LocalForward localhost:8888 localhost:8888\n    LocalForward localhost:5000 localhost:5000\n"
    )
    with pytest.raises(CourseVmError, match="identity file '/k/key' is given, but the user's own keys log in"):
        ssh_config_block("course-vm-alice", "1.2.3.4", "alice", "/k/key", default_keys=True)


# sshAccess iap: the instance name as HostName, reached through gcloud's IAP tunnel.

IAP = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"
INSTANCE = "course-vm-vm-1a2b3c"


def iap_block(
    known_hosts_file: str = "/vm/known_hosts", identity: str = "/keys/course-vm", user: str = "student"
) -> str:
    return ssh_config_block("course-vm", INSTANCE, user, identity, known_hosts_file, proxy_command=IAP)


def test_an_iap_block_names_the_instance_and_its_tunnel() -> None:
    assert iap_block() == (
        "Host course-vm\n"
        f"    HostName {INSTANCE}\n"
        f"    ProxyCommand {IAP}\n"
        "    User student\n"
        "    IdentityFile /keys/course-vm\n"
        "    IdentitiesOnly yes\n"
        "    UserKnownHostsFile /vm/known_hosts\n"
        "    StrictHostKeyChecking yes\n"
        "    LocalForward localhost:8888 localhost:8888\n    LocalForward localhost:5000 localhost:5000\n"
    )


@pytest.mark.parametrize(
    ("host", "proxy_command", "problem"),
    [
        ("10.42.0.2", IAP, "host '10.42.0.2' is not a GCE instance name"),
        (f"{INSTANCE}\nMatch exec id", IAP, "is not a GCE instance name"),
        (INSTANCE, IAP + "; id", "is not course-vm's IAP tunnel"),
        (INSTANCE, "nc %h 22", "proxy command 'nc %h 22' is not course-vm's IAP tunnel"),
        (INSTANCE, IAP + "\nMatch exec id", "is not course-vm's IAP tunnel"),
        (INSTANCE, None, f"host '{INSTANCE}' is not an IP address"),
    ],
)
def test_an_iap_block_refuses_what_ssh_would_read_as_syntax(host: str, proxy_command: str | None, problem: str) -> None:
    with pytest.raises(CourseVmError) as raised:
        ssh_config_block("course-vm", host, "student", "/k/course-vm", proxy_command=proxy_command)
    assert problem in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.integration
def test_openssh_reads_the_iap_block(home: Path) -> None:
    add_host("course-vm", iap_block())
    ours = resolved(home, "course-vm")
    assert ours["hostname"] == INSTANCE
    assert ours["proxycommand"] == IAP
    assert ours["userknownhostsfile"] == "/vm/known_hosts"
    assert ours["stricthostkeychecking"] == "true"


@pytest.mark.integration
def test_openssh_logs_in_through_the_tunnel_with_the_pinned_key_only(
    home: Path, ready_sshd: Sshd, iap: RealGcloudTunnels
) -> None:
    """A real `ssh -F` through the Host block `up` writes, Google's real gcloud as its ProxyCommand and the IAP
    relay stand-in: the pinned line, named by the instance as the verification writes it, is the one ssh looks
    up; another key under that name is refused."""
    iap.relay.backend_port = ready_sshd.port
    pins = home / "pins"
    pins.write_text(ready_sshd.host_key.known_hosts_line(INSTANCE, 22) + "\n")
    add_host("course-vm", iap_block(str(pins), str(ready_sshd.client_key), ready_sshd.user))
    command = [require_tool("ssh"), "-F", str(home / ".ssh" / "config"), "-o", "BatchMode=yes", "course-vm", "id -un"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, ready_sshd.user), done.stderr
    pins.write_text(ready_sshd.host_key.known_hosts_line("10.42.0.2", 22) + "\n")  # pinned under another name
    refused = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    assert refused.returncode == 255
    assert "Host key verification failed" in refused.stderr
    assert len(iap.gcloud.pids()) == 2
    assert {connect.query["instance"] for connect in iap.relay.connects} == {INSTANCE}


IAP_TUNNEL = "gcloud compute start-iap-tunnel %h 22 --listen-on-stdin --project course-project-1 --zone europe-west1-b"


@pytest.mark.parametrize(("windows", "program"), [(False, "gcloud"), (True, "gcloud.cmd")])
def test_the_iap_host_block_names_the_gcloud_the_platforms_ssh_can_start(windows: bool, program: str) -> None:
    # OpenSSH for Windows starts a ProxyCommand without a shell: `gcloud` alone is not found there.
    for given in (IAP_TUNNEL, IAP_TUNNEL.replace("gcloud ", "gcloud.cmd ", 1)):
        block = ssh_config_block(
            "course-vm", "course-vm-vm-1a2b3c", "student", "/k", proxy_command=given, windows=windows
        )
        [line] = [line.strip() for line in block.splitlines() if "ProxyCommand" in line]
        assert line == f"ProxyCommand {program}{IAP_TUNNEL.removeprefix('gcloud')}"


@pytest.mark.parametrize("program", ["gcloud.exe", "gcloud.bat", "C:/gcloud.cmd", "./gcloud", "gcloud.CMD", "cmd"])
def test_no_other_program_is_the_iap_proxy(program: str) -> None:
    with pytest.raises(CourseVmError, match="is not course-vm's IAP tunnel"):
        ssh_config_block(
            "course-vm", "course-vm-vm-1a2b3c", "student", "/k",
            proxy_command=IAP_TUNNEL.replace("gcloud ", f"{program} ", 1), windows=True,
        )  # fmt: skip


@pytest.mark.integration
def test_the_courses_ports_and_the_agent_as_openssh_reads_them(home: Path) -> None:
    # A GatewayPorts of the user's own, read after our block, must not open the ports to their network.
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "config").write_text("Host *\n    GatewayPorts yes\n")
    add_host(
        "course-vm",
        ssh_config_block("course-vm", "1.2.3.4", "student", "/k", forwards=["5001:5000", 8888], forward_agent=True),
    )
    assert resolved_all(home, "course-vm", "localforward") == [
        "[localhost]:5001 [localhost]:5000",
        "[localhost]:8888 [localhost]:8888",
    ]
    ours = resolved(home, "course-vm")
    assert (ours["forwardagent"], ours["gatewayports"]) == ("yes", "yes")
    none = ssh_config_block("course-vm", "1.2.3.4", "student", "/k", forwards=[])
    assert "LocalForward" not in none and "ForwardAgent" not in none


@pytest.mark.parametrize(
    ("forwards", "agent", "message"),
    [
        (["22"], False, "forwarded port '22' is not PORT or LOCAL:REMOTE"),
        (["8888\n    ProxyCommand id"], False, r"forwarded port '8888\\n    ProxyCommand id' is not PORT"),
        (["5000", "5000:8888"], False, r"forwarded ports \['5000', '5000:8888'\] name a laptop port twice"),
        ("8888", False, "forwarded ports '8888' are no list"),
        (["8888"], "yes", "forward agent 'yes' is not true or false"),
    ],
)
def test_ports_and_an_agent_from_the_stack_are_checked_like_every_value(
    forwards: object, agent: object, message: str
) -> None:
    with pytest.raises(CourseVmError, match=r"^course-vm: cannot write an ssh Host block: " + message):
        ssh_config_block("course-vm", "1.2.3.4", "student", "/k", forwards=forwards, forward_agent=agent)  # type: ignore[arg-type]
