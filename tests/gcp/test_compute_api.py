"""The Compute API calls (host keys; starting, stopping, reading a VM) against its local fake
(tests/support/fake_compute_api.py)."""

from __future__ import annotations

import time

import pytest

from provisioner.access.host_keys import CONSOLE_BEGIN, CONSOLE_END, parse_host_key
from provisioner.errors import CourseVmError, UnreachableError
from provisioner.gcp.compute_api import (
    GceInstance,
    application_default_token,
    compute_api,
    gce_host_keys,
)
from provisioner.gcp.instance_power import instance_status, start_instance, stop_instance
from tests.support.fake_compute_api import (
    BASE,
    ECDSA,
    ED25519,
    INSTANCE,
    OPERATIONS_PATH,
    FakeComputeApi,
    quota_exceeded,
    zone_exhausted,
)


def learn(api: FakeComputeApi, seconds: float = 5.0, messages: list[str] | None = None) -> list[str]:
    keys = gce_host_keys(
        INSTANCE,
        time.monotonic() + seconds,
        (messages if messages is not None else []).append,
        api=api.url,
        token=lambda: "test-token",
        poll_seconds=0.05,
    )
    return [str(k) for k in keys]


def test_keys_from_guest_attributes(api: FakeComputeApi) -> None:
    api.guest_attributes = [
        {"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519},
        {"namespace": "hostkeys", "key": "ecdsa-sha2-nistp256", "value": ECDSA},
        {"namespace": "other", "key": "ssh-rsa", "value": "ignored"},
    ]
    assert learn(api) == [f"ssh-ed25519 {ED25519}", f"ecdsa-sha2-nistp256 {ECDSA}"]
    assert api.requests == [BASE + "/getGuestAttributes"]


def test_waits_until_the_guest_publishes(api: FakeComputeApi) -> None:
    api.guest_attributes = [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    api.guest_attributes_after = 3
    messages: list[str] = []
    assert learn(api, messages=messages) == [f"ssh-ed25519 {ED25519}"]
    fingerprint = parse_host_key(f"ssh-ed25519 {ED25519}").fingerprint
    assert api.requests.count(BASE + "/getGuestAttributes") == 4
    assert messages == [
        f"waiting for {INSTANCE.name}'s host keys: host keys not yet published (guest attributes or serial console)",
        f"{INSTANCE.name}'s host keys, from its guest attributes: {fingerprint}",
    ]


def test_falls_back_to_cloud_inits_block_on_the_serial_console(api: FakeComputeApi) -> None:
    api.console = (
        "[   12.3] cloud-init[812]: Cloud-init v. 24.1 running 'modules:final'\n"
        f"{CONSOLE_BEGIN}\n"
        f"ssh-ed25519 {ED25519} root@course-vm\n"
        f"ecdsa-sha2-nistp256 {ECDSA} root@course-vm\n"
        f"{CONSOLE_END}\n"
        "[   13.0] cloud-init[812]: finished\n"
    )
    messages: list[str] = []
    assert learn(api, messages=messages) == [f"ssh-ed25519 {ED25519}", f"ecdsa-sha2-nistp256 {ECDSA}"]
    assert messages[-1].startswith(f"{INSTANCE.name}'s host keys, from its serial console: SHA256:")


def test_nothing_published_before_the_deadline(api: FakeComputeApi) -> None:
    api.console = "booting...\n"
    with pytest.raises(UnreachableError, match="host keys not yet published") as raised:
        learn(api, seconds=0.5)
    assert raised.value.exit_code == 3


def test_permission_denied_says_how_to_log_in(api: FakeComputeApi) -> None:
    api.status = 403
    with pytest.raises(CourseVmError, match="gcloud auth application-default login") as raised:
        learn(api)
    assert raised.value.exit_code == 2
    assert "403" in str(raised.value)


def test_missing_instance_is_bad_input(api: FakeComputeApi) -> None:
    api.instance_exists = False
    with pytest.raises(CourseVmError, match="instance course-vm-vm-1a2b not found") as raised:
        learn(api)
    assert raised.value.exit_code == 2


def test_console_block_with_a_forged_key_is_refused(api: FakeComputeApi) -> None:
    api.console = f"{CONSOLE_BEGIN}\nssh-ed25519 AAAA!notbase64\n{CONSOLE_END}\n"
    with pytest.raises(UnreachableError):
        learn(api, seconds=0.3)


def test_gcloud_endpoint_override_and_token_are_honoured(api: FakeComputeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in api.gcloud_environment().items():
        monkeypatch.setenv(name, value)
    assert compute_api() == api.url
    api.guest_attributes = [{"namespace": "hostkeys", "key": "ssh-ed25519", "value": ED25519}]
    keys = gce_host_keys(INSTANCE, time.monotonic() + 5, poll_seconds=0.05)
    assert [str(k) for k in keys] == [f"ssh-ed25519 {ED25519}"]


@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("http://compute.example.org/", "https://compute.example.org/"),
        ("http://10.0.0.5:8080", "https://10.0.0.5:8080/"),
        ("http://169.254.169.254/", "https://169.254.169.254/"),
        ("http://127.0.0.1.nip.io", "https://127.0.0.1.nip.io/"),
        ("ftp://compute.example.org", "https://compute.example.org/"),
        ("file:///etc/passwd", "https://HOST/"),
        ("compute.example.org", "https://HOST/"),
    ],
)
def test_an_endpoint_override_that_would_send_the_token_in_clear_is_refused(
    override: str, fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
    tokens: list[str] = []

    def token() -> str:
        tokens.append("asked")
        return "t"

    with pytest.raises(CourseVmError) as raised:
        gce_host_keys(INSTANCE, time.monotonic() + 1, token=token, poll_seconds=0.05)
    assert str(raised.value) == (
        f"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got {override!r}, but the Compute API calls carry your Google "
        "access token, so the endpoint must be https:// (plain http:// only to this machine: 127.0.0.0/8, ::1, "
        f"localhost). Fix: export CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE={fix}, or unset it"
    )
    assert tokens == []  # refused before a token is even fetched


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "[::1]", "localhost"])
def test_a_plain_http_endpoint_on_this_machine_is_allowed(host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", f"http://{host}:8080/")
    assert compute_api() == f"http://{host}:8080/compute/v1"


@pytest.mark.parametrize(
    ("override", "base"),
    [
        ("https://compute.example.org/", "https://compute.example.org/compute/v1"),
        ("https://compute.example.org/compute/v1/", "https://compute.example.org/compute/v1"),
        ("https://proxy.example.org/google/compute/", "https://proxy.example.org/google/compute"),
        ("https://proxy.example.org/compute/beta-mirror/", "https://proxy.example.org/compute/beta-mirror"),
    ],
)
def test_an_override_is_the_apis_base_url_as_gcloud_reads_it(
    override: str, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gcloud (googlecloudsdk/api_lib/util/apis_internal.py, _BuildEndpointOverride) adds the API's own path
    `compute/v1/` to a host alone and takes any other path as the base itself: course-vm must call the same URLs."""
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
    assert compute_api() == base


@pytest.mark.parametrize(
    ("override", "fix"),
    [
        ("https://compute.example.org", "https://compute.example.org/"),
        ("https://compute.example.org/compute/v1", "https://compute.example.org/compute/v1/"),
    ],
)
def test_an_override_gcloud_refuses_is_refused_with_the_fix(
    override: str, fix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
    with pytest.raises(CourseVmError) as raised:
        compute_api()
    assert str(raised.value) == (
        f"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got {override!r}, but gcloud reads it only as a base URL ending "
        "in '/' (the API at https://HOST/compute/v1/, or https://HOST/ for that path). "
        f"Fix: export CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE={fix}, or unset it"
    )
    assert raised.value.exit_code == 2


def test_an_override_with_a_query_is_refused_with_the_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    override = "http://127.0.0.1:8080/compute/v1/?alt=json"
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
    with pytest.raises(CourseVmError) as raised:
        compute_api()
    assert str(raised.value) == (
        f"CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE: got {override!r}, but the API's base URL has no `?` or `#` part. "
        "Fix: export CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE=http://127.0.0.1:8080/compute/v1/, or unset it"
    )


@pytest.mark.parametrize("override", ["https://me:s3cret-pw@compute.example.org/", "http://s3cret-pw@127.0.0.1:80/"])
def test_an_override_with_url_credentials_is_refused_without_showing_them(
    override: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
    with pytest.raises(CourseVmError) as raised:
        compute_api()
    assert "holds a user name or password before its host (not shown)" in str(raised.value)
    assert "s3cret-pw" not in str(raised.value)
    assert raised.value.exit_code == 2


def test_an_override_is_the_base_gcloud_adds_projects_to(monkeypatch: pytest.MonkeyPatch) -> None:
    """gcloud appends `projects/...` to the value as it is, so only the one trailing '/' goes."""
    for override, base in [
        ("https://h.example.org/", "https://h.example.org/compute/v1"),
        ("https://h.example.org/compute/v1/", "https://h.example.org/compute/v1"),
        ("https://h.example.org/custom//", "https://h.example.org/custom/"),
        ("http://[::1]:8080/compute/v1/", "http://[::1]:8080/compute/v1"),
    ]:
        monkeypatch.setenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", override)
        assert compute_api() == base, override


def test_default_endpoint_is_googles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", raising=False)
    assert compute_api() == "https://compute.googleapis.com/compute/v1"


def test_start_starts_a_stopped_instance_and_waits_until_it_runs(api: FakeComputeApi) -> None:
    said: list[str] = []
    start_instance(
        INSTANCE, time.monotonic() + 10, said.append, api=api.url, token=lambda: "test-token", poll_seconds=0
    )
    [operation] = api.operations
    assert api.requests == [f"POST {BASE}/start", OPERATIONS_PATH + operation, BASE, OPERATIONS_PATH + operation, BASE]
    assert said == [f"{INSTANCE.name}: STAGING"]
    assert api.instance_status == "RUNNING"


def test_start_of_a_missing_instance_says_how_to_create_it(api: FakeComputeApi) -> None:
    api.instance_exists = False
    with pytest.raises(CourseVmError, match="Fix: `course-vm up` creates it again"):
        start_instance(INSTANCE, time.monotonic() + 10, api=api.url, token=lambda: "test-token")


def test_start_without_permission_names_it(api: FakeComputeApi) -> None:
    api.status = 403
    with pytest.raises(CourseVmError, match=r"refused POST .*/start \(403: .*compute.instances.start"):
        start_instance(INSTANCE, time.monotonic() + 10, api=api.url, token=lambda: "test-token")


def change(verb: str, api: FakeComputeApi, instance: GceInstance = INSTANCE, seconds: float = 10) -> list[str]:
    """Start or stop INSTANCE against the fake; the progress lines it printed."""
    said: list[str] = []
    act = start_instance if verb == "start" else stop_instance
    act(instance, time.monotonic() + seconds, said.append, api=api.url, token=lambda: "test-token", poll_seconds=0)
    return said


def test_stop_stops_a_running_instance_and_waits_until_it_is_terminated(api: FakeComputeApi) -> None:
    api.instance_status = "RUNNING"
    assert change("stop", api) == [f"{INSTANCE.name}: STOPPING"]
    [operation] = api.operations
    assert api.requests == [f"POST {BASE}/stop", OPERATIONS_PATH + operation, BASE, OPERATIONS_PATH + operation, BASE]
    assert api.instance_status == "TERMINATED"


def test_stop_of_a_stopped_instance_is_fine(api: FakeComputeApi) -> None:
    assert change("stop", api) == []
    [operation] = api.operations
    assert api.requests == [f"POST {BASE}/stop", OPERATIONS_PATH + operation, BASE]
    assert api.instance_status == "TERMINATED"


def test_stop_of_a_missing_instance_says_how_to_create_it(api: FakeComputeApi) -> None:
    api.instance_exists = False
    with pytest.raises(CourseVmError, match=r"not found .* Fix: `course-vm up` creates it again"):
        change("stop", api)


def test_stop_without_permission_names_it(api: FakeComputeApi) -> None:
    api.status = 403
    with pytest.raises(CourseVmError, match=r"refused POST .*/stop \(403: .*compute.instances.stop"):
        change("stop", api)


@pytest.mark.parametrize("answer", [403, 404])
def test_an_operation_that_cannot_be_read_leaves_the_instance_to_say_how_the_start_went(
    api: FakeComputeApi, answer: int
) -> None:
    """403: a custom role with instances.start and .get but not zoneOperations.get; 404: the operation is gone
    (GCE keeps them a while only). The instance's status says how the start went, as before operations were
    read: no false refusal of a start GCE accepted."""
    api.operation_reads = answer
    assert change("start", api) == [f"{INSTANCE.name}: STAGING"]
    assert api.instance_status == "RUNNING"
    assert sum("/operations/" in request for request in api.requests) == 1, "not read again once unreadable"


def test_a_start_gce_cannot_do_for_want_of_room_says_so_at_once(api: FakeComputeApi) -> None:
    api.operation_error = zone_exhausted()
    with pytest.raises(UnreachableError) as raised:
        change("start", api, seconds=60)
    assert str(raised.value) == (
        f"GCE could not start instance {INSTANCE.name} (ZONE_RESOURCE_POOL_EXHAUSTED: The zone "
        "'projects/course-project-1/zones/europe-west1-b' does not have enough resources available to fulfill the "
        "request. Try a different zone, or try again later). Fix: zone europe-west1-b has no room for this machine "
        "type now; run `course-vm start` again in a few minutes"
    )
    assert raised.value.exit_code == 3
    assert len(api.requests) == 2, "the operation's error is read once, not waited on until the deadline"


def test_a_start_over_the_quota_names_it_and_where_to_ask_for_more(api: FakeComputeApi) -> None:
    api.operation_error = quota_exceeded()
    with pytest.raises(CourseVmError) as raised:
        start_instance(INSTANCE, time.monotonic() + 60, api=api.url, token=lambda: "test-token", stack="lab")
    assert str(raised.value) == (
        f"GCE could not start instance {INSTANCE.name} (QUOTA_EXCEEDED: Quota 'CPUS' exceeded. Limit: 24.0 in region "
        "europe-west1). Fix: stop another VM of the project, or ask for more at "
        "https://console.cloud.google.com/iam-admin/quotas?project=course-project-1, then run "
        "`course-vm start --stack lab` again"
    )
    assert raised.value.exit_code == 6
    assert api.instance_status == "TERMINATED"


def test_a_stop_gce_refuses_says_why_at_once_with_the_status_fix(api: FakeComputeApi) -> None:
    """An error other than room or quota: GCE's code and words, and where to look, without waiting out the
    deadline."""
    api.instance_status = "RUNNING"
    not_ready = f"The resource 'projects/course-project-1/zones/europe-west1-b/instances/{INSTANCE.name}' is not ready"
    api.operation_error = {"errors": [{"code": "RESOURCE_NOT_READY", "message": not_ready}]}
    with pytest.raises(CourseVmError) as raised:
        change("stop", api, seconds=60)
    assert str(raised.value) == (
        f"GCE could not stop instance {INSTANCE.name} (RESOURCE_NOT_READY: {not_ready}). "
        "Fix: run `course-vm status` to see the VM's state, then try again"
    )
    assert raised.value.exit_code == 5, "GCE failed a change: not bad input"
    assert len(api.requests) == 2, "the operation's error is read once, not waited on until the deadline"


@pytest.mark.parametrize("name", ["../../../instances/other/stop", "operation?x=1", "Operation-1", "o" * 64, 7, None])
def test_an_operation_name_gce_would_not_give_is_never_put_in_a_url(name: object) -> None:
    """The operation is read back from the API: only a name GCE would give is read again, else the instance."""
    from provisioner.gcp import instance_power

    assert instance_power._operation_path(INSTANCE, {"name": name}) is None
    path = instance_power._operation_path(INSTANCE, {"name": "operation-1-a"})
    assert path == "/projects/course-project-1/zones/europe-west1-b/operations/operation-1-a"


def test_an_instance_that_never_gets_there_is_unreachable_by_the_deadline(api: FakeComputeApi) -> None:
    other = GceInstance(INSTANCE.project, INSTANCE.zone, "stuck")
    api.statuses["stuck"] = "SUSPENDING"  # neither start nor stop moves it in the fake
    with pytest.raises(UnreachableError, match=r"stuck is still SUSPENDING\. Fix: try again later") as raised:
        change("stop", api, other, seconds=0.3)
    assert raised.value.exit_code == 3


@pytest.mark.parametrize(("verb", "code"), [("start", 503), ("stop", 500), ("stop", 429)])
def test_a_compute_api_that_fails_is_unreachable_not_a_bug(api: FakeComputeApi, verb: str, code: int) -> None:
    api.failing[INSTANCE.name] = code
    with pytest.raises(
        UnreachableError, match=rf"the Compute API could not {verb} instance {INSTANCE.name} \({code}: .*\)\. Fix: "
    ):
        change(verb, api)


def test_a_request_the_api_refuses_is_bad_input_with_its_message(api: FakeComputeApi) -> None:
    api.failing[INSTANCE.name] = 400
    with pytest.raises(
        CourseVmError, match=r"could not stop instance .* \(400: Invalid value for field 'resource'\)\. Fix"
    ) as raised:
        change("stop", api)
    assert raised.value.exit_code == 2


def test_an_unreachable_compute_api_is_unreachable_not_a_bug() -> None:
    closed = "http://127.0.0.1:9/compute/v1"  # the discard port: nothing listens there
    with pytest.raises(UnreachableError, match="the Compute API is unreachable from here"):
        stop_instance(INSTANCE, time.monotonic() + 5, api=closed, token=lambda: "test-token")


def test_each_instance_has_its_own_status(api: FakeComputeApi) -> None:
    api.instance_status = "RUNNING"
    api.statuses.update(alice="TERMINATED", bob="SUSPENDED")
    instances = [GceInstance(INSTANCE.project, INSTANCE.zone, name) for name in (INSTANCE.name, "alice", "bob")]
    read = {each.name: instance_status(each, api=api.url, token=lambda: "test-token") for each in instances}
    assert read == {INSTANCE.name: "RUNNING", "alice": "TERMINATED", "bob": "SUSPENDED"}
    assert all(not request.startswith("POST") for request in api.requests)


def test_the_status_of_a_missing_instance_says_so(api: FakeComputeApi) -> None:
    with pytest.raises(CourseVmError, match="instance gone not found in course-project-1/europe-west1-b"):
        instance_status(GceInstance(INSTANCE.project, INSTANCE.zone, "gone"), api=api.url, token=lambda: "test-token")


@pytest.mark.parametrize("token", ["ya29.a0Af-token_value\r", "ya29.one two", "ya29.x\x1b[2J", "ya29.é"])
def test_a_token_with_a_character_no_token_has_is_refused_without_being_shown(
    token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A token read from a file saved on Windows ends in \r: http.client would raise a ValueError that
    # carries the whole Authorization header.
    monkeypatch.setenv("CLOUDSDK_AUTH_ACCESS_TOKEN", token)
    with pytest.raises(CourseVmError) as raised:
        application_default_token()
    message = str(raised.value)
    assert message.startswith("CLOUDSDK_AUTH_ACCESS_TOKEN holds a character no access token has"), message
    assert "ya29" not in message and "Fix: export CLOUDSDK_AUTH_ACCESS_TOKEN=" in message


def test_a_well_formed_token_is_used_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDSDK_AUTH_ACCESS_TOKEN", "ya29.a0AfB_byC-12.3~x+y/z==")
    assert application_default_token() == "ya29.a0AfB_byC-12.3~x+y/z=="
