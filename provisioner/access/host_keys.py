"""SSH host keys learned out of band: parsing, fingerprints, known_hosts lines and console blocks."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from pathlib import Path

import paramiko

from provisioner.errors import SshKeyError

HOST_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
CONSOLE_BEGIN = "-----BEGIN SSH HOST KEY KEYS-----"
CONSOLE_END = "-----END SSH HOST KEY KEYS-----"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,3}")
_CONSOLE_KEY = re.compile("({}) ([A-Za-z0-9+/]+={{0,3}})".format("|".join(map(re.escape, HOST_KEY_TYPES))))


@dataclass(frozen=True)
class HostKey:
    """A server's public host key: `type` (e.g. ssh-ed25519) and its base64 blob."""

    type: str
    blob: str

    @property
    def pkey(self) -> paramiko.PKey:
        return paramiko.PKey.from_type_string(self.type, base64.b64decode(self.blob))

    @property
    def fingerprint(self) -> str:
        """OpenSSH's `SHA256:...` fingerprint, as `ssh-keygen -lf` prints it."""
        digest = hashlib.sha256(base64.b64decode(self.blob)).digest()
        return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")

    def known_hosts_line(self, host: str, port: int = 22) -> str:
        name = host if port == 22 else f"[{host}]:{port}"
        return f"{name} {self.type} {self.blob}"

    def __str__(self) -> str:
        return f"{self.type} {self.blob}"


HOST_KEY_LINE = (
    "A host key line is TYPE BASE64, as the VM's /etc/ssh/ssh_host_ed25519_key.pub holds it: "
    "`ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI…` with 68 base64 characters (an RSA key has more). Fix: copy the "
    "whole line from the VM's serial console or its guest attributes (hostkeys/), or let check read them from "
    "GCE: --gce-instance NAME --gce-zone ZONE --gce-project PROJECT"
)
"""What a host key looks like and where to get one, for a line that is not one."""


def parse_host_key(text: str) -> HostKey:
    """Parse `TYPE BASE64 [comment]` into a HostKey.

    Raises SshKeyError when the text is not a well-formed public key of a known type, saying what is
    wrong with it, what a host key line looks like and where to get one (HOST_KEY_LINE).
    """
    fields = text.split()
    if len(fields) < 2 or fields[0] not in HOST_KEY_TYPES or not _BASE64.fullmatch(fields[1]):
        raise SshKeyError(f"malformed host key {_shown(text)}: {_format_problem(fields)}. {HOST_KEY_LINE}")
    key = HostKey(fields[0], fields[1])
    try:
        key.pkey  # noqa: B018 (decoding is the check)
    except (binascii.Error, ValueError, paramiko.SSHException):
        # paramiko's own words end mid-sentence for a key cut short ("Invalid key (class: ..., data type: ").
        raise SshKeyError(
            f"malformed host key {_shown(text)}: its {len(fields[1])} base64 characters are no whole {fields[0]} "
            f"key (cut short when copied?). {HOST_KEY_LINE}"
        ) from None
    return key


def _format_problem(fields: list[str]) -> str:
    """Why FIELDS (a host key line's words) are not `TYPE BASE64`."""
    if not fields:
        return "expected 'TYPE BASE64', got nothing"
    if fields[0] not in HOST_KEY_TYPES:
        return f"expected 'TYPE BASE64' with TYPE one of {', '.join(HOST_KEY_TYPES)}"
    if len(fields) < 2:
        return "expected 'TYPE BASE64', got the type alone"
    return "expected 'TYPE BASE64', but its second word is not base64"


def _shown(text: str) -> str:
    """TEXT as an error quotes it: whole when short, else its start and its length; never a private key."""
    text = text.strip()
    if "PRIVATE KEY" in text:
        return "(a private key, not shown: a host key is the VM's public key)"
    return repr(text) if len(text) <= 100 else f"{text[:60]!r}… ({len(text)} characters)"


def host_keys_from_known_hosts(path: Path, host: str, port: int = 22) -> tuple[HostKey, ...]:
    """The keys PATH lists for HOST (as `[HOST]:PORT` when PORT is not 22), in OpenSSH's format.

    Names may be hashed (`|1|...`); wildcard patterns are not matched. A key on an `@revoked` line
    is never returned, whichever host that line names: a revoked key is trusted nowhere (OpenSSH
    scopes it by host; stricter is safe). `@cert-authority` lines are not used: course-vm pins
    keys and does not verify host certificates, and leaving a CA out only narrows what is trusted.
    Lines with a key type or key data course-vm cannot use are skipped, as OpenSSH skips them.
    Raises SshKeyError when the file is missing, unreadable, or has no usable key for the host.
    """
    try:
        text = path.read_text(errors="replace")
    except OSError as error:
        raise SshKeyError(f"cannot read known_hosts file {path}: {error.strerror}") from None
    name = host if port == 22 else f"[{host}]:{port}"
    listed: list[HostKey] = []
    revoked: set[HostKey] = set()
    authorities = False
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        marker = fields.pop(0) if fields[0].startswith("@") else ""
        authorities = authorities or marker == "@cert-authority"
        if len(fields) < 3 or marker not in ("", "@revoked"):
            continue
        try:
            key = parse_host_key(f"{fields[1]} {fields[2]}")
        except SshKeyError:
            continue
        if marker == "@revoked":
            revoked.add(key)
        elif _names_match(fields[0], name) and key not in listed:
            listed.append(key)
    keys = tuple(key for key in listed if key not in revoked)
    if not keys:
        refused = len(listed) - len(keys)
        why = f" ({refused} revoked)" if refused else ""
        if authorities:
            why += "; its @cert-authority lines are not used: course-vm pins host keys, not certificates"
        raise SshKeyError(f"{path} has no host key for {name}{why}. Fix: add the VM's key to it, or pass --host-key")
    return keys


def _names_match(patterns: str, name: str) -> bool:
    """Whether a known_hosts line's comma-separated names, plain or `|1|` hashed, include NAME."""
    return any(
        _hashed_name_is(pattern, name) if pattern.startswith("|1|") else pattern == name
        for pattern in patterns.split(",")
    )


def _hashed_name_is(pattern: str, name: str) -> bool:
    """Whether `|1|SALT|HASH` (OpenSSH's HashKnownHosts) is NAME: HASH is HMAC-SHA1 of NAME keyed by SALT."""
    parts = pattern.split("|")
    try:
        salt, digest = base64.b64decode(parts[2], validate=True), base64.b64decode(parts[3], validate=True)
    except (IndexError, binascii.Error):
        return False  # a garbled hash names no host
    return len(parts) == 4 and hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)


def host_keys_from_console(text: str) -> tuple[HostKey, ...]:
    """The host keys cloud-init printed on the serial console (its last block), or () if none yet."""
    end = text.rfind(CONSOLE_END)
    begin = text.rfind(CONSOLE_BEGIN, 0, end)
    if begin < 0 or end < 0:
        return ()
    keys = []
    for line in text[begin + len(CONSOLE_BEGIN) : end].splitlines():
        # Console lines may carry a prefix (timestamps, "ci-info:"); the key starts at its type.
        match = _CONSOLE_KEY.search(line)
        if match:
            try:
                keys.append(parse_host_key(match.group(0)))
            except SshKeyError:
                continue  # a garbled console line (output interleaved mid-line): not a key to pin
    return tuple(keys)
