"""Logging in with paramiko against a real sshd: pinning, waiting, and bounded commands."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import cast

import paramiko
import pytest

from provisioner.access import ssh
from provisioner.access.host_keys import HostKey, parse_host_key
from provisioner.access.ssh import Target, _handshake_reason, connect, connect_published, load_identity, run
from provisioner.errors import HostKeyMismatchError, SshKeyError, UnreachableError
from provisioner.local.vm import free_loopback_port
from tests.conftest import wait_for_port
from tests.support.outputs import HOST_KEY
from tests.support.sshd import Sshd, other_host_key

pytestmark = pytest.mark.integration


def target(sshd: Sshd, **changes: object) -> Target:
    fields: dict[str, object] = {
        "host": "127.0.0.1",
        "port": sshd.port,
        "user": sshd.user,
        "identity": sshd.client_key,
        "host_keys": (sshd.host_key,),
    }
    fields.update(changes)
    return Target(**fields)  # type: ignore[arg-type]


def login(sshd: Sshd, seconds: float = 20.0, **changes: object) -> tuple[list[str], float]:
    messages: list[str] = []
    t = target(sshd, **changes)
    started = time.monotonic()
    with connect(t, load_identity(t.identity), time.monotonic() + seconds, messages.append) as client:
        result = run(client, "id -un", 10)
    assert result.ok and result.stdout.strip() == sshd.user
    return messages, time.monotonic() - started


def settled_connections(sshd: Sshd) -> int:
    """Connections sshd has logged, once it has caught up (it logs from forked children)."""
    time.sleep(0.5)
    return sshd.log.count("Connection from 127.0.0.1")


def test_logs_in_with_the_pinned_key(ready_sshd: Sshd) -> None:
    messages, _ = login(ready_sshd)
    assert messages == []


def test_waits_for_sshd_that_starts_listening_late(sshd: Sshd) -> None:
    sshd.authorize()
    sshd.start(after=2.0)
    messages, seconds = login(sshd)
    assert seconds >= 1.5
    assert any("connection refused (sshd not up yet)" in m for m in messages), messages


def test_waits_while_the_key_is_not_installed_yet(sshd: Sshd) -> None:
    sshd.start()
    wait_for_port(sshd.port)
    sshd.authorize(after=2.0)
    messages, seconds = login(sshd)
    assert seconds >= 1.5
    assert any(f"the key is not accepted yet for {sshd.user}" in m for m in messages), messages


def test_wrong_host_key_fails_at_once_and_is_never_retried(ready_sshd: Sshd, tmp_path: Path) -> None:
    wrong = parse_host_key(other_host_key(tmp_path))
    connections_before = settled_connections(ready_sshd)
    started = time.monotonic()
    with pytest.raises(HostKeyMismatchError) as raised:
        login(ready_sshd, seconds=30, host_keys=(wrong,))
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert "HOST KEY MISMATCH" in message and "may be intercepted" in message
    assert ready_sshd.host_key.fingerprint in message
    assert settled_connections(ready_sshd) == connections_before + 1
    assert raised.value.exit_code == 4


class Published:
    """A stand-in for the keys a VM publishes out of band: each read gives the next list, then the last."""

    def __init__(self, *reads: tuple[HostKey, ...]) -> None:
        self.reads = list(reads)
        self.count = 0

    def __call__(self, deadline: float) -> tuple[HostKey, ...]:
        self.count += 1
        return self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]


def published_login(
    sshd: Sshd, pinned: HostKey, published: Published, settle: float = 30.0
) -> tuple[Target, list[str], float]:
    messages: list[str] = []
    first = target(sshd, host_keys=(pinned,), published=published)
    started = time.monotonic()
    client, final = connect_published(
        first, load_identity(first.identity), time.monotonic() + 60, messages.append, settle
    )
    with client:
        assert run(client, "id -un", 10).stdout.strip() == sshd.user
    return final, messages, time.monotonic() - started


def test_keys_the_vm_replaced_after_they_were_pinned_are_pinned_anew(ready_sshd: Sshd, tmp_path: Path) -> None:
    # GCE's first boot: cloud-init publishes keys, then the guest agent replaces them and publishes its own.
    first_published = parse_host_key(other_host_key(tmp_path))
    published = Published((ready_sshd.host_key,))
    final, messages, _ = published_login(ready_sshd, first_published, published)
    assert final.host_keys == (ready_sshd.host_key,)
    assert published.count == 1
    assert any(f"now publishes other host keys; pinning those ({ready_sshd.host_key.fingerprint})" in m
               for m in messages), messages  # fmt: skip


def test_keys_published_a_little_after_the_mismatch_are_waited_for(ready_sshd: Sshd, tmp_path: Path) -> None:
    # sshd may present the new key seconds before the guest publishes it: reread until it does.
    stale = parse_host_key(other_host_key(tmp_path))
    published = Published((stale,), (stale,), (ready_sshd.host_key,))
    final, messages, _ = published_login(ready_sshd, stale, published)
    assert final.host_keys == (ready_sshd.host_key,)
    assert published.count == 3
    assert any("reading the published keys again for up to 30s" in m for m in messages), messages


def test_a_mismatch_with_keys_the_vm_still_publishes_is_final_once_they_settle(
    ready_sshd: Sshd, tmp_path: Path
) -> None:
    wrong = parse_host_key(other_host_key(tmp_path))
    published = Published((wrong,))
    started = time.monotonic()
    with pytest.raises(HostKeyMismatchError) as raised:
        published_login(ready_sshd, wrong, published, settle=2.0)
    assert 2.0 <= time.monotonic() - started < 10
    assert published.count >= 2
    assert raised.value.exit_code == 4


def test_keys_the_user_gave_are_final_at_once(ready_sshd: Sshd, tmp_path: Path) -> None:
    wrong = parse_host_key(other_host_key(tmp_path))
    first = target(ready_sshd, host_keys=(wrong,))
    started = time.monotonic()
    with pytest.raises(HostKeyMismatchError):
        connect_published(first, load_identity(first.identity), time.monotonic() + 60, print)
    assert time.monotonic() - started < 5


def test_pinned_key_of_a_type_the_server_lacks_is_a_mismatch(ready_sshd: Sshd, tmp_path: Path) -> None:
    ecdsa = parse_host_key(other_host_key(tmp_path, "ecdsa"))
    with pytest.raises(HostKeyMismatchError, match="none of the pinned host keys"):
        login(ready_sshd, host_keys=(ecdsa,))


def test_no_pinned_key_is_refused(ready_sshd: Sshd) -> None:
    with pytest.raises(SshKeyError, match="never trusts a key on first use"):
        login(ready_sshd, host_keys=())


def test_deadline_passes_when_nothing_answers(sshd: Sshd) -> None:
    port = free_loopback_port()
    started = time.monotonic()
    with pytest.raises(UnreachableError) as raised:
        login(sshd, seconds=2.0, port=port)
    assert 1.5 <= time.monotonic() - started < 6
    assert f"could not log in to {sshd.user}@127.0.0.1:{port} within 2s: connection refused" in str(raised.value)
    assert raised.value.exit_code == 3


def test_the_final_error_quotes_the_last_reason_an_attempt_had_time_to_give(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last attempt, cut short by the deadline, learns nothing (gcloud takes 0.5 s to start before it says
    IAP's 4003): the error quotes the reason an earlier attempt gave, not that nothing answered in time."""
    said = ["the proxy `gcloud compute start-iap-tunnel` ended the connection: ERROR: ... [4003: ...]"]

    def attempt(_client: object, _target: Target, _key: object, timeout: float) -> str:
        if said:
            return said.pop()
        time.sleep(timeout)  # runs until the deadline ends it
        return "no SSH server answered through the IAP tunnel (gcloud)"

    monkeypatch.setattr(ssh, "_attempt", attempt)
    vm = Target("vm-1", 22, "student", Path("unused"), (parse_host_key(HOST_KEY),), proxy_command="(not run)")
    messages: list[str] = []
    with pytest.raises(UnreachableError) as raised:
        connect(vm, cast(paramiko.PKey, None), time.monotonic() + 2.0, messages.append)
    assert str(raised.value).startswith(
        "could not log in to student@vm-1:22 within 2s: the proxy `gcloud compute start-iap-tunnel` ended the "
        "connection: ERROR: ... [4003: ...]. Fix: "
    ), raised.value
    assert len(messages) == 1


def test_key_readable_by_others_is_refused(sshd: Sshd) -> None:
    os.chmod(sshd.client_key, 0o644)
    with pytest.raises(SshKeyError, match=f"Fix: chmod 400 {sshd.client_key}"):
        load_identity(sshd.client_key)


def test_large_output_on_both_streams_does_not_deadlock(ready_sshd: Sshd) -> None:
    t = target(ready_sshd)
    with connect(t, load_identity(t.identity), time.monotonic() + 20, print) as client:
        result = run(
            client,
            "head -c 3000000 /dev/zero | tr '\\0' o; head -c 3000000 /dev/zero | tr '\\0' e >&2; echo; echo end",
            60,
        )
    assert result.ok, result.summary()
    assert result.stdout.endswith("o\nend\n")
    assert len(result.stdout) == 1 << 20
    assert set(result.stderr) == {"e"}


def test_a_background_process_holding_stdout_does_not_hold_the_result(ready_sshd: Sshd) -> None:
    t = target(ready_sshd)
    with connect(t, load_identity(t.identity), time.monotonic() + 20, print) as client:
        result = run(client, "sleep 30 & echo started", 60)
    assert result.ok and result.stdout == "started\n"
    assert result.seconds < 10, "the exit status counts once the output has had its grace period"


def test_slow_command_is_stopped_at_its_timeout(ready_sshd: Sshd) -> None:
    t = target(ready_sshd)
    with connect(t, load_identity(t.identity), time.monotonic() + 20, print) as client:
        started = time.monotonic()
        result = run(client, "for i in 1 2 3 4 5 6; do echo tick $i; sleep 1; done", 2.0)
    assert time.monotonic() - started < 4
    assert result.timed_out and result.status is None
    assert "tick 1" in result.stdout
    assert "did not finish within 2s" in result.summary()


def test_dropped_connection_is_reported(ready_sshd: Sshd) -> None:
    ready_sshd.set("docker", "drop")
    t = target(ready_sshd)
    with connect(t, load_identity(t.identity), time.monotonic() + 20, print) as client:
        result = run(client, "docker run --rm hello-world", 20)
    assert result.connection_lost
    assert "lost its connection" in result.summary()


@pytest.mark.parametrize(
    "message",
    [
        "Error reading SSH protocol banner",
        "Error reading SSH protocol banner[Errno 104] Connection reset by peer",  # seen under load
    ],
)
def test_a_banner_failure_reads_the_same_however_the_socket_failed(message: str) -> None:
    assert _handshake_reason(paramiko.SSHException(message), 2222) == (
        "SSH handshake failed (Error reading SSH protocol banner): sshd is not up yet, "
        "or another program listens on port 2222"
    )
