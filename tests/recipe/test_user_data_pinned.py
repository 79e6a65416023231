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
}
PINNED = [
    ({}, {}, "6f43513261d61a07d5b724c5683d583e7820834136907347ccee42d16f1dc44e"),
    ({}, {"username": "alice", "student_public_key": STUDENT_KEY},
     "6fd7d282cefbb310688709f3506b6b61e742a17bd9e4cb7ac42a5186c635c354"),
    ({"homeDiskSizeGb": "20", "autoStopIdleMinutes": "0"}, {},
     "b0a6cf677dec780a91fbc3223cdb5bf90b979395275af86cd2bfd3618b4a787a"),
    ({"homeDiskSizeGb": "20"}, {"home_disk_device": "/dev/disk/by-id/virtio-course-vm-home"},
     "77614f9fd8fe7aa9367b784cc412c225284ea16f1305531f66686715527fd338"),
    (OTHER_RELEASES, {}, "08eb305b2fdb8c4326ef688eaa122389ede2eae025a1cb2143c59fa068064612"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "seat", "sha256"),
    PINNED,
    ids=["defaults", "class student with own key", "home disk, no idle stop", "local twin's home disk", "mirrors"],
)
def test_the_rendered_user_data_is_byte_identical(raw: dict[str, str], seat: dict[str, str], sha256: str) -> None:
    settings = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"], **raw}, "course-project-1", "europe-west1-b")
    text = user_data_for(settings, KEY, **seat)
    assert hashlib.sha256(text.encode()).hexdigest() == sha256
