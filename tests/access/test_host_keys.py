"""Host keys: parsing, OpenSSH fingerprints, known_hosts files and cloud-init's console block."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from provisioner.access.host_keys import (
    CONSOLE_BEGIN,
    CONSOLE_END,
    host_keys_from_console,
    host_keys_from_known_hosts,
    parse_host_key,
)
from provisioner.access.ssh import Target, connect, load_identity
from provisioner.errors import HostKeyMismatchError, SshKeyError
from tests.conftest import require_tool
from tests.support.fake_compute_api import ED25519
from tests.support.sshd import Sshd


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
        ("ssh-ed25519", "expected 'TYPE BASE64', got the type alone"),
        ("ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB", "its 24 base64 characters are no whole ssh-ed25519 key"),
        ("ssh-ed25519 AAAA", "its 4 base64 characters are no whole ssh-ed25519 key (cut short when copied?)"),
    ],
)
def test_malformed_host_keys_are_refused(text: str, why: str) -> None:
    with pytest.raises(SshKeyError, match="malformed host key") as raised:
        parse_host_key(text)
    assert why in str(raised.value)
    assert raised.value.exit_code == 2


def test_a_host_key_cut_short_is_told_whole_what_a_host_key_looks_like_and_where_to_get_one() -> None:
    # paramiko's own words for it end mid-sentence: "Invalid key (class: Ed25519Key, data type: ".
    with pytest.raises(SshKeyError) as raised:
        parse_host_key("ssh-ed25519 AAAA")
    assert str(raised.value) == (
        "malformed host key 'ssh-ed25519 AAAA': its 4 base64 characters are no whole ssh-ed25519 key (cut short "
        "when copied?). A host key line is TYPE BASE64, as the VM's /etc/ssh/ssh_host_ed25519_key.pub holds it: "
        "`ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…` with 68 base64 characters (an RSA key has more). Fix: copy the "
        "whole line from the VM's serial console or its guest attributes (hostkeys/), or let check read them from "
        "GCE: --gce-instance NAME --gce-zone ZONE --gce-project PROJECT"
    )
    assert ED25519.startswith("AAAAC3NzaC1lZDI1NTE5AAAAI") and len(ED25519) == 68, "the example is as a key is"


def test_a_private_key_given_as_a_host_key_is_not_quoted(tmp_path: Path) -> None:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")], check=True)
    private = (tmp_path / "k").read_text()
    with pytest.raises(SshKeyError) as raised:
        parse_host_key(private)
    assert "PRIVATE KEY" not in str(raised.value) and private.splitlines()[1] not in str(raised.value)
    assert "a private key, not shown" in str(raised.value)


def test_a_long_line_is_quoted_by_its_start_and_length() -> None:
    with pytest.raises(SshKeyError) as raised:
        parse_host_key("x" * 300)
    assert str(raised.value).startswith(f"malformed host key {'x' * 60!r}… (300 characters): ")


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


# Markers in a known_hosts file the user gives (`check --known-hosts`): OpenSSH's syntax, read by us.

OTHER = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
THIRD = f"ssh-ed25519 {ED25519}"


@pytest.mark.integration
def test_a_revoked_key_is_never_pinned(host_pub: str, tmp_path: Path) -> None:
    key, other = parse_host_key(host_pub), parse_host_key(OTHER)
    known = tmp_path / "known_hosts"
    known.write_text(f"@revoked * {key}\n10.0.0.5 {key}\n10.0.0.5,10.0.0.6 {other}\n")
    assert host_keys_from_known_hosts(known, "10.0.0.5") == (other,)


@pytest.mark.integration
def test_a_host_whose_only_keys_are_revoked_has_no_key(host_pub: str, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.5 {host_pub}\n@revoked 10.9.9.9 {host_pub}\n")
    with pytest.raises(SshKeyError, match=r"has no host key for 10\.0\.0\.5 \(1 revoked\)\. Fix:"):
        host_keys_from_known_hosts(known, "10.0.0.5")


@pytest.mark.integration
def test_cert_authority_lines_are_not_trusted_and_do_not_stop_the_others(host_pub: str, tmp_path: Path) -> None:
    key = parse_host_key(host_pub)
    known = tmp_path / "known_hosts"
    known.write_text(f"@cert-authority *.example.org {OTHER}\n@cert-authority 10.0.0.5 {OTHER}\n10.0.0.5 {key}\n")
    assert host_keys_from_known_hosts(known, "10.0.0.5") == (key,)
    with pytest.raises(SshKeyError, match=r"@cert-authority lines are not used: course-vm pins host keys"):
        host_keys_from_known_hosts(known, "10.0.0.7")


@pytest.mark.integration
def test_hashed_host_names_still_match(host_pub: str, tmp_path: Path) -> None:
    key = parse_host_key(host_pub)
    known = tmp_path / "known_hosts"
    known.write_text(f"10.0.0.5 {key}\n[127.0.0.1]:2222 {key}\n# a comment\n\n")
    subprocess.run([require_tool("ssh-keygen"), "-q", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "10.0.0.5" not in known.read_text() and "|1|" in known.read_text()
    assert host_keys_from_known_hosts(known, "10.0.0.5") == (key,)
    assert host_keys_from_known_hosts(known, "127.0.0.1", 2222) == (key,)


def test_lines_with_key_types_or_data_we_cannot_use_are_skipped(tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(
        "10.0.0.5 ssh-dss AAAAB3NzaC1kc3M=\n10.0.0.5 ssh-ed25519 not!base64\n10.0.0.5\n"
        f"10.0.0.5 sk-ssh-ed25519@openssh.com AAAA\n|1|no!base64|x= {THIRD}\n|1|AAAA|AAAA {THIRD}\n"
        f"@future 10.0.0.5 {THIRD}\n10.0.0.6,!10.0.0.5 {THIRD}\n10.0.0.5 {OTHER} comment\n"
    )
    assert host_keys_from_known_hosts(known, "10.0.0.5") == (parse_host_key(OTHER),)


@pytest.mark.integration
def test_a_server_presenting_a_revoked_key_is_refused(ready_sshd: Sshd, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    name = f"[127.0.0.1]:{ready_sshd.port}"
    known.write_text(f"@revoked {name} {ready_sshd.host_key}\n{name} {ready_sshd.host_key}\n{name} {OTHER}\n")
    pinned = host_keys_from_known_hosts(known, "127.0.0.1", ready_sshd.port)
    assert pinned == (parse_host_key(OTHER),)
    target = Target("127.0.0.1", ready_sshd.port, ready_sshd.user, ready_sshd.client_key, pinned)
    with pytest.raises(HostKeyMismatchError, match="HOST KEY MISMATCH"):
        connect(target, load_identity(target.identity), time.monotonic() + 20, lambda _: None).close()
