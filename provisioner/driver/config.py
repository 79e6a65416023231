"""A stack's config as `pulumi config --json` gives it, and the settings the program would build from it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provisioner.recipe.rules import Problems
from provisioner.recipe.settings import PROJECT, SETTINGS, Settings, settings_from_pulumi

CIDRS_KEY = "allowedSshCidrs"


@dataclass(frozen=True)
class StackConfig:
    """Every key of a stack's config by its full name (`course-vm:diskSizeGb`, `gcp:zone`), each as
    `pulumi config --json` gives it: a string, a list set with --path as its JSON text."""

    values: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_cli(cls, document: object) -> StackConfig:
        """The config in DOCUMENT, what `pulumi config --json --show-secrets` printed ({KEY: {"value": ...}})."""
        if not isinstance(document, dict):
            return cls()
        values = {}
        for key, entry in document.items():
            value = entry.get("value") if isinstance(entry, dict) else entry
            if value is not None:
                values[str(key)] = value if isinstance(value, str) else json.dumps(value)
        return cls(values)

    @property
    def iap(self) -> bool:
        """Whether the stack's VMs are reached through Identity-Aware Proxy (`sshAccess: iap`): `up` then needs
        gcloud's own login for its verification. Decided on the stored value alone, before any rule runs."""
        return self.values.get(f"{PROJECT}:sshAccess") == "iap"

    def own(self) -> dict[str, str]:
        """course-vm's own keys, without the `course-vm:` prefix."""
        prefix = f"{PROJECT}:"
        return {key[len(prefix) :]: value for key, value in self.values.items() if key.startswith(prefix)}

    def settings(self) -> Settings:
        """The Settings the program builds from this config (every key, `course-vm:` and `gcp:`).

        Raises SettingsError as the program would, listing every problem.
        """
        return settings_from_pulumi(self.own(), lambda key: self.values.get(f"gcp:{key}"))

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
            value: Any = json.loads(text) if text else []
        except ValueError:
            value = [text]
        return [str(cidr) for cidr in value] if isinstance(value, list) else [str(value)]

    def with_changes(self, values: Mapping[str, str], lists: Mapping[str, Sequence[str]]) -> StackConfig:
        """This config after VALUES (full keys) and LISTS (own keys, each list replacing the stored one) are set."""
        changed = dict(self.values) | dict(values)
        changed |= {f"{PROJECT}:{key}": json.dumps(list(items)) for key, items in lists.items()}
        return StackConfig(changed)
