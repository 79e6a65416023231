"""Public keys as a student's .pub file holds them, each made fresh."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def public_line(key: PrivateKeyTypes) -> str:
    """KEY's public half as one line of a .pub file (`TYPE BASE64`)."""
    return key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def ed25519_line() -> str:
    """A new ed25519 key's public line."""
    return public_line(ed25519.Ed25519PrivateKey.generate())
