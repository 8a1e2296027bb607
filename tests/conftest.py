"""Tiers are chosen by markers; every test must carry exactly one of them. Runs that
reach the devbox share it, and a live tenant that must come through the whole run."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: needs exactly one tier marker of {TIERS}, has {tiers}"
            )


@pytest.fixture(scope="session")
def devbox() -> Devbox:
    if os.geteuid() != 0:
        pytest.fail("tests on the devbox need root: it runs Neutron agents, netns, a node")
    box = Devbox(DevboxSettings.from_env())
    box.up()
    return box


@pytest.fixture(scope="session", autouse=True)
def live_tenant(request: pytest.FixtureRequest) -> Iterator[object]:
    """In a run that reaches the devbox: a tenant with DNS, nginx and a client on the
    devbox's node, made before the first test; the integration tier's last test but
    one (test_zx_live_tenant) checks that it still answers with the ports it had."""
    if all(item.get_closest_marker("unit") for item in request.session.items):
        yield None
        return
    # Imported here: a unit-only run needs neither the clients nor the devbox.
    from stackube.openstack.cloud import connect_cloud  # noqa: PLC0415
    from tests.e2e.kubectl import Kubectl  # noqa: PLC0415
    from tests.live_tenant import LiveTenant  # noqa: PLC0415

    box: Devbox = request.getfixturevalue("devbox")
    tenant = LiveTenant(
        Kubectl(box.settings.admin_kubeconfig),
        connect_cloud("devbox-admin", box.settings.clouds_yaml),
    )
    try:
        yield tenant.start()
    finally:
        tenant.delete()


# On a failure in a tier that reaches the devbox, the tail of Stackube's own logs goes
# into the report (CI keeps only the output: without them a failure there is a guess).
STACKUBE_LOGS = ("stackube-proxy", "stackube-controller", "stackube-cni-daemon")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    if (
        getattr(report, "failed", False)
        and call.when == "call"
        and not item.get_closest_marker("unit")
    ):
        log_dir = DevboxSettings.from_env().log_dir
        for name in STACKUBE_LOGS:
            path = log_dir / f"{name}.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-60:]
                report.sections.append((f"{name}.log (last 60 lines)", "\n".join(tail)))
    return report
