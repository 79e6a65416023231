"""The rules across rows (one roster, SSH access, each artifact's checksum), GCP's keys, and keys no row has."""

from __future__ import annotations

import difflib
import json
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from provisioner.recipe.problems import Problems, remove_key, set_key
from provisioner.recipe.roster import RosterEntry
from provisioner.recipe.rules import ProviderKey
from provisioner.recipe.settings_table import DEFAULTS, IAP_RANGE, PROVIDER_KEYS, ROW, SETTINGS

# Each rule across rows runs where the first of its rows is checked, and checks its rows itself.

_JointRule = Callable[[Problems, Mapping[str, object]], dict[str, Any]]
"""Checks several rows of a raw config together; returns each row's typed value."""


def _one_roster(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
    """`students` or `studentsCsv`, not both: a class has one roster."""
    listed, csv_path = raw.get("students"), raw.get("studentsCsv")
    if listed not in (None, "", []) and csv_path not in (None, ""):
        fix = "keep one: " + remove_key("students") + ", or " + remove_key("studentsCsv")
        problems.add("studentsCsv", csv_path, "students is set too, and a class has one roster", fix)
        return {"students": (), "studentsCsv": ()}
    return {key: ROW[key].check(problems, given(raw, key)) for key in ("students", "studentsCsv")}


def _artifact_rows(prefix: str) -> _JointRule:
    """The rule across PREFIX's version, checksum and URL, checked in that order.

    The URL is checked with {version} filled in; the default checksum belongs to the default
    version only, so a new version without its own checksum is a problem.
    """
    version_key, url_key, sha_key = f"{prefix}Version", f"{prefix}Url", f"{prefix}Sha256"

    def rule(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
        version = ROW[version_key].check(problems, raw.get(version_key, DEFAULTS[version_key]))
        sha = ROW[sha_key].check(problems, raw.get(sha_key, DEFAULTS[sha_key]))
        if version and version_key in raw and sha_key not in raw and version != DEFAULTS[version_key]:
            problems.add(
                version_key,
                raw[version_key],
                f"the default {sha_key} only matches version {DEFAULTS[version_key]}",
                "also set the new release's checksum: " + set_key(sha_key, "SHA256"),
            )
        template = raw.get(url_key, DEFAULTS[url_key])
        url = template.replace("{version}", version) if isinstance(template, str) else template
        return {version_key: version, sha_key: sha, url_key: ROW[url_key].check(problems, url)}

    return rule


def _access_rows(problems: Problems, raw: Mapping[str, object]) -> dict[str, Any]:
    """`sshAccess` with what it uses: `allowedSshCidrs` (firewall only) and `studentEmail` (iap, one VM only).

    A value the chosen access would not use is a problem, not silently ignored. Under iap one VM
    needs no studentEmail: whoever runs `up` owns the project and may open a tunnel already.
    """
    access = ROW["sshAccess"].check(problems, given(raw, "sshAccess"))
    cidrs_given = raw.get("allowedSshCidrs") not in (None, "", "[]", [])
    cidrs: tuple[str, ...] = ()
    if access == "iap":
        if cidrs_given:
            why = f"sshAccess is iap, which admits only Google's IAP range {IAP_RANGE}, so the ranges would not be used"
            problems.add("allowedSshCidrs", raw["allowedSshCidrs"], why, remove_key("allowedSshCidrs"))
    elif access:
        cidrs = ROW["allowedSshCidrs"].check(problems, given(raw, "allowedSshCidrs"))
    email = ROW["studentEmail"].check(problems, given(raw, "studentEmail"))
    if email and access == "firewall":
        why = "sshAccess is firewall, and only iap grants a Google account access"
        problems.add("studentEmail", email, why, set_key("sshAccess", "iap") + ", or " + remove_key("studentEmail"))
    elif email and (raw.get("students") not in (None, "", "[]", []) or raw.get("studentsCsv")):
        why = "a class's VMs are granted to each student's own email (the roster's email column)"
        problems.add("studentEmail", email, why, remove_key("studentEmail"))
    return {"sshAccess": access, "allowedSshCidrs": cidrs, "studentEmail": email}


_JOINT_RULES: Mapping[str, _JointRule] = {
    "students": _one_roster,
    "sshAccess": _access_rows,
    "anacondaVersion": _artifact_rows("anaconda"),
    "dockerComposeVersion": _artifact_rows("dockerCompose"),
}
"""Each rule across rows, by the first of its rows."""


def checked_rows(problems: Problems, raw: Mapping[str, object], *, for_gcp: bool) -> dict[str, Any]:
    """Each row's typed value by its own rule or the rule across its rows, in the table's order; a
    placeholder where a problem was added to PROBLEMS. Without FOR_GCP a row only GCP uses takes its
    default unchecked: `allowedSshCidrs`' default, no range, is a problem only where a firewall uses it."""
    values: dict[str, Any] = {}
    for row in SETTINGS:
        if row.key in values:
            continue  # checked by the joint rule of an earlier row
        if row.only_for_gcp and not for_gcp:
            values[row.key] = tuple(row.default) if isinstance(row.default, list) else row.default
            continue
        joint = _JOINT_RULES.get(row.key)
        values.update(joint(problems, raw) if joint else {row.key: row.check(problems, given(raw, row.key))})
    return values


def emails_for_iap(problems: Problems, roster: Sequence[RosterEntry], *, listed: bool) -> None:
    """Under IAP, every student of a class needs their Google account: without one, nobody but the
    project's owners could reach their VM. (A stack's one VM needs none: see studentEmail.)
    LISTED: the roster is the `students` list, which carries no emails."""
    why = "sshAccess iap grants each student's Google account access to their own VM, and this student has none"
    for entry in roster:
        if entry.email:
            continue
        if listed:
            fix = (
                "a roster CSV with `name` and `email` columns: "
                + remove_key("students")
                + ", then "
                + set_key("studentsCsv", "roster.csv")
            )
            problems.add("students", entry.name, why + " (a `students` list carries no emails: use studentsCsv)", fix)
        else:
            fix_csv = f"add an `email` column to the roster with {entry.name}'s Google account"
            problems.add("studentsCsv", entry.name, why, fix_csv)


def checked_gcp_location(problems: Problems, project: object, zone: object) -> dict[str, str]:
    """The Settings fields of `gcp:project` and `gcp:zone` (PROJECT and ZONE): both required."""
    return {
        key.field: _provider_key(problems, key, value)
        for key, value in zip(PROVIDER_KEYS, (project, zone), strict=True)
    }


def _provider_key(problems: Problems, key: ProviderKey, value: object) -> str:
    fix = set_key(key.key, key.example) + f" ({key.hint})"
    if value is None:
        problems.not_set(key.key, fix)
        return ""
    if isinstance(value, str) and key.pattern.fullmatch(value):
        return value
    problems.add(key.key, value, key.why, fix)  # with the hint: the value may be the README's placeholder itself
    return ""


def _as_typed(key: str, value: object) -> object:
    """VALUE as KEY takes it: for a list key, a value given alone as the JSON list of it, quoted for a shell
    (`--set forwardport=8888` meant `--set forwardPorts='["8888"]'`)."""
    if ROW[key].type != "array" or isinstance(value, list) or (isinstance(value, str) and value.startswith("[")):
        return value
    return shlex.quote(json.dumps([value]))


def report_unknown_keys(problems: Problems, raw: Mapping[str, object]) -> None:
    """Every key course-vm does not know, with the known key it most likely meant, if one is close."""
    by_lower = {key.lower(): key for key in DEFAULTS}
    for key in sorted(set(raw) - set(DEFAULTS)):
        near = difflib.get_close_matches(key.lower(), by_lower, n=1, cutoff=0.8)
        if near:
            meant = by_lower[near[0]]
            why = f"course-vm has no such setting (did you mean {meant}?)"
            problems.add(key, raw[key], why, remove_key(key) + ", then " + set_key(meant, _as_typed(meant, raw[key])))
            continue
        fix = remove_key(key, aside=True) + f"; known keys: {', '.join(DEFAULTS)}"
        problems.add(key, raw[key], "course-vm has no such setting", fix)


def given(raw: Mapping[str, object], key: str) -> object:
    """KEY's raw value, or its default when it is unset or None."""
    value = raw.get(key)
    return DEFAULTS[key] if value is None else value
