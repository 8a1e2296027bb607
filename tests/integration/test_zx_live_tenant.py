"""Last but one in the integration tier (before the devbox's down/up): the tenant made
before the first test still answers, with the ports it had. Every CNI daemon, proxy
and controller the tests ran beside the devbox's own left it alone."""

from __future__ import annotations

import pytest

from tests.live_tenant import LiveTenant, wait_briefly_for_answers

pytestmark = pytest.mark.integration


def test_the_live_tenant_came_through_the_run(live_tenant: LiveTenant) -> None:
    assert live_tenant.ports, "the live tenant was not made"
    assert wait_briefly_for_answers(live_tenant) == []
