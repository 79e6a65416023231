"""A student's own SSH public key: one line of a .pub file checked as OpenSSH takes it, never a private key."""

from __future__ import annotations

import base64
import binascii
import re

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa")
"""The public key types a student may bring: those OpenSSH accepts by default, DSA not."""
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 16384  # OpenSSH's own limit
# PEM armour, PuTTY's format, and an OpenSSH private key's body without its armour (`openssh-key-v1`).
_PRIVATE = ("PRIVATE KEY", "PuTTY-User-Key-File", "Private-Lines:", "b3BlbnNzaC1rZXktdjE")
NOT_SHOWN = "(a private key, not shown)"
PRIVATE_KEY_WHY = "that is a private key: give the .pub file's line, and keep the private key secret"
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,3}")
LINE_BREAKS = frozenset("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
"""Every character str.splitlines (and many editors) end a line at: a cell with one holds two lines."""


class PrivateKeyError(ValueError):
    """A private key where a public one belongs: it is never shown, and it has its own fix."""


def holds_private_key(text: object) -> bool:
    """Whether TEXT holds (a recognisable part of) a private key, which no message may ever show."""
    return isinstance(text, str) and any(marker in text for marker in _PRIVATE)


def public_key(text: str) -> str:
    """TEXT, one line of a .pub file (`TYPE BASE64 [comment]`), as `TYPE BASE64`: a key of a type in
    KEY_TYPES whose data decodes, names that same type and is a valid key (RSA of 2048 bits or more).

    Raises PrivateKeyError for a private key, ValueError saying what is wrong for anything else.
    """
    if holds_private_key(text):
        raise PrivateKeyError(PRIVATE_KEY_WHY)
    if LINE_BREAKS.intersection(text):
        raise ValueError("a public key is one line")
    fields = text.split()
    kind = fields[0] if fields else ""
    if kind == "ssh-dss":
        raise ValueError("ssh-dss (DSA) keys are refused by OpenSSH: they are too weak")
    if kind not in KEY_TYPES:
        if any(field in KEY_TYPES for field in fields[1:]):
            raise ValueError("it has options before the key type, which course-vm does not carry")
        raise ValueError(f"it does not start with a key type ({', '.join(KEY_TYPES[:-1])} or {KEY_TYPES[-1]})")
    if len(fields) < 2:
        raise ValueError("it has no key data after its type")
    data = fields[1]
    try:
        if not _BASE64.fullmatch(data):
            raise binascii.Error
        blob = base64.b64decode(data, validate=True)
    except binascii.Error:
        raise ValueError("its key data is not base64") from None
    length = int.from_bytes(blob[:4], "big")
    embedded = blob[4 : 4 + length] if len(blob) >= 4 + length else b""
    if not re.fullmatch(rb"[a-z0-9@.-]{1,64}", embedded):
        raise ValueError("its key data is not an SSH public key")
    if embedded.decode() != kind:
        raise ValueError(f"its key data is of type {embedded.decode()}, not {kind}")
    try:
        key = serialization.load_ssh_public_key(f"{kind} {data}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(f"its key data is not a valid {kind} key") from None
    if isinstance(key, rsa.RSAPublicKey) and not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise ValueError(
            f"it is a {key.key_size}-bit RSA key, and at least {MIN_RSA_BITS} bits are needed"
            if key.key_size < MIN_RSA_BITS
            else f"it is a {key.key_size}-bit RSA key, and OpenSSH accepts at most {MAX_RSA_BITS}"
        )
    return f"{kind} {data}"
