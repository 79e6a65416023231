"""forwardPorts: each port or LOCAL:REMOTE read, every bad entry one problem with its fix, the defaults."""

from __future__ import annotations

import pytest

from provisioner.errors import SettingsError
from provisioner.recipe.ports import DEFAULT_FORWARDS, MAX_FORWARDS, PortForward, parse_forward
from provisioner.recipe.problems import records_of, set_flag_words
from provisioner.recipe.settings import parse_settings
from tests.support.settings_problems import GOOD, PROJECT, ZONE, problems

BAD = "it is not a port from 1024 to 65535, or LOCAL:REMOTE of two such ports (5001:5000)"


@pytest.mark.parametrize(
    ("text", "forward"),
    [
        ("8888", PortForward(8888, 8888)),
        (5000, PortForward(5000, 5000)),
        ("5001:5000", PortForward(5001, 5000)),
        ("1024", PortForward(1024, 1024)),
        ("65535:1024", PortForward(65535, 1024)),
        ("80", None),
        ("5000:22", None),
        ("70000", None),
        ("5000:", None),
        (":5000", None),
        ("localhost:5000", None),
        ("5000\nHost *", None),
        (True, None),
        (None, None),
    ],
)
def test_a_forward_is_a_port_or_local_colon_remote(text: object, forward: PortForward | None) -> None:
    assert parse_forward(text) == forward
    if forward is not None:
        assert parse_forward(forward.text) == forward


def test_jupyter_and_mlflow_by_default_and_any_list_the_course_needs() -> None:
    assert parse_settings(GOOD, PROJECT, ZONE).forward_ports == DEFAULT_FORWARDS == (
        PortForward(8888, 8888), PortForward(5000, 5000),
    )  # fmt: skip
    chosen = parse_settings({**GOOD, "forwardPorts": '["8888", "5001:5000", 3000]'}, PROJECT, ZONE)
    assert [forward.text for forward in chosen.forward_ports] == ["8888", "5001:5000", "3000"]
    assert parse_settings({**GOOD, "forwardPorts": "[]"}, PROJECT, ZONE).forward_ports == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("8888", ["forwardPorts: got '8888', but it must be a list of ports like 8888 or 5001:5000. "
                  "Fix: pulumi config set --path 'forwardPorts[0]' 8888"]),
        (["8888", "80"], [
            f"forwardPorts[1]: got '80', but {BAD}. Fix: pulumi config set --path 'forwardPorts[1]' 8888"
        ]),
        (["5000", "5000:8888"], [
            "forwardPorts[1]: got '5000:8888', but the laptop's port 5000 is forwarded already: each of its ports can "
            "listen once. Fix: pulumi config set --path 'forwardPorts[1]' 5001:8888"
        ]),
        ([str(port) for port in range(2000, 2000 + MAX_FORWARDS + 1)], [
            "forwardPorts: got '17 ports', but at most 16 ports are forwarded (each is a listening socket on the "
            "laptop). Fix: keep the 16 the course needs"
        ]),
    ],
)  # fmt: skip
def test_every_bad_entry_is_one_problem_with_its_fix(value: object, expected: list[str]) -> None:
    assert problems({"forwardPorts": value}) == expected


def test_local_up_words_the_fix_with_set() -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings({"forwardPorts": ["x"]}, None, None, for_gcp=False)
    [record] = records_of(raised.value)
    assert record.in_words(set_flag_words) == (
        f"forwardPorts[0]: got 'x', but {BAD}. Fix: --set 'forwardPorts=[\"8888\"]'"
    )
