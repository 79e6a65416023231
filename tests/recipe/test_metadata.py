"""The instance metadata map: the recipe, the student's one key, and the fixed hardening."""

from __future__ import annotations

from provisioner.recipe.metadata import instance_metadata


def test_the_map_holds_the_recipe_the_students_key_and_the_hardening(public_key: str) -> None:
    assert instance_metadata("alice", public_key, "#cloud-config\n") == {
        "user-data": "#cloud-config\n",
        "ssh-keys": f"alice:{public_key} alice",
        "block-project-ssh-keys": "TRUE",
        "enable-oslogin": "FALSE",
        "enable-guest-attributes": "TRUE",
    }


def test_every_value_is_a_string(public_key: str) -> None:
    # GCE attribute values are strings; Google's guest agent drops a metadata document with another type.
    assert all(type(v) is str for v in instance_metadata("alice", public_key, "#cloud-config\n").values())


def test_it_is_a_fresh_map_each_time(public_key: str) -> None:
    first = instance_metadata("alice", public_key, "#cloud-config\n")
    first["enable-oslogin"] = "TRUE"
    assert instance_metadata("alice", public_key, "#cloud-config\n")["enable-oslogin"] == "FALSE"


def test_a_students_own_key_logs_in_beside_course_vms(public_key: str) -> None:
    own = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOwnKeyOfTheStudent"
    metadata = instance_metadata("alice", public_key, "#cloud-config\n", student_public_key=own)
    # One `USER:KEY USER` line per key: Google's guest agent reads the value line by line.
    assert metadata["ssh-keys"] == f"alice:{own} alice\nalice:{public_key} alice"
