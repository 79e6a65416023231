"""The rendered user-data, pinned byte for byte: a change to it replaces every VM on the next `up`.

A refactoring of the recipe's code must leave these hashes as they are. A deliberate change of the
recipe (a template, a default release) changes them: update the hash here in the same commit, and
say in its message that every VM will be replaced.
"""

from __future__ import annotations

import hashlib

import pytest

from provisioner.recipe.settings import parse_settings
from provisioner.recipe.user_data import user_data_for

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM3unvPvnl5DNqYVMSX98AkgvhARJ26KaLZ9j0J/hYet"
STUDENT_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBoBsOwNkEyHerToLoginWithAndNothingElse0"
OTHER_RELEASES = {
    "artifactMirrorUrl": "http://169.254.2.2:8000",
    "dockerRegistryMirror": "http://169.254.2.2:5000",
    "anacondaVersion": "2024.02-1",
    "anacondaSha256": "C" * 64,
    "dockerComposeVersion": "2.27.0",
    "dockerComposeSha256": "d" * 64,
    "username": "bob",
    "autoStopIdleMinutes": "15",
    "maxRunHours": "4",
}
PINNED = [
    ({}, {}, "24e516b73381704a5956cb940da465c8b6cc6f99e630593746372d18dff246ee"),
    ({}, {"username": "alice", "student_public_key": STUDENT_KEY},
     "9f5c7c283c793b0179baf557666d155ef3fb736eaa0a273aabe3c819d4e30531"),
    ({"homeDiskSizeGb": "20", "autoStopIdleMinutes": "0", "maxRunHours": "0"}, {},
     "9c052f6edaf801087c5edd6e1d082d772442f58e2e2b44db353ec0126428cf9c"),
    ({"homeDiskSizeGb": "20"}, {"home_disk_device": "/dev/disk/by-id/virtio-course-vm-home"},
     "c3a310d3d8701d27101297229c75b534ac0564eb2b8f93c96d009a6b355215e3"),
    (OTHER_RELEASES, {}, "d696c0acf81ac6fca1f9c7c7238c96a6b4d6b8ec420f466e0e647f54f05f1b07"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "seat", "sha256"),
    PINNED,
    ids=["defaults", "class student with own key", "home disk, no auto stop", "local twin's home disk", "mirrors"],
)
def test_the_rendered_user_data_is_byte_identical(raw: dict[str, str], seat: dict[str, str], sha256: str) -> None:
    settings = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"], **raw}, "course-project-1", "europe-west1-b")
    text = user_data_for(settings, KEY, **seat)
    assert hashlib.sha256(text.encode()).hexdigest() == sha256
