"""`image bake` and `image delete` on GCP: the class's image in a stack of its own, baked in two updates."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from provisioner.cli.console import declined
from provisioner.driver.config import StackConfig
from provisioner.driver.session import EngineRunError, StackSession
from provisioner.driver.workspace import OnOutput
from provisioner.errors import CourseVmError, EngineError
from provisioner.gcp.course_image import BUILD, CAPTURE, KEEP, image_family
from provisioner.recipe.settings import PROJECT
from provisioner.stack import IMAGE_NAMESPACE, command

Ask = Callable[[str], bool]
"""Shown what is about to happen, says whether to go on."""
NOT_COPIED = ("students",)
"""Keys of the class's config the bake stack does without: it makes no student's VM (a roster with its
objects would not go through `config set-all`; studentsCsv names a file, which is copied as it is)."""


def bake_stack(stack: str) -> str:
    """The stack that holds the image of the class stack STACK: `STACK-image`."""
    return f"{stack}-image"


@dataclass(frozen=True)
class Baked:
    """What a bake made: the image, its family and what it holds."""

    image: str
    family: str
    manifest: str


def bake(stack: str, *, ask: Ask, on_output: OnOutput = print) -> Baked:
    """Bake the image of the class stack STACK's settings: a builder VM runs the setup's system part and checks
    it (update 1), then its disk becomes the image of family `course-vm-STACK` and the builder goes (update 2),
    replacing the image an earlier bake made. ASK is asked once, before anything is created.

    Raises SettingsError (the class's settings, before anything), CourseVmError (no class stack; the bake stack
    is someone else's; the answer is no; the bake failed, its builder then removed), EngineError.
    """
    source = StackSession.open(stack)
    config = source.config()
    settings = config.settings()  # every problem of the class's settings, before any cloud call
    name, family = bake_stack(stack), image_family(stack)
    session = StackSession.open(name, missing_ok=True)
    if session.exists and session.config().values.get(f"{IMAGE_NAMESPACE}:family") != family:
        raise CourseVmError(
            f"stack {name} exists but is not the image stack of {stack} (its {IMAGE_NAMESPACE}:family is not "
            f"{family}): left alone. Fix: bake for another stack name, or remove stack {name}"
        )
    held = session.config().values if session.exists else {}
    previous = str(held.get(f"{IMAGE_NAMESPACE}:sourceDisk", ""))
    replaced = f" and replaces the image it made before ({previous.rsplit('/', 1)[-1]})" if previous else ""
    question = (
        f"The bake creates a builder VM in {settings.project}/{settings.zone} ({settings.machine_type}), which "
        f"installs Docker, docker-compose {settings.docker_compose.version} and Anaconda {settings.anaconda.version}, "
        f"checks them and powers off; its disk becomes the image of family {family}{replaced}; the builder is then "
        "deleted. "
        "It takes about 10 minutes and costs cents."
    )
    if not ask(question):
        raise declined(command("image bake", stack))
    session.create()
    session.store(_copied(config) | {f"{IMAGE_NAMESPACE}:phase": BUILD, f"{IMAGE_NAMESPACE}:family": family}, {})
    try:
        session.update(on_output)
    except EngineRunError as failed:
        _remove_builder(session, on_output)
        raise EngineError(f"{failed} The builder VM was deleted; nothing else changed.") from None
    outputs = session.state().root
    disk, manifest = str(outputs.get("builderDisk", "")), str(outputs.get("manifest", ""))
    keys = {"phase": CAPTURE, "sourceDisk": disk, "manifest": manifest}
    session.store({f"{IMAGE_NAMESPACE}:{key}": value for key, value in keys.items()}, {})
    session.update(on_output)
    session.store({f"{IMAGE_NAMESPACE}:phase": KEEP}, {})
    return Baked(str(session.state().root.get("image", "")), family, manifest)


def _copied(config: StackConfig) -> dict[str, str]:
    """The class's config as the bake stack gets it: its GCP keys and its settings but NOT_COPIED."""
    copied: dict[str, str] = {}
    for key, value in config.values.items():
        namespace, _, own = key.partition(":")
        if namespace in ("gcp", PROJECT) and own not in NOT_COPIED:
            copied[key] = value if isinstance(value, str) else json.dumps(value)
    return copied


def _remove_builder(session: StackSession, on_output: OnOutput) -> None:
    """After a failed bake: only the image (if any) is kept, so the builder and its network go."""
    session.store({f"{IMAGE_NAMESPACE}:phase": KEEP}, {})
    session.update(on_output)


def delete_image(stack: str, *, ask: Ask, on_output: OnOutput = print) -> bool:
    """Delete the class stack STACK's image (and a builder a bake left), after ASK; False if there was none.

    Raises CourseVmError when the answer is no, EngineError when Pulumi fails.
    """
    session = StackSession.open(bake_stack(stack), missing_ok=True)
    if not session.exists or not session.state().root:
        return False
    image = str(session.state().root.get("image", "")).rsplit("/", 1)[-1] or "no image yet"
    plan = session.preview_destroy()
    if not plan.changes:
        return False
    question = (
        f"This deletes the image of family {image_family(stack)} ({image}): VMs made from it keep running, but "
        f"no new VM of stack {stack} can boot from it until the next `{command('image bake', stack)}`."
    )
    if not ask(question):
        raise declined(command("image delete", stack))
    session.destroy(on_output)
    return True
