"""A student's own public key: what is taken, and one exact message per kind of bad line."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from provisioner.recipe.public_keys import PrivateKeyError, holds_private_key, public_key
from tests.support.student_keys import ed25519_line, public_line

GOOD = ed25519_line()
KIND, BLOB = GOOD.split()


@pytest.mark.parametrize(
    "line",
    [
        GOOD,
        public_line(ec.generate_private_key(ec.SECP256R1())),
        public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
    ],
)
def test_a_public_key_line_is_taken_without_its_comment(line: str) -> None:
    assert public_key(f"{line} alice@laptop") == line
    assert public_key(f"  {line}  ") == line


LINE_SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (f"{KIND}\n{BLOB}", "a public key is one line"),
        # Every other line or vertical separator Python and editors know: two keys in one cell, not one
        # key whose second half is a comment to drop.
        *((f"{GOOD}{separator}{GOOD}", "a public key is one line") for separator in LINE_SEPARATORS),
        (
            "ssh-dss " + base64.b64encode(b"\x00\x00\x00\x07ssh-dss").decode(),
            "ssh-dss (DSA) keys are refused by OpenSSH: they are too weak",
        ),
        (f'command="/bin/sh" {GOOD}', "it has options before the key type, which course-vm does not carry"),
        (
            BLOB,
            "it does not start with a key type "
            "(ssh-ed25519, ecdsa-sha2-nistp256, ecdsa-sha2-nistp384, ecdsa-sha2-nistp521 or ssh-rsa)",
        ),
        (KIND, "it has no key data after its type"),
        (f"{KIND} not*base64", "its key data is not base64"),
        (f"{KIND} " + base64.b64encode(b"\x00\x00\x00\x03A B").decode(), "its key data is not an SSH public key"),
        (f"ssh-rsa {BLOB}", "its key data is of type ssh-ed25519, not ssh-rsa"),
        (
            f"{KIND} " + base64.b64encode(b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x01x").decode(),
            "its key data is not a valid ssh-ed25519 key",
        ),
        (
            public_line(rsa.generate_private_key(public_exponent=65537, key_size=1024)),  # noqa: S505 (refused)
            "it is a 1024-bit RSA key, and at least 2048 bits are needed",
        ),
    ],
)
def test_each_kind_of_bad_line_says_what_is_wrong(line: str, why: str) -> None:
    with pytest.raises(ValueError) as raised:
        public_key(line)
    assert str(raised.value) == why
    assert not isinstance(raised.value, PrivateKeyError)


@pytest.mark.parametrize(
    "text",
    [
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----",
        "-----BEGIN RSA PRIVATE KEY----- MIIEowIBAAKCAQEA -----END RSA PRIVATE KEY-----",
        "PuTTY-User-Key-File-3: ssh-ed25519",
        "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ",
    ],
)
def test_a_private_key_is_its_own_error_and_never_in_its_message(text: str) -> None:
    assert holds_private_key(text)
    with pytest.raises(PrivateKeyError) as raised:
        public_key(text)
    assert str(raised.value) == "that is a private key: give the .pub file's line, and keep the private key secret"
    assert not holds_private_key(GOOD) and not holds_private_key(None)
