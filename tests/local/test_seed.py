"""The NoCloud seed ISO that gives a local VM whose image is no GCE twin its user-data."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.local.seed import write_seed
from tests.conftest import require_tool

pytestmark = pytest.mark.integration


def test_an_image_that_is_no_twin_gets_its_user_data_on_a_nocloud_seed(tmp_path: Path) -> None:
    require_tool("cloud-localds")
    seed = write_seed(tmp_path, "one", "#cloud-config\nruncmd: [[echo, course-vm-seeded]]\n")
    data = seed.read_bytes()  # ISO 9660 keeps small files whole
    assert b"runcmd: [[echo, course-vm-seeded]]" in data
    assert b"instance-id: course-vm-one-" in data and b"local-hostname: course-vm-one" in data
