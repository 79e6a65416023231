"""Compute Engine quotas: what a change adds (vCPUs, addresses, disk), against what the project and region have left."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner.errors import CourseVmError, ExitStatus
from provisioner.gcp.compute_api import TokenSource, application_default_token, compute_api, read_resource
from provisioner.recipe.settings import Settings
from provisioner.stack import DEFAULT_STACK, command

PROJECT_SCOPE = "project"
"""The scope of a quota of the whole project (CPUS_ALL_REGIONS); a regional one's scope is its region."""
QUOTAS_PAGE = "https://console.cloud.google.com/iam-admin/quotas?project={project}"
DISK_TYPE = "pd-balanced"
"""The type of the boot and home disks provisioner/gcp/course_vm.py creates."""
SHARED_CPU_FAMILIES = {"e2", "n1", "f1", "g1"}
"""Machine series whose vCPUs count against the region's CPUS quota (f1/g1 are N1 shared-core); every
other series has its own, FAMILY_CPUS (N2_CPUS, C3_CPUS, ...). GCE also lists E2_CPUS, but E2 VMs use CPUS."""


class QuotaError(CourseVmError):
    """A change would need more of a quota than the project has left; nothing was created."""

    exit_code = ExitStatus.MISSING_PREREQUISITE


@dataclass(frozen=True)
class Quota:
    """One entry of a project's or region's `quotas[]`, as the Compute API reports it."""

    metric: str
    scope: str
    limit: float
    usage: float


@dataclass(frozen=True)
class Shortfall:
    """A quota a change would exceed: it needs NEEDED more, with USAGE of LIMIT taken."""

    quota: Quota
    needed: float


def quotas_of(document: Mapping[str, Any], scope: str) -> dict[str, Quota]:
    """The `quotas[]` of a projects.get or regions.get answer, by metric."""
    found: dict[str, Quota] = {}
    for entry in document.get("quotas") or []:
        try:
            metric = str(entry["metric"])
            found[metric] = Quota(metric, scope, float(entry["limit"]), float(entry["usage"]))
        except (KeyError, TypeError, ValueError):
            continue  # an entry without numbers limits nothing we can compare
    return found


def cpu_quota(machine_type: str, spot: bool, region: Mapping[str, Quota]) -> str:
    """The regional quota a VM of MACHINE_TYPE counts its vCPUs against.

    Spot VMs count against PREEMPTIBLE_CPUS when the region grants some (limit above 0), as GCE
    does; a project without preemptible quota runs them on its standard quota.
    """
    preemptible = region.get("PREEMPTIBLE_CPUS")
    if spot and preemptible is not None and preemptible.limit > 0:
        return "PREEMPTIBLE_CPUS"
    family = machine_type.split("-", 1)[0].lower()
    return "CPUS" if family in SHARED_CPU_FAMILIES else f"{family.upper()}_CPUS"


def disk_quota(disk_type: str) -> str:
    """The regional quota a persistent disk of DISK_TYPE counts its size against."""
    return "DISKS_TOTAL_GB" if disk_type == "pd-standard" else "SSD_TOTAL_GB"


@dataclass(frozen=True)
class Existing:
    """A VM that exists and that the change updates or replaces: what it has now."""

    machine_type: str
    disk_gb: int
    """Its boot disk and home disk, in GB."""


def demand(
    settings: Settings, vms: int, guest_cpus: int, region: Mapping[str, Quota], grown_cpus: int = 0, grown_gb: int = 0
) -> dict[tuple[str, str], float]:
    """What creating VMS new VMs of SETTINGS adds, with GROWN_CPUS and GROWN_GB more for VMs that exist
    and get bigger, by (quota metric, scope); only what is above 0.

    Each new VM: GUEST_CPUS vCPUs (its region's CPU quota and the project's CPUS_ALL_REGIONS), one
    static external address (in use, and static; none under sshAccess iap), and its boot disk and
    home disk (diskSizeGb + homeDiskSizeGb) of DISK_TYPE.
    """
    here = settings.region
    cpus = vms * guest_cpus + grown_cpus
    addresses = 0 if settings.iap else vms
    added: dict[tuple[str, str], float] = {
        ("CPUS_ALL_REGIONS", PROJECT_SCOPE): cpus,
        (cpu_quota(settings.machine_type, settings.spot, region), here): cpus,
        ("IN_USE_ADDRESSES", here): addresses,
        ("STATIC_ADDRESSES", here): addresses,
        (disk_quota(DISK_TYPE), here): vms * (settings.disk_size_gb + settings.home_disk_size_gb) + grown_gb,
    }
    return {key: amount for key, amount in added.items() if amount > 0}


def shortfalls(
    added: Mapping[tuple[str, str], float], project: Mapping[str, Quota], region: Mapping[str, Quota]
) -> list[Shortfall]:
    """The quotas ADDED would exceed. A metric the API does not list for its scope limits nothing here."""
    short = []
    for (metric, scope), amount in added.items():
        quota = (project if scope == PROJECT_SCOPE else region).get(metric)
        if quota is not None and quota.usage + amount > quota.limit:
            short.append(Shortfall(quota, amount))
    return short


def _number(value: float) -> str:
    return f"{value:g}"


def quota_table(short: list[Shortfall]) -> str:
    """QUOTA, SCOPE, NEEDED (what the change adds), IN USE and LIMIT, one row per quota, aligned."""
    rows = [("QUOTA", "SCOPE", "NEEDED", "IN USE", "LIMIT")]
    rows += [
        (s.quota.metric, s.quota.scope, _number(s.needed), _number(s.quota.usage), _number(s.quota.limit))
        for s in short
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def quota_error(
    project: str, vms: int, short: list[Shortfall], up: str = "course-vm up", bigger: int = 0
) -> QuotaError:
    count = "a quota" if len(short) == 1 else f"{len(short)} quotas"

    def some(n: int, what: str) -> str:
        return f"{n} {what} VM" + ("" if n == 1 else "s")

    if not bigger:
        who, done = f"the {some(vms, 'new')}", "nothing was created"
    else:
        who = (f"{some(vms, 'new')} and " if vms else "") + some(bigger, "bigger")
        done = "nothing was created or changed"
    table = "\n".join(f"  {line}" for line in quota_table(short).splitlines())
    return QuotaError(
        f"{who} would exceed {count} of project {project}; {done}:\n{table}\n"
        f"Fix: ask for more at {QUOTAS_PAGE.format(project=project)} (or use fewer or smaller VMs, smaller disks, "
        f"or a zone in another region), then run `{up}` again"
    )


def check_before_up(
    settings: Settings,
    created_vms: int,
    *,
    api: str | None = None,
    token: TokenSource = application_default_token,
    stack: str = DEFAULT_STACK,
    existing: Sequence[Existing] = (),
) -> None:
    """Read the project from the Compute API and, when CREATED_VMS > 0 or VMs the change updates or
    replaces (EXISTING, as they are now) get bigger, compare what that adds with the quotas left
    (a few small GETs: the project, its region, each machine type).

    Raises ServiceDisabledError when the API is not enabled in the project, QuotaError when a
    quota would be exceeded (its table says which), UnreachableError when the API does not
    answer, and CourseVmError when the project, region or machine type does not exist or may
    not be read.
    """
    api = api or compute_api()  # checked before a token is fetched
    access = token()
    up = command("up", stack)
    project = urllib.parse.quote(settings.project, safe="")
    region_name = urllib.parse.quote(settings.region, safe="")
    project_document = read_resource(
        api,
        f"/projects/{project}",
        access,
        "compute.projects.get",
        f"project {settings.project} not found ({{reason}}). Fix: name your project's ID: "
        f"`{up} --project YOUR-PROJECT-ID`",
        up,
    )
    grown_gb = sum(settings.disk_size_gb + settings.home_disk_size_gb - vm.disk_gb for vm in existing)
    changed_type = [vm for vm in existing if vm.machine_type != settings.machine_type]
    if created_vms <= 0 and grown_gb <= 0 and not changed_type:
        return
    region_document = read_resource(
        api,
        f"/projects/{project}/regions/{region_name}",
        access,
        "compute.regions.get",
        f"region {settings.region} (of zone {settings.zone}) not found ({{reason}}). Fix: a zone that exists: "
        f"`{up} --zone europe-west1-b`",
        up,
    )
    guest_cpus, old_cpus = _machine_cpus(api, access, up, settings, changed_type)
    grown_cpus = sum(guest_cpus - old_cpus[vm.machine_type] for vm in changed_type)
    region = quotas_of(region_document, settings.region)
    added = demand(settings, created_vms, guest_cpus, region, max(grown_cpus, 0), max(grown_gb, 0))
    short = shortfalls(added, quotas_of(project_document, PROJECT_SCOPE), region)
    if short:
        bigger = _bigger(settings, existing, old_cpus, guest_cpus)
        raise quota_error(settings.project, created_vms, short, up, bigger)


def _machine_cpus(
    api: str, access: str, up: str, settings: Settings, changed_type: Sequence[Existing]
) -> tuple[int, dict[str, int]]:
    """The vCPUs of SETTINGS' machine type, and of each machine type the VMs of CHANGED_TYPE have now."""
    guest_cpus = _guest_cpus(
        api,
        access,
        up,
        settings,
        settings.machine_type,
        f"machine type {settings.machine_type} does not exist in zone {settings.zone} ({{reason}}). Fix: "
        f"`pulumi config set machineType e2-standard-4`, or a zone that has it: `{up} --zone ZONE`",
    )
    old_cpus = {
        name: _guest_cpus(
            api,
            access,
            up,
            settings,
            name,
            f"machine type {name} (a VM's now) cannot be read in zone {settings.zone} ({{reason}}). Fix: "
            f"try `{up}` again",
        )
        for name in sorted({vm.machine_type for vm in changed_type})
    }
    return guest_cpus, old_cpus


def _guest_cpus(api: str, access: str, up: str, settings: Settings, name: str, missing: str) -> int:
    """The vCPUs of machine type NAME in SETTINGS' zone; MISSING is the error's message when it cannot be read."""
    project, zone = (urllib.parse.quote(part, safe="") for part in (settings.project, settings.zone))
    machine = read_resource(
        api,
        f"/projects/{project}/zones/{zone}/machineTypes/{urllib.parse.quote(name, safe='')}",
        access,
        "compute.machineTypes.get",
        missing,
        up,
    )
    return int(machine.get("guestCpus") or 0)


def _bigger(settings: Settings, existing: Sequence[Existing], old_cpus: Mapping[str, int], guest_cpus: int) -> int:
    """How many of the EXISTING VMs SETTINGS make bigger: more disk, or more vCPUs than their OLD_CPUS."""
    return sum(
        1
        for vm in existing
        if vm.disk_gb < settings.disk_size_gb + settings.home_disk_size_gb
        or old_cpus.get(vm.machine_type, guest_cpus) < guest_cpus
    )
