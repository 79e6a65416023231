"""The instance metadata a course VM boots with: one map, for GCE and for any twin that serves it."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

USER_DATA: Final = "user-data"
"""The key cloud-init's GCE datasource reads the recipe from; the only value that must stay secret."""
SSH_KEYS: Final = "ssh-keys"

# Each fixed attribute, and why a course VM needs it.
FIXED_ATTRIBUTES: Final = MappingProxyType(
    {
        # Project-wide keys would let anyone with one into every student's VM: only the student's key.
        "block-project-ssh-keys": "TRUE",
        # OS Login ignores metadata keys; the course's login is the student's own key.
        "enable-oslogin": "FALSE",
        # The guest publishes its host keys there, so that they are pinned without trusting a connection.
        "enable-guest-attributes": "TRUE",
    }
)


def ssh_keys_line(username: str, ssh_public_key: str) -> str:
    """`USER:TYPE BASE64 USER`: the `ssh-keys` line from which Google's guest agent makes the login."""
    return f"{username}:{ssh_public_key} {username}"


def instance_metadata(
    username: str, ssh_public_key: str, user_data: str, *, student_public_key: str = ""
) -> dict[str, str]:
    """The instance attributes of one course VM: its recipe, its login key (and the student's own,
    if they brought one: one line each), and the fixed hardening.

    A pure function of its arguments: the Google edge sets it on the instance (keeping `user-data`
    a secret) and a local twin can serve the very same map from its metadata server.
    """
    keys = [ssh_keys_line(username, key) for key in (student_public_key, ssh_public_key) if key]
    return {USER_DATA: user_data, SSH_KEYS: "\n".join(keys), **FIXED_ATTRIBUTES}


def bake_metadata(user_data: str) -> dict[str, str]:
    """The instance attributes of the bake's VM: its user-data and the fixed hardening, and no key at all,
    so that nobody logs in to it."""
    return {USER_DATA: user_data, **FIXED_ATTRIBUTES}
