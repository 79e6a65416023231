"""A stack's config, from `pulumi config --json` or its stack file, and the settings the program builds from it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import CourseVmError
from provisioner.recipe.rules import Problems
from provisioner.recipe.settings import PROJECT, SETTINGS, Settings, settings_from_pulumi

CIDRS_KEY = "allowedSshCidrs"


@dataclass(frozen=True)
class StackConfig:
    """Every key of a stack's config by its full name (`course-vm:diskSizeGb`, `gcp:zone`): as `pulumi config
    --json` gives it (a string; a list set with --path as its JSON text), or as the stack file holds it
    (`render`, which needs no Pulumi CLI: a YAML value). Either way the settings are built the one way the
    program builds them (`settings`)."""

    values: Mapping[str, object] = field(default_factory=dict)
    secret: frozenset[str] = frozenset()
    """The keys `pulumi config` keeps encrypted (`--secret`): never copied anywhere in the clear."""

    @classmethod
    def from_cli(cls, document: object) -> StackConfig:
        """The config in DOCUMENT, what `pulumi config --json --show-secrets` printed ({KEY: {"value": ...}})."""
        if not isinstance(document, dict):
            return cls()
        values, secret = {}, set()
        for key, entry in document.items():
            value = entry.get("value") if isinstance(entry, dict) else entry
            if value is not None:
                values[str(key)] = value if isinstance(value, str) else json.dumps(value)
            if isinstance(entry, dict) and entry.get("secret") is True:
                secret.add(str(key))
        return cls(values, frozenset(secret))

    @classmethod
    def from_stack_file(cls, path: Path) -> StackConfig:
        """The config in PATH, a `Pulumi.<stack>.yaml` file, read as `pulumi up` would, without the Pulumi CLI.

        Raises CourseVmError when the file cannot be used: missing, unreadable, not YAML, not a stack's
        settings, or holding course-vm settings encrypted (they are never secrets).
        """
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
            raise CourseVmError(
                f"no stack settings {path}. Fix: `pulumi stack init {stack}` and set its config first"
            ) from None
        except OSError as error:
            raise CourseVmError(f"cannot read stack settings {path}: {error.strerror}. Fix: make it readable") from None
        except (yaml.YAMLError, ValueError) as error:
            raise CourseVmError(
                f"{path} is not valid YAML ({' '.join(str(error).split())}). Fix: correct it there, "
                "or remove it and set each value again: `pulumi config set KEY VALUE`"
            ) from None
        config = document.get("config") or {} if isinstance(document, dict) else None
        if not isinstance(config, dict):
            raise CourseVmError(
                f"{path} is not a stack's settings: they are a `config:` mapping of KEY: VALUE lines. "
                "Fix: correct it there, or remove it and set each value again: `pulumi config set KEY VALUE`"
            )
        values = {str(key): value for key, value in config.items()}
        encrypted = sorted(key.removeprefix(f"{PROJECT}:") for key, value in values.items()
                           if key.startswith(f"{PROJECT}:") and isinstance(value, dict))  # fmt: skip
        if encrypted:
            raise CourseVmError(
                f"{path}: {', '.join(encrypted)} encrypted, but course-vm settings are not "
                "secrets. Fix: set them again without --secret"
            )
        return cls(values)

    @property
    def iap(self) -> bool:
        """Whether the stack's VMs are reached through Identity-Aware Proxy (`sshAccess: iap`): `up` then needs
        gcloud's own login for its verification. Decided on the stored value alone, before any rule runs."""
        return self.values.get(f"{PROJECT}:sshAccess") == "iap"

    def own(self) -> dict[str, object]:
        """course-vm's own keys, without the `course-vm:` prefix."""
        prefix = f"{PROJECT}:"
        return {key[len(prefix) :]: value for key, value in self.values.items() if key.startswith(prefix)}

    def settings(self) -> Settings:
        """The Settings the program builds from this config (every key, `course-vm:` and `gcp:`).

        Raises SettingsError as the program would, listing every problem.
        """
        return settings_from_pulumi(self.own(), lambda key: _text(self.values.get(f"gcp:{key}")))

    def key_path(self) -> Path | None:
        """The `sshKeyPath` the program reads from this config; None when the program refuses that one
        value (whatever the others: `down` retires the keys of a stack whose roster is gone)."""
        row = next(setting for setting in SETTINGS if setting.key == "sshKeyPath")
        problems = Problems()
        path = row.rule(problems, row, self.values.get(f"{PROJECT}:{row.key}", row.default))
        return None if problems.lines else Path(path)

    def cidrs(self) -> list[str]:
        """The stored `allowedSshCidrs` (a list is its JSON text; one range set without --path is itself)."""
        text = self.values.get(f"{PROJECT}:{CIDRS_KEY}", "")
        try:
            value: Any = json.loads(text) if isinstance(text, str) and text else text or []
        except ValueError:
            value = [text]
        return [str(cidr) for cidr in value] if isinstance(value, list) else [str(value)]

    def with_changes(self, values: Mapping[str, object], lists: Mapping[str, Sequence[str]]) -> StackConfig:
        """This config after VALUES (full keys) and LISTS (own keys, each list replacing the stored one) are set."""
        changed = dict(self.values) | dict(values)
        changed |= {f"{PROJECT}:{key}": json.dumps(list(items)) for key, items in lists.items()}
        return StackConfig(changed, self.secret)


def _text(value: object) -> str | None:
    """A provider key's value as Pulumi's config getter gives it: text, or None when it is not set."""
    return None if value is None else str(value)
