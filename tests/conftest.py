"""Tiers are chosen by markers; every test must carry exactly one of them. Runs that
reach the devbox share it, and a live tenant that must come through the whole run."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any

import pytest

from stackube.devbox.box import Devbox
from stackube.devbox.commands import StepError
from stackube.devbox.settings import DevboxSettings

TIERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Checks the tier markers, and runs the unit tier first (seconds, and a unit failure
    should not wait for an hour of devbox tests); the others keep their order."""
    for item in items:
        tiers = [t for t in TIERS if item.get_closest_marker(t)]
        if len(tiers) != 1:
            raise pytest.UsageError(
                f"{item.nodeid}: needs exactly one tier marker of {TIERS}, has {tiers}"
            )
    items.sort(key=lambda item: item.get_closest_marker("unit") is None)


@pytest.fixture(scope="session")
def devbox() -> Devbox:
    if os.geteuid() != 0:
        pytest.fail("tests on the devbox need root: it runs Neutron agents, netns, a node")
    box = Devbox(DevboxSettings.from_env())
    box.up()
    return box


@pytest.fixture(scope="session")
def live_tenant(request: pytest.FixtureRequest) -> Iterator[object]:
    """In a run that reaches the devbox: a tenant with DNS, nginx and a client on the
    devbox's node, made before the first test that uses the devbox; the integration
    tier's last test but one (test_zx_live_tenant) checks that it still answers with the
    ports it had."""
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


@pytest.fixture(scope="session")
def early_tenants(request: pytest.FixtureRequest) -> None:
    """Session fixtures whose workloads must have run a while before their tests look
    (EARLY): started (in the background) before the live tenant when a collected test
    uses them, so that what they wait for (minutes of uptime) passes while other tests
    run. One that fails fails its own tests only."""
    used = {name for item in request.session.items for name in getattr(item, "fixturenames", ())}
    for name in EARLY:
        if name in used:
            request.getfixturevalue(name)


EARLY = ("probe_tenants",)


@pytest.fixture(scope="module", autouse=True)
def devbox_session(request: pytest.FixtureRequest) -> None:
    """The session's own tenants (early_tenants in the background, then live_tenant),
    made when the first module that uses the devbox starts (a unit module needs
    neither), before that module's own fixtures (this conftest is outermost: its
    autouse fixtures go first)."""
    if request.node.get_closest_marker("unit"):
        return
    request.getfixturevalue("early_tenants")
    request.getfixturevalue("live_tenant")


@pytest.fixture(scope="session")
def probe_tenants(request: pytest.FixtureRequest) -> Iterator[Future[list[Any]]]:
    """Two tenants with the default CIDR (the same for both), each with `web`
    (tests/integration/test_probes.py), started side by side in the background: the
    future's result is the list (or the error, for the tests that use it)."""
    from stackube.openstack.cloud import connect_cloud  # noqa: PLC0415
    from tests.e2e.kubectl import Kubectl, side_by_side  # noqa: PLC0415
    from tests.live_tenant import LiveTenant, probed_web  # noqa: PLC0415

    box: Devbox = request.getfixturevalue("devbox")
    kubectl = Kubectl(box.settings.admin_kubeconfig)
    admin = connect_cloud("devbox-admin", box.settings.clouds_yaml)
    made = [LiveTenant(kubectl, admin, f"probes-{secrets.token_hex(3)}") for _ in range(2)]

    def start(tenant: LiveTenant) -> None:
        tenant.start()
        kubectl.run("apply", "-f", "-", stdin=probed_web(tenant.name))

    def start_all() -> list[Any]:
        side_by_side(start, made)
        return made

    with ThreadPoolExecutor(1) as background:
        started = background.submit(start_all)
        try:
            yield started
        finally:
            wait([started])
            side_by_side(lambda tenant: tenant.delete(), made)


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
        box = Devbox(DevboxSettings.from_env())
        for name in STACKUBE_LOGS:
            try:
                tail = box.service_log(name).splitlines()[-60:]
            except StepError as exc:
                tail = [f"(no log: {exc})"]
            report.sections.append((f"{name} log (last 60 lines)", "\n".join(tail)))
    return report
