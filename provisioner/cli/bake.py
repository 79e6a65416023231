"""`image bake` and `image delete` on GCP: the class's image in a stack of its own, baked in two updates."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

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
NOT_COPIED = ("students", "studentsCsv")
"""The class's roster, which the bake stack does without: it makes no student's VM."""


def bake_stack(stack: str) -> str:
    """The stack that holds the image of the class stack STACK: `STACK-image`."""
    return f"{stack}-image"


@dataclass(frozen=True)
class Baked:
    """What a bake made: the image, its family and what it holds."""

    image: str
    family: str
    manifest: str


def bake(stack: str, *, ask: Ask, on_output: OnOutput = print, now: str | None = None) -> Baked:
    """Bake the image of the class stack STACK's settings: a builder VM runs the setup's system part and checks
    it (update 1), then its disk becomes the image of family `course-vm-STACK` and the builder goes (update 2),
    replacing the image an earlier bake made. ASK is asked once, before anything is created. Each bake (NOW,
    its UTC mark) gets a builder of its own: one an interrupted bake left is replaced.

    Raises SettingsError (the class's settings, before anything), CourseVmError (no class stack; the bake stack
    is someone else's; the answer is no), EngineError (the bake failed, its builder then deleted; the capture
    failed, its builder kept).
    """
    source = StackSession.open(stack)
    config = source.config()
    settings = config.settings()  # every problem of the class's settings, before any cloud call
    name, family = bake_stack(stack), image_family(stack)
    session = StackSession.open(name, missing_ok=True)
    held = session.config() if session.exists else StackConfig()
    if session.exists and held.values.get(_key("family")) != family:
        raise CourseVmError(
            f"stack {name} exists but is not the image stack of {stack} (its {_key('family')} is not "
            f"{family}): left alone. Fix: bake for another stack name, or remove stack {name}"
        )
    previous = str(held.values.get(_key("sourceDisk"), ""))
    replaced = f" and replaces the image it made before (of {previous.rsplit('/', 1)[-1]})" if previous else ""
    question = (
        f"The bake creates a builder VM in {settings.project}/{settings.zone} ({settings.machine_type}), which "
        f"installs Docker, docker-compose {settings.docker_compose.version} and Anaconda {settings.anaconda.version}, "
        f"checks them and powers off; its disk becomes the image of family {family}{replaced}; the builder is then "
        "deleted. It takes about 10 minutes and costs cents."
    )
    if not ask(question):
        raise declined(command("image bake", stack))
    try:
        return _bake(session, config, family, stack, now, on_output)
    finally:
        # `stack init` selected the bake stack: the raw CLI goes back to the class's.
        source.select()


def _bake(
    session: StackSession, config: StackConfig, family: str, stack: str, now: str | None, on_output: OnOutput
) -> Baked:
    """The bake in SESSION, once asked: the class's CONFIG copied, then its two updates (see `bake`)."""
    held = session.config() if session.exists else StackConfig()
    session.create()
    copied = _copied(config)
    # The class's settings as they are now: what it no longer has goes from the bake stack too.
    session.remove([key for key in held.values if _is_setting(key) and key not in copied])
    mark = now or datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    session.store(copied | {_key("phase"): BUILD, _key("family"): family, _key("bake"): mark}, {}, config.secret)
    _build(session, on_output)
    outputs = session.state().root
    disk, manifest = str(outputs.get("builderDisk", "")), str(outputs.get("manifest", ""))
    session.store({_key("phase"): CAPTURE, _key("builderDisk"): disk, _key("builderManifest"): manifest}, {})
    try:
        session.update(on_output, each_vm=False)
    except EngineRunError as failed:
        raise EngineError(
            f"{failed} The builder VM is kept, powered off, and the image of family {family} is as it was. Fix: "
            f"`{command('image bake', stack)}` again bakes anew (and deletes that builder), "
            f"`{command('image delete', stack)}` deletes both"
        ) from None
    session.store({_key("phase"): KEEP, _key("sourceDisk"): disk, _key("manifest"): manifest}, {})
    session.remove([_key("builderDisk"), _key("builderManifest")])
    return Baked(str(session.state().root.get("image", "")), family, manifest)


def _key(own: str) -> str:
    return f"{IMAGE_NAMESPACE}:{own}"


def _is_setting(key: str) -> bool:
    """Whether KEY of a stack's config is one the bake stack takes from the class's: GCP's or course-vm's."""
    namespace, _, own = key.partition(":")
    return namespace in ("gcp", PROJECT) and own not in NOT_COPIED


def _copied(config: StackConfig) -> dict[str, str]:
    """The class's CONFIG as the bake stack gets it (its secrets stay secrets: see `store`)."""
    return {
        key: value if isinstance(value, str) else json.dumps(value)
        for key, value in config.values.items()
        if _is_setting(key)
    }


def _build(session: StackSession, on_output: OnOutput) -> None:
    """The bake's first update: the builder and its check. When it fails, the builder goes (only the image, if
    any, is kept) and EngineError says why."""
    try:
        session.update(on_output, each_vm=False)
    except EngineRunError as failed:
        session.store({_key("phase"): KEEP}, {})
        session.update(on_output, each_vm=False)
        raise EngineError(f"{failed} The builder VM was deleted; nothing else changed.") from None


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
