"""What a change adds against the quotas left, read from the fake Compute API (tests/support/fake_compute_api.py)."""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.errors import CourseVmError, ExitStatus, UnreachableError
from provisioner.gcp.compute_api import ServiceDisabledError
from provisioner.gcp.quotas import (
    PROJECT_SCOPE,
    Existing,
    Quota,
    QuotaError,
    check_before_up,
    cpu_quota,
    demand,
    quota_table,
    shortfalls,
)
from provisioner.recipe.settings import Settings, parse_settings
from tests.support.fake_compute_api import (
    MACHINE_TYPES_PATH,
    PROJECT_PATH,
    REGION_PATH,
    TOKEN,
    FakeComputeApi,
    quota,
)


def settings(**raw: Any) -> Settings:
    return parse_settings({"allowedSshCidrs": ["203.0.113.7/32"], **raw}, "course-project-1", "europe-west1-b")


def region(*entries: tuple[str, float, float]) -> dict[str, Quota]:
    return {metric: Quota(metric, "europe-west1", limit, usage) for metric, limit, usage in entries}


def check(api: FakeComputeApi, created: int, **raw: Any) -> None:
    check_before_up(settings(**raw), created, api=api.url, token=lambda: TOKEN)


# The pure part: which quota, how much, what is short.


@pytest.mark.parametrize(
    ("machine_type", "spot", "preemptible_limit", "metric"),
    [
        ("e2-standard-4", False, 0, "CPUS"),
        ("n1-standard-2", False, 0, "CPUS"),
        ("g1-small", False, 0, "CPUS"),
        ("n2-standard-4", False, 0, "N2_CPUS"),
        ("n2d-standard-4", False, 0, "N2D_CPUS"),
        ("c3-standard-8", False, 0, "C3_CPUS"),
        # Spot: the preemptible quota where the region grants one, else the standard quota.
        ("e2-standard-4", True, 0, "CPUS"),
        ("e2-standard-4", True, 16, "PREEMPTIBLE_CPUS"),
        ("n2-standard-4", True, 16, "PREEMPTIBLE_CPUS"),
        ("e2-standard-4", False, 16, "CPUS"),
    ],
)
def test_the_cpu_quota_of_a_machine_type(machine_type: str, spot: bool, preemptible_limit: float, metric: str) -> None:
    assert cpu_quota(machine_type, spot, region(("PREEMPTIBLE_CPUS", preemptible_limit, 0))) == metric


def test_a_class_of_thirty_adds_vcpus_addresses_and_ssd_per_vm() -> None:
    added = demand(settings(homeDiskSizeGb=10), 30, 4, region())
    assert added == {
        ("CPUS_ALL_REGIONS", PROJECT_SCOPE): 120,
        ("CPUS", "europe-west1"): 120,
        ("IN_USE_ADDRESSES", "europe-west1"): 30,
        ("STATIC_ADDRESSES", "europe-west1"): 30,
        ("SSD_TOTAL_GB", "europe-west1"): 30 * (30 + 10),
    }


def iap_settings() -> Settings:
    return parse_settings({"sshAccess": "iap"}, "course-project-1", "europe-west1-b")


def test_iap_vms_add_no_address_for_they_have_no_external_one() -> None:
    added = demand(iap_settings(), 2, 4, region())
    assert ("IN_USE_ADDRESSES", "europe-west1") not in added
    assert ("STATIC_ADDRESSES", "europe-west1") not in added
    assert added[("CPUS", "europe-west1")] == 8


def test_only_what_would_pass_the_limit_is_short_and_unlisted_metrics_limit_nothing() -> None:
    added = {("CPUS", "europe-west1"): 8, ("SSD_TOTAL_GB", "europe-west1"): 60, ("N9_CPUS", "europe-west1"): 8}
    left = region(("CPUS", 24, 16), ("SSD_TOTAL_GB", 100, 50))
    short = shortfalls(added, {}, left)
    assert [(s.quota.metric, s.needed) for s in short] == [("SSD_TOTAL_GB", 60)]
    assert shortfalls({("CPUS", "europe-west1"): 8}, {}, left) == [], "exactly up to the limit is allowed"
    one_past = shortfalls({("CPUS", "europe-west1"): 9}, {}, left)
    assert [(s.quota.metric, s.needed) for s in one_past] == [("CPUS", 9)], "one past the limit is short"


def test_the_table_has_needed_in_use_and_limit_per_quota() -> None:
    added = {("CPUS_ALL_REGIONS", PROJECT_SCOPE): 120, ("CPUS", "europe-west1"): 120}
    project = {"CPUS_ALL_REGIONS": Quota("CPUS_ALL_REGIONS", PROJECT_SCOPE, 32, 4)}
    short = shortfalls(added, project, region(("CPUS", 24, 4)))
    assert quota_table(short) == (
        "QUOTA             SCOPE         NEEDED  IN USE  LIMIT\n"
        "CPUS_ALL_REGIONS  project       120     4       32\n"
        "CPUS              europe-west1  120     4       24"
    )


# Against the fake Compute API.


def test_enough_quota_reads_project_region_and_machine_type_and_passes(api: FakeComputeApi) -> None:
    check(api, 2)
    assert api.requests == [PROJECT_PATH, REGION_PATH, MACHINE_TYPES_PATH + "e2-standard-4"]


def test_a_change_that_creates_no_vm_only_reads_the_project(api: FakeComputeApi) -> None:
    api.region_quotas = [quota("CPUS", 0)]
    check(api, 0)
    assert api.requests == [PROJECT_PATH]


def test_a_class_too_big_for_the_quotas_is_refused_with_the_table_and_the_link(api: FakeComputeApi) -> None:
    api.project_quotas = [quota("CPUS_ALL_REGIONS", 32, 4)]
    api.region_quotas = [quota("CPUS", 24, 4), quota("IN_USE_ADDRESSES", 8, 1), quota("STATIC_ADDRESSES", 8, 0),
                         quota("SSD_TOTAL_GB", 500, 20), quota("DISKS_TOTAL_GB", 4096)]  # fmt: skip
    with pytest.raises(QuotaError) as raised:
        check(api, 30)
    assert raised.value.exit_code == ExitStatus.MISSING_PREREQUISITE
    assert str(raised.value) == (
        "the 30 new VMs would exceed 5 quotas of project course-project-1; nothing was created:\n"
        "  QUOTA             SCOPE         NEEDED  IN USE  LIMIT\n"
        "  CPUS_ALL_REGIONS  project       120     4       32\n"
        "  CPUS              europe-west1  120     4       24\n"
        "  IN_USE_ADDRESSES  europe-west1  30      1       8\n"
        "  STATIC_ADDRESSES  europe-west1  30      0       8\n"
        "  SSD_TOTAL_GB      europe-west1  900     20      500\n"
        "Fix: ask for more at https://console.cloud.google.com/iam-admin/quotas?project=course-project-1 (or use "
        "fewer or smaller VMs, smaller disks, or a zone in another region), then run `course-vm up` again"
    )


def test_the_machine_types_own_vcpus_count(api: FakeComputeApi) -> None:
    api.region_quotas = [quota("C3_CPUS", 8, 0), quota("CPUS", 100)]
    check(api, 1, machineType="c3-standard-8")
    with pytest.raises(QuotaError, match=r"C3_CPUS +europe-west1 +16 +0 +8"):
        check(api, 2, machineType="c3-standard-8")


def test_spot_vms_use_the_preemptible_quota_where_the_region_has_one(api: FakeComputeApi) -> None:
    api.region_quotas = [quota("CPUS", 4), quota("PREEMPTIBLE_CPUS", 16)]
    check(api, 3, spot=True)
    with pytest.raises(QuotaError, match=r"\n  CPUS +europe-west1 +12 +0 +4\n"):
        check(api, 3)


def test_an_api_not_enabled_names_the_command_that_enables_it(api: FakeComputeApi) -> None:
    api.api_enabled = False
    with pytest.raises(ServiceDisabledError) as raised:
        check(api, 0)
    assert raised.value.exit_code == ExitStatus.MISSING_PREREQUISITE
    assert "`gcloud services enable compute.googleapis.com --project course-project-1`" in str(raised.value)


def test_other_refusals_say_how_to_log_in(api: FakeComputeApi) -> None:
    api.status = 403
    with pytest.raises(CourseVmError, match=r"403.*Fix: log in with an account that may do it \(compute\.projects"):
        check(api, 1)


def test_a_machine_type_the_zone_lacks_is_named_before_anything_is_created(api: FakeComputeApi) -> None:
    with pytest.raises(CourseVmError, match="machine type n2-standard-999 does not exist in zone europe-west1-b"):
        check(api, 1, machineType="n2-standard-999")


def test_an_unreachable_api_is_one_clear_error(api: FakeComputeApi) -> None:
    with pytest.raises(UnreachableError) as raised:
        check_before_up(settings(), 1, api="http://127.0.0.1:9/compute/v1", token=lambda: TOKEN)
    assert raised.value.exit_code == ExitStatus.UNREACHABLE
    assert str(raised.value).startswith("the Compute API (http://127.0.0.1:9/compute/v1) did not answer GET ")
    assert "nothing was created. Fix: check the network" in str(raised.value)


def test_an_api_that_fails_is_unreachable_not_a_traceback(api: FakeComputeApi) -> None:
    api.status = 503
    with pytest.raises(UnreachableError, match=r"answered GET /projects/course-project-1 with HTTP 503; nothing was"):
        check(api, 1)


def test_every_fix_names_the_stack_it_was_given(api: FakeComputeApi) -> None:
    api.region_quotas = [quota("CPUS", 2, 0)]
    with pytest.raises(QuotaError, match=r"then run `course-vm up --stack fall` again$"):
        check_before_up(settings(), 1, api=api.url, token=lambda: TOKEN, stack="fall")
    api.guest_cpus = {}
    with pytest.raises(CourseVmError, match="or a zone that has it: `course-vm up --stack fall --zone "):
        check_before_up(settings(), 1, api=api.url, token=lambda: TOKEN, stack="fall")
    with pytest.raises(UnreachableError, match=r"then run `course-vm up --stack fall` again$"):
        check_before_up(settings(), 1, api="http://127.0.0.1:9/compute/v1", token=lambda: TOKEN, stack="fall")


def test_bigger_vms_that_exist_add_their_growth(api: FakeComputeApi) -> None:
    # Thirty e2-standard-4 VMs with 30 GB disks become e2-standard-8 with 50 GB: 120 vCPUs and 600 GB more.
    api.guest_cpus["e2-standard-8"] = 8
    api.region_quotas = [quota("CPUS", 200, 120), quota("SSD_TOTAL_GB", 1400, 900)]
    api.project_quotas = [quota("CPUS_ALL_REGIONS", 200, 120)]
    bigger = settings(machineType="e2-standard-8", diskSizeGb=50)
    existing = [Existing("e2-standard-4", 30)] * 30
    with pytest.raises(QuotaError) as raised:
        check_before_up(bigger, 0, api=api.url, token=lambda: TOKEN, existing=existing)
    assert str(raised.value).startswith(
        "30 bigger VMs would exceed 3 quotas of project course-project-1; nothing was created or changed:\n"
        "  QUOTA             SCOPE         NEEDED  IN USE  LIMIT\n"
        "  CPUS_ALL_REGIONS  project       120     120     200\n"
        "  CPUS              europe-west1  120     120     200\n"
        "  SSD_TOTAL_GB      europe-west1  600     900     1400\n"
    )
    # The same VMs, no bigger: nothing to compare, and no region or machine type is read.
    api.requests.clear()
    check_before_up(settings(), 0, api=api.url, token=lambda: TOKEN, existing=[Existing("e2-standard-4", 30)] * 30)
    assert [path for path in api.requests if "/regions/" in path or "/machineTypes/" in path] == []


def test_growth_and_new_vms_are_counted_together(api: FakeComputeApi) -> None:
    api.guest_cpus["e2-standard-8"] = 8
    api.region_quotas = [quota("CPUS", 24, 0)]
    # One new e2-standard-8 (8) and two existing e2-standard-4 grown to 8 (4 + 4): 16 of 24, fits.
    bigger = settings(machineType="e2-standard-8")
    check_before_up(bigger, 1, api=api.url, token=lambda: TOKEN, existing=[Existing("e2-standard-4", 30)] * 2)
    with pytest.raises(QuotaError, match="3 new VMs and 2 bigger VMs would exceed a quota"):
        check_before_up(bigger, 3, api=api.url, token=lambda: TOKEN, existing=[Existing("e2-standard-4", 30)] * 2)
