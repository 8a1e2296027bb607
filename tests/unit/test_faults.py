"""Which crash point STACKUBE_CRASH_AFTER names (stackube.faults)."""

from __future__ import annotations

import pytest

from stackube import faults

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("setting", "step", "name", "crashes"),
    [
        (None, "dns", "a", False),
        ("", "dns", "a", False),
        ("dns", "dns", "a", True),
        ("dns", "dns", None, True),
        ("dns", "rbac", "a", False),
        ("dns@a", "dns", "a", True),
        ("dns@a", "dns", "b", False),
        ("dns@a", "dns", None, False),
        ("dns@a", "rbac", "a", False),
    ],
)
def test_a_setting_names_a_step_and_optionally_an_object(
    setting: str | None, step: str, name: str | None, crashes: bool
) -> None:
    assert faults.matches(setting, step, name) is crashes


def test_the_object_is_set_inside_acting_on_only() -> None:
    seen = []
    with faults.acting_on("a"):
        seen.append(faults.matches("dns@a", "dns", faults._OBJECT.get()))
    seen.append(faults.matches("dns@a", "dns", faults._OBJECT.get()))
    assert seen == [True, False]
