"""SSH with paramiko: log in against pinned host keys within a deadline, run bounded commands."""

from __future__ import annotations

import logging
import select
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import paramiko

from provisioner.access.host_keys import HOST_KEY_TYPES, HostKey
from provisioner.access.keys import check_private_key_file
from provisioner.access.proxy import ProxySocket, proxy_argv
from provisioner.errors import HostKeyMismatchError, SshKeyError, UnreachableError

Progress = Callable[[str], None]
HostKeySource = Callable[[float], tuple[HostKey, ...]]
"""Reads the host keys a VM publishes out of band (guest attributes, its console) by a deadline."""
KEYS_SETTLE_SECONDS = 30.0
"""How long keys a VM publishes must stay the same before a mismatch with them is final. GCE's guest
agent replaces the keys cloud-init published on first boot, and publishes its own seconds before sshd
is reloaded with them; a login in that window meets a key that is not yet the published one."""
MAX_OUTPUT_BYTES = 1 << 20  # per stream; the tail is kept, which is where errors are
_RSA_SIGNATURES = ("rsa-sha2-512", "rsa-sha2-256")

# paramiko logs each failed handshake with its traceback at ERROR ("Exception (client): Error
# reading SSH protocol banner"), and with no handler configured Python prints that on stderr: once
# per retry against a port that is open but is not (yet) sshd. `connect` turns the same exception
# into its progress line and, at the deadline, its error; paramiko's own log says nothing more.
_PARAMIKO_LOG = logging.getLogger("paramiko")
_PARAMIKO_LOG.addHandler(logging.NullHandler())
_PARAMIKO_LOG.propagate = False


@dataclass(frozen=True)
class Target:
    """Where to log in, as whom, with which key, trusting only the pinned host keys."""

    host: str
    port: int
    user: str
    identity: Path
    host_keys: tuple[HostKey, ...]
    published: HostKeySource | None = field(default=None, compare=False, repr=False)
    """Where `host_keys` came from, read again after a mismatch; None: they are final (the user gave them)."""
    proxy_command: str = ""
    """"": connect to HOST:PORT directly; else the IAP ProxyCommand (proxy.py) that reaches HOST, an instance name."""


@dataclass(frozen=True)
class CommandResult:
    """What a remote command did: exit status (None if it never reported one) and its output."""

    command: str
    status: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False
    connection_lost: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0

    def summary(self, lines: int = 10) -> str:
        """One paragraph for a report: the command, how it ended, and the last lines of its output."""
        if self.timed_out:
            how = f"did not finish within {self.seconds:.0f}s"
        elif self.connection_lost:
            how = "lost its connection (the VM rebooted or sshd stopped?)"
        else:
            how = f"exited {self.status}"
        tail = (self.stdout + self.stderr).strip().splitlines()[-lines:]
        return f"`{self.command}` {how}" + (": " + " | ".join(tail) if tail else "")


def load_identity(path: Path) -> paramiko.PKey:
    """The private key at PATH, refused as OpenSSH would refuse it (group/other-readable).

    Raises SshKeyError (exit status 2) naming the fix.
    """
    check_private_key_file(path)
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise SshKeyError(
            f"{path} is passphrase-protected; the checker needs a key it can use unattended. "
            "Fix: use course-vm's own key (sshKeyPath), which has no passphrase"
        ) from None
    except (paramiko.SSHException, ValueError) as error:
        raise SshKeyError(f"cannot load private key {path}: {error}. Fix: use an ed25519 or RSA key") from None


def _host_key_algorithms(pinned: tuple[HostKey, ...]) -> list[str]:
    """Server host key algorithms to refuse, so that negotiation can only pick a pinned key type."""
    allowed = {k.type for k in pinned}
    if "ssh-rsa" in allowed:
        allowed.update(_RSA_SIGNATURES)
    return [a for a in (*HOST_KEY_TYPES, *_RSA_SIGNATURES) if a not in allowed]


def connect(target: Target, key: paramiko.PKey, deadline: float, progress: Progress) -> paramiko.SSHClient:
    """Log in to TARGET, retrying what a booting VM does (refused, timeouts, banner and auth errors).

    Raises HostKeyMismatchError at once (never retried) when the server's key is not pinned,
    and UnreachableError when the deadline passes first.
    """
    if not target.host_keys:
        raise SshKeyError(
            "no pinned host key: the checker never trusts a key on first use. "
            "Fix: pass --host-key, --known-hosts or --gce-instance"
        )
    started = time.monotonic()
    total = max(deadline - started, 0)
    delay, last_reason, last_report, heard = 0.25, "", -1e9, ""
    while True:
        client = _pinned_client(target)
        attempted = time.monotonic()
        attempt_timeout = max(min(10.0, deadline - attempted), 0.5)
        reason = _attempt(client, target, key, attempt_timeout)
        if not reason:
            return client
        now = time.monotonic()
        # An attempt the deadline cut short ran out of time before it could learn why (gcloud takes 0.5 s to
        # start, then to say IAP's 4003): the final error quotes the most recent reason an attempt gave.
        if not (heard and attempt_timeout < 10.0 and now - attempted >= attempt_timeout):
            heard = reason
        if now >= deadline:
            fix = (
                "check that the VM is running, that `gcloud auth login` was done with a Google account granted "
                "IAP access to it (roles/iap.tunnelResourceAccessor and roles/compute.viewer), and the key"
                if target.proxy_command
                else "check that the VM is running, that allowedSshCidrs includes your address, and the key"
            )
            raise UnreachableError(
                f"could not log in to {target.user}@{target.host}:{target.port} within {total:.0f}s: {heard}. "
                f"Fix: {fix}"
            )
        if reason != last_reason or now - last_report >= 15:
            progress(f"waiting for {target.host}:{target.port}: {reason} ({now - started:.0f}s of {total:.0f}s)")
            last_reason, last_report = reason, now
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 1.6, 3.0)


def _pinned_client(target: Target) -> paramiko.SSHClient:
    """A client that trusts TARGET's pinned host keys, under both names ssh looks them up by, and nothing else."""
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for name in {target.host, f"[{target.host}]:{target.port}"}:
        for host_key in target.host_keys:
            client.get_host_keys().add(name, host_key.type, host_key.pkey)
    return client


def _attempt(client: paramiko.SSHClient, target: Target, key: paramiko.PKey, timeout: float) -> str:
    """One login of CLIENT to TARGET, through a new IAP tunnel if TARGET has one: "" once logged in,
    else why not (said of the tunnel when there is one).

    Raises HostKeyMismatchError, and the tunnel's refusal (not logged in, or not granted: no retry helps).
    """
    # A new tunnel per attempt; closed on every way out but success, when the client owns it.
    proxy = ProxySocket(proxy_argv(target.proxy_command, target.host, target.port)) if target.proxy_command else None
    try:
        reason = _login(client, target, key, timeout, proxy)
        if not reason:
            proxy = None
            return ""
    finally:
        proxy_said = proxy.why() if proxy is not None else ""
        refusal = proxy.refusal(target.host) if proxy is not None else None
        if proxy is not None:
            proxy.close()
    if refusal is not None:
        raise refusal  # not logged in, or not granted: no retry helps
    if proxy is not None:
        reason = proxy_said or _tunnel_reason(reason)
    return reason


def _login(
    client: paramiko.SSHClient, target: Target, key: paramiko.PKey, timeout: float, proxy: ProxySocket | None
) -> str:
    """Log CLIENT in to TARGET over PROXY (None: directly): "" when it did, else why not; CLIENT is
    closed then. Raises HostKeyMismatchError when TARGET presents no pinned key."""
    try:
        client.connect(
            target.host,
            port=target.port,
            sock=proxy,  # type: ignore[arg-type]  # paramiko takes any object with send, recv, close
            username=target.user,
            pkey=key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
            disabled_algorithms={"keys": _host_key_algorithms(target.host_keys)},
        )
        _no_delay(client)
        return ""
    except paramiko.BadHostKeyException as error:
        client.close()
        raise HostKeyMismatchError(
            f"HOST KEY MISMATCH for {target.host}:{target.port}: it presented {error.key.get_name()} "
            f"{_fingerprint(error.key)}, not the pinned key. The connection may be intercepted "
            "(someone in the middle), or the VM was rebuilt; nothing was sent to it. Fix: learn the "
            "VM's key again out of band (--gce-instance), never by accepting what it presents"
        ) from None
    except paramiko.AuthenticationException:
        client.close()
        return f"the key is not accepted yet for {target.user}"
    except paramiko.SSHException as error:
        client.close()
        if "no acceptable host key" in str(error) or "not found in known_hosts" in str(error):
            raise HostKeyMismatchError(
                f"HOST KEY MISMATCH for {target.host}:{target.port}: it has none of the pinned host keys "
                f"({', '.join(k.type for k in target.host_keys)}). The connection may be intercepted; "
                "nothing was sent to it. Fix: learn the VM's keys again out of band"
            ) from None
        return _handshake_reason(error, target.port)
    except (OSError, EOFError) as error:
        client.close()
        return _network_reason(error)


def connect_published(
    target: Target, key: paramiko.PKey, deadline: float, progress: Progress, settle: float = KEYS_SETTLE_SECONDS
) -> tuple[paramiko.SSHClient, Target]:
    """Log in as `connect` does, but let a VM that publishes its host keys change them once pinned.

    After a mismatch, the keys TARGET's source publishes now are read again: keys that changed are
    pinned instead and the login retried; keys that did not are retried until they have stayed the
    same for SETTLE seconds, and only then is the mismatch final. Nothing but what the VM publishes
    out of band is ever trusted. Returns the client and the target with the keys it logged in with.
    Raises what `connect` raises; HostKeyMismatchError at once when TARGET has no source.
    """
    unchanged_since = time.monotonic()
    said = False
    while True:
        try:
            return connect(target, key, deadline, progress), target
        except HostKeyMismatchError:
            if target.published is None or time.monotonic() >= deadline:
                raise
            current = target.published(deadline)
            now = time.monotonic()
            if set(current) != set(target.host_keys):
                progress(f"the VM now publishes other host keys; pinning those ({current[0].fingerprint})")
                target, unchanged_since, said = replace(target, host_keys=current), now, False
                continue
            if now - unchanged_since >= settle or now >= deadline:
                raise
            if not said:
                progress(f"host key mismatch; reading the published keys again for up to {settle:.0f}s")
                said = True
            time.sleep(min(2.0, deadline - now))


def _no_delay(client: paramiko.SSHClient) -> None:
    """Send each request at once: with Nagle's algorithm every command waits for a delayed ACK
    (40 ms on Linux) before its request leaves, which adds up over a check's round trips."""
    transport = client.get_transport()
    sock = getattr(transport, "sock", None)
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _handshake_reason(error: paramiko.SSHException, port: int) -> str:
    """Why a handshake failed, in words that do not depend on how the socket failed: paramiko appends
    the socket's error to its banner message (`...banner[Errno 104] Connection reset by peer`)."""
    text = str(error)
    if "protocol banner" not in text:
        return f"SSH handshake failed ({text})"
    return (
        "SSH handshake failed (Error reading SSH protocol banner): sshd is not up yet, or another program "
        f"listens on port {port}"
    )


def _network_reason(error: BaseException) -> str:
    if isinstance(error, paramiko.ssh_exception.NoValidConnectionsError | ConnectionRefusedError):
        return "connection refused (sshd not up yet)"
    if isinstance(error, socket.timeout | TimeoutError):
        return "connection timed out"
    if isinstance(error, EOFError):
        return "connection closed during the handshake"
    return f"network error ({error})"


def _tunnel_reason(reason: str) -> str:
    """REASON a login failed, said of a connection through the IAP tunnel whose process still ran."""
    # paramiko says "No existing session" when the handshake timed out before the banner came.
    if any(said in reason for said in ("protocol banner", "Indecipherable", "No existing session")):
        return (
            "no SSH server answered through the IAP tunnel (gcloud): the VM is not up yet, "
            "or what the proxy sends is not SSH"
        )
    return f"{reason}, through the IAP tunnel"


def _fingerprint(key: paramiko.PKey) -> str:
    return HostKey(key.get_name(), key.get_base64()).fingerprint


EOF_GRACE = 2.0


def run(client: paramiko.SSHClient, command: str, timeout: float) -> CommandResult:
    """Run COMMAND in a new session, reading stdout and stderr as they come, for at most TIMEOUT s."""
    started = time.monotonic()
    transport = client.get_transport()
    if transport is None or not transport.is_active():
        return CommandResult(command, None, "", "", 0.0, connection_lost=True)
    try:
        channel = transport.open_session(timeout=min(timeout, 30))
        channel.settimeout(0.2)
        channel.exec_command(command)
    except (paramiko.SSHException, OSError, EOFError):
        return CommandResult(command, None, "", "", time.monotonic() - started, connection_lost=True)
    out, err = bytearray(), bytearray()
    try:
        timed_out = _read_to_the_end(channel, transport, out, err, started + timeout)
    finally:
        # paramiko reports -1 when the channel closed without an exit status: the connection dropped.
        status = channel.exit_status if channel.exit_status_ready() else None
        channel.close()
    lost = status in (None, -1) and not timed_out
    return CommandResult(
        command,
        None if lost or timed_out else status,
        out.decode(errors="replace"),
        err.decode(errors="replace"),
        time.monotonic() - started,
        timed_out,
        lost,
    )


def _read_to_the_end(
    channel: paramiko.Channel, transport: paramiko.Transport, out: bytearray, err: bytearray, deadline: float
) -> bool:
    """Read CHANNEL's stdout into OUT and its stderr into ERR until its command has ended, the
    connection has, or DEADLINE has passed (then True: it timed out)."""
    timed_out = False
    exited_at: float | None = None
    while True:
        progressed = _drain(channel, out, err)
        # sshd may send the exit status before the last of the output: the output ends at EOF.
        # (A command that leaves a background process holding stdout gets EOF_GRACE to finish.)
        if channel.exit_status_ready():
            exited_at = exited_at or time.monotonic()
            if channel.eof_received or time.monotonic() - exited_at > EOF_GRACE:
                break
        if channel.closed or not transport.is_active():
            break
        if time.monotonic() > deadline:
            timed_out = True
            break
        if not progressed:
            # Wakes as soon as output or EOF arrives (paramiko signals both on the channel's
            # pipe); the timeout only bounds how late an exit status or a deadline is noticed.
            select.select([channel], [], [], 0.02)
    _drain(channel, out, err)  # what arrived between the last read and the end
    return timed_out


def _drain(channel: paramiko.Channel, out: bytearray, err: bytearray) -> bool:
    """Append what CHANNEL has ready to OUT and ERR (the last MAX_OUTPUT_BYTES of each); whether it had any."""
    progressed = False
    while channel.recv_ready():
        out += channel.recv(65536)
        del out[:-MAX_OUTPUT_BYTES]
        progressed = True
    while channel.recv_stderr_ready():
        err += channel.recv_stderr(65536)
        del err[:-MAX_OUTPUT_BYTES]
        progressed = True
    return progressed
