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
    ({}, {}, "a29eb5ce3c58ba6e24e9e0d80c6d02befebf2938f1bc3c4e29250d0da8557b4a"),
    ({}, {"username": "alice", "student_public_key": STUDENT_KEY},
     "12a921a9cbdd0a649e3d5b7e2f4d5742d3462b0991e54bcd1b2a1f8c1f1c7b69"),
    ({"homeDiskSizeGb": "20", "autoStopIdleMinutes": "0", "maxRunHours": "0"}, {},
     "457f919878a2faca4471638bafc61ac5017dd01c67c53f732caf56318245b3c6"),
    ({"homeDiskSizeGb": "20"}, {"home_disk_device": "/dev/disk/by-id/virtio-course-vm-home"},
     "7bff38abafafb12aefa7d78b83aaf9aabb7d10e0a2dd9c9385a978a295fdd1b9"),
    (OTHER_RELEASES, {}, "dc4f4bbad489c47aebe84c65524ec066285090b4485b4a8e4137ecef60219113"),
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
