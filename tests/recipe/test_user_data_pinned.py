"""The rendered user-data, pinned byte for byte: a change to it replaces every VM on the next `up`.

A refactoring of the recipe's code must leave these hashes as they are. A deliberate change of the
recipe (a template, a default release) changes them: update the hash here in the same commit, and
say in its message that every VM will be replaced.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from provisioner.recipe.bake import render_bake_user_data
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
    ({}, {}, "de5e79fc3d39f0f34b1a7f8fe7685a2e29ebff2a99a94a2f84bda072549cf19f"),
    ({}, {"username": "alice", "student_public_key": STUDENT_KEY},
     "46ae770bc4171d582a9d4677c9e1543ad66871dd1d4730afa0191045d0942518"),
    ({"homeDiskSizeGb": "20", "autoStopIdleMinutes": "0", "maxRunHours": "0"}, {},
     "9c052f6edaf801087c5edd6e1d082d772442f58e2e2b44db353ec0126428cf9c"),
    ({"homeDiskSizeGb": "20"}, {"home_disk_device": "/dev/disk/by-id/virtio-course-vm-home"},
     "1b4eb19f826c1c5f534a2d5e8c099e801b58518d084fd1d04728946b5f973304"),
    (OTHER_RELEASES, {}, "e416f8f6b37101a76f283439afd756323bd9e662a319ed129df26e0c91dddbc8"),
    ({"bakedImage": "true"}, {}, "2f537ee0e66b7374908b1bbabc2305dd97536265a237e4642143450e149e088d"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "seat", "sha256"),
    PINNED,
    ids=[
        "defaults",
        "class student with own key",
        "home disk, no auto stop",
        "local twin's home disk",
        "mirrors",
        "baked",
    ],
)
def test_the_rendered_user_data_is_byte_identical(raw: dict[str, str], seat: dict[str, Any], sha256: str) -> None:
    settings = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"], **raw}, "course-project-1", "europe-west1-b")
    text = user_data_for(settings, KEY, **seat)
    assert hashlib.sha256(text.encode()).hexdigest() == sha256


def test_the_bakes_user_data_is_byte_identical() -> None:
    # A change to it changes what `image bake` bakes; a change of its steps makes every baked image out of date.
    settings = parse_settings({"allowedSshCidrs": ["203.0.113.7/32"]}, "course-project-1", "europe-west1-b")
    text = render_bake_user_data(settings)
    assert (
        hashlib.sha256(text.encode()).hexdigest() == "76f7ebdd3d5acce53c5ca68b04ad9f102b956777bd3a110f7df88bc66e33c25e"
    )
