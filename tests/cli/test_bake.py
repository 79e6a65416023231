"""`image bake` and `image delete` on GCP, driving the stand-in Pulumi CLI (tests/support/stand_in_pulumi.py).

The stand-in does not run the program: each update makes the outputs the test gives for the bake's
phase. The program's side of each phase is tests/gcp/test_course_image.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from provisioner.cli.bake import bake, delete_image
from provisioner.cli.main import main
from provisioner.errors import CourseVmError, EngineError, ExitStatus
from tests.support.pulumi_events import error_diagnostic, preview_events
from tests.support.pulumi_state import STACK_CONFIG
from tests.support.stand_in_pulumi import stand_in_here

DISK = "https://www.googleapis.com/compute/v1/projects/course-project-1/zones/europe-west1-b/disks/course-image-builder"
IMAGE = "https://www.googleapis.com/compute/v1/projects/course-project-1/global/images/course-image-image-1a2b3c"
MANIFEST = "course-vm-image 1\nrecipe abc\nanaconda 2022.05 a7c0\ndocker-compose v2.6.1 ed79"
PHASES = {
    "course-vm-image:phase=build": {"project": "course-project-1", "family": "course-vm-fall", "builderDisk": DISK,
                                    "manifest": MANIFEST},
    "course-vm-image:phase=capture": {"project": "course-project-1", "family": "course-vm-fall", "image": IMAGE},
}  # fmt: skip
CLASS = {**STACK_CONFIG, "course-vm:students": '["alice"]', "course-vm:anacondaVersion": "2022.05"}


def answer(yes: bool, asked: list[str]) -> object:
    def ask(question: str) -> bool:
        asked.append(question)
        return yes

    return ask


def test_a_bake_builds_then_captures_in_a_stack_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall": {}}, config={"fall": CLASS}, outputs_when=PHASES)
    asked: list[str] = []
    said: list[str] = []
    baked = bake("fall", ask=answer(True, asked), on_output=said.append, now="20261205T010000Z")  # type: ignore[arg-type]
    assert (baked.image, baked.family, baked.manifest) == (IMAGE, "course-vm-fall", MANIFEST)
    [question] = asked
    assert "builder VM in course-project-1/europe-west1-b" in question and "family course-vm-fall" in question
    config = pulumi.config("fall-image")
    # The class's settings, but not its roster: the bake makes no student's VM.
    assert {k: v for k, v in config.items() if not k.startswith("course-vm-image:")} == {
        k: v for k, v in CLASS.items() if k != "course-vm:students"
    }
    assert {k: v for k, v in config.items() if k.startswith("course-vm-image:")} == {
        "course-vm-image:phase": "keep", "course-vm-image:family": "course-vm-fall",
        "course-vm-image:bake": "20261205T010000Z", "course-vm-image:sourceDisk": DISK,
        "course-vm-image:manifest": MANIFEST,
    }  # fmt: skip
    ups = [call for call in pulumi.calls() if call[0] == "up"]
    assert len(ups) == 2, "build, then capture"
    # The first failure stops a bake's update: a failed capture must not go on to delete the builder's disk.
    assert not [call for call in ups if "--continue-on-error" in call]
    assert pulumi.config("fall") == CLASS, "the class's own stack is only read"
    assert pulumi.selected() == "fall", "the raw CLI still reaches the class's stack"


def test_a_no_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall": {}}, config={"fall": CLASS}, outputs_when=PHASES)
    with pytest.raises(CourseVmError, match="not confirmed: nothing was created"):
        bake("fall", ask=answer(False, []))  # type: ignore[arg-type]
    assert "stack init" not in pulumi.verbs() and "up" not in pulumi.verbs()


def test_a_failed_bake_deletes_its_builder_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failure = "the bake failed: [course-vm] FAILED packages exit=100 | packages| E: Unable to locate package docker.io"
    fail = {"up": {"when": "course-vm-image:phase=build",
                   "events": [error_diagnostic(failure + "\n")]}}  # fmt: skip
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall": {}}, config={"fall": CLASS}, outputs_when=PHASES, fail=fail)
    with pytest.raises(EngineError) as raised:
        bake("fall", ask=answer(True, []))  # type: ignore[arg-type]
    assert "E: Unable to locate package docker.io" in str(raised.value)
    assert str(raised.value).endswith("The builder VM was deleted; nothing else changed.")
    assert pulumi.verbs().count("up") == 2, "the failed build, then the update that removes the builder"
    assert pulumi.config("fall-image")["course-vm-image:phase"] == "keep"


def test_a_stack_of_that_name_that_is_not_the_bakes_is_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_here(
        tmp_path, monkeypatch, {"fall": {}, "fall-image": {}}, config={"fall": CLASS, "fall-image": STACK_CONFIG}
    )
    with pytest.raises(CourseVmError, match="stack fall-image exists but is not the image stack of fall"):
        bake("fall", ask=answer(True, []))  # type: ignore[arg-type]
    assert "up" not in pulumi.verbs() and "config set-all" not in pulumi.verbs()


def test_the_class_settings_are_checked_before_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = {**CLASS, "course-vm:anacondaVersion": "2022.05; rm -rf /"}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall": {}}, config={"fall": bad})
    with pytest.raises(CourseVmError, match="anacondaVersion"):
        bake("fall", ask=answer(True, []))  # type: ignore[arg-type]
    assert "stack init" not in pulumi.verbs()


def test_delete_previews_asks_and_destroys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = preview_events({}, stack="fall-image")
    image = "urn:pulumi:fall-image::course-vm::course-vm:gcp:CourseImage$gcp:compute/image:Image::course-image-image"
    events.append(
        {"sequence": 1, "timestamp": 0, "resourcePreEvent": {"metadata": {
            "op": "delete", "urn": image, "type": "gcp:compute/image:Image", "old": {"parent": ""}}}}
    )  # fmt: skip
    kept = {"project": "course-project-1", "family": "course-vm-fall", "image": IMAGE}
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall-image": kept}, events=events)
    asked: list[str] = []
    with pytest.raises(CourseVmError, match="not confirmed"):
        delete_image("fall", ask=answer(False, asked))  # type: ignore[arg-type]
    assert not [call for call in pulumi.calls() if call[0] == "destroy" and "--preview-only" not in call]
    assert "course-image-image-1a2b3c" in asked[0] and "VMs made from it keep running" in asked[0]
    assert delete_image("fall", ask=answer(True, [])) is True  # type: ignore[arg-type]
    assert pulumi.outputs("fall-image") == {}


def test_delete_without_an_image_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stand_in_here(tmp_path, monkeypatch, {"fall": {}})
    assert main(["image", "delete", "--stack", "fall", "--yes"]) == 0
    assert "Stack fall has no baked image: nothing to delete." in capsys.readouterr().out


def test_bake_without_a_terminal_needs_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pulumi = stand_in_here(tmp_path, monkeypatch, {"fall": {}}, config={"fall": CLASS}, outputs_when=PHASES)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["image", "bake", "--stack", "fall"]) == ExitStatus.DECLINED
    assert "run it again with --yes" in capsys.readouterr().err
    assert "up" not in pulumi.verbs()
    assert main(["image", "bake", "--stack", "fall", "--yes", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert printed == {"image": IMAGE, "family": "course-vm-fall", "manifest": MANIFEST.splitlines()}


def test_the_bake_stack_follows_the_class_and_keeps_its_secrets_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The class dropped spot since the last bake, and holds a credential as a secret.
    held = {
        **CLASS,
        "course-vm:spot": "true",
        "course-vm-image:family": "course-vm-fall",
        "course-vm-image:phase": "keep",
    }
    config = {"fall": {**CLASS, "gcp:accessToken": "ya29.secret"}, "fall-image": held}
    secrets = {"fall": ["gcp:accessToken"]}
    pulumi = stand_in_here(
        tmp_path, monkeypatch, {"fall": {}, "fall-image": {}}, config=config, secrets=secrets, outputs_when=PHASES
    )
    bake("fall", ask=answer(True, []))  # type: ignore[arg-type]
    now = pulumi.config("fall-image")
    assert "course-vm:spot" not in now, "what the class no longer has is not baked"
    assert now["gcp:accessToken"] == "ya29.secret"
    pair = "gcp:accessToken=ya29.secret"
    given = [call for call in pulumi.calls() if pair in call]
    assert given and all(call[call.index(pair) - 1] == "--secret" for call in given), given


def test_a_failed_capture_keeps_the_builder_and_the_old_image_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = {"course-vm-image:family": "course-vm-fall", "course-vm-image:phase": "keep",
           "course-vm-image:sourceDisk": DISK + "-old", "course-vm-image:manifest": "course-vm-image 1"}  # fmt: skip
    refused = error_diagnostic("googleapi: Error 400: The disk resource is already being used\n")
    fail = {"up": {"when": "course-vm-image:phase=capture", "events": [refused]}}
    pulumi = stand_in_here(
        tmp_path, monkeypatch, {"fall": {}, "fall-image": {}}, config={"fall": CLASS, "fall-image": {**CLASS, **old}},
        outputs_when=PHASES, fail=fail,
    )  # fmt: skip
    with pytest.raises(EngineError) as raised:
        bake("fall", ask=answer(True, []))  # type: ignore[arg-type]
    message = str(raised.value)
    assert "The builder VM is kept, powered off, and the image of family course-vm-fall is as it was" in message
    assert "`course-vm image bake --stack fall` again bakes anew" in message
    config = pulumi.config("fall-image")
    assert (config["course-vm-image:sourceDisk"], config["course-vm-image:manifest"]) == (
        DISK + "-old",
        "course-vm-image 1",
    ), "the kept image's own disk and manifest, untouched"


def test_without_the_pulumi_cli_the_bake_says_what_is_missing_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["image", "bake", "--stack", "fall", "--yes"]) == ExitStatus.MISSING_PREREQUISITE
    said = capsys.readouterr().err
    assert said.startswith("course-vm image bake needs ") and "lacks; nothing was created:\n" in said
    assert "the Pulumi CLI is not on PATH" in said
