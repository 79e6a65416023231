"""Host keys: parsing, OpenSSH fingerprints, known_hosts files and cloud-init's console block."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from provisioner.access.host_keys import (
    CONSOLE_BEGIN,
    CONSOLE_END,
    host_keys_from_console,
    host_keys_from_known_hosts,
    parse_host_key,
)
from provisioner.errors import SshKeyError
from tests.conftest import require_tool


@pytest.fixture
def host_pub(tmp_path: Path) -> str:
    subprocess.run(
        [require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "host")], check=True
    )
    return (tmp_path / "host.pub").read_text().strip()


@pytest.mark.integration
def test_fingerprint_is_what_ssh_keygen_prints(host_pub: str, tmp_path: Path) -> None:
    printed = subprocess.run(
        [require_tool("ssh-keygen"), "-lf", str(tmp_path / "host.pub")], capture_output=True, text=True, check=True
    ).stdout
    assert parse_host_key(host_pub).fingerprint == printed.split()[1]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected 'TYPE BASE64'"),
        ("ssh-dss AAAAB3NzaC1kc3M=", "expected 'TYPE BASE64'"),
        ("ssh-ed25519 not-base64!", "expected 'TYPE BASE64'"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "Invalid key"),
    ],
)
def test_malformed_host_keys_are_refused(text: str, why: str) -> None:
    with pytest.raises(SshKeyError, match="malformed host key") as raised:
        parse_host_key(text)
    assert why in str(raised.value)
    assert raised.value.exit_code == 2


@pytest.mark.integration
def test_known_hosts_lookup_by_host_and_port(host_pub: str, tmp_path: Path) -> None:
    key = parse_host_key(host_pub)
    known = tmp_path / "known_hosts"
    known.write_text(key.known_hosts_line("10.0.0.5") + "\n" + key.known_hosts_line("127.0.0.1", 2222) + "\n")
    assert host_keys_from_known_hosts(known, "10.0.0.5") == (key,)
    assert host_keys_from_known_hosts(known, "127.0.0.1", 2222) == (key,)
    with pytest.raises(SshKeyError, match=r"has no host key for 127\.0\.0\.1\. Fix:"):
        host_keys_from_known_hosts(known, "127.0.0.1", 22)
    with pytest.raises(SshKeyError, match="cannot read known_hosts file"):
        host_keys_from_known_hosts(tmp_path / "missing", "10.0.0.5")


@pytest.mark.integration
def test_console_block_last_one_wins_and_prefixes_are_ignored(host_pub: str) -> None:
    key = parse_host_key(host_pub)
    console = (
        f"{CONSOLE_BEGIN}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet\n"
        f"{CONSOLE_END}\nreboot\n"
        f"{CONSOLE_BEGIN}\n[  9.1] ci-info: {host_pub} root@vm\n{CONSOLE_END}\n"
    )
    assert host_keys_from_console(console) == (key,)
    assert host_keys_from_console("no block yet") == ()
    assert host_keys_from_console(f"{CONSOLE_BEGIN}\n{host_pub}\n") == ()
