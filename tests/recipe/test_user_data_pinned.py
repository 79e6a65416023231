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
    ({}, {}, "38dd695502a5157bf1d591078183e8bd4bf44180915bd4bc9faa843a4a482755"),
    ({}, {"username": "alice", "student_public_key": STUDENT_KEY},
     "c2e8b2fc4ded23af47daf308988248d030048fdae25532970211ed22edd47211"),
    ({"homeDiskSizeGb": "20", "autoStopIdleMinutes": "0"}, {},
     "713a673afba16eb9429cdd5193ff8835b645dc02f699588f6e072472b6f81b23"),
    ({"homeDiskSizeGb": "20"}, {"home_disk_device": "/dev/disk/by-id/virtio-course-vm-home"},
     "c42c0c671ca73a0633f54264ef521cf24a374a3f82d7c3476a598bda580bc242"),
    (OTHER_RELEASES, {}, "a978a72c439ac02e597c55c17c66833235b0a4bfa303d3c1fa30a0706c65a880"),
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
