"""The controller killed right after each external step converges on restart, with no
duplicates and, after delete, no leftovers; leader election keeps one active."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

import pytest
from kubernetes import client as k8s
from openstack.connection import Connection

from stackube.controller.network import NETWORK_DELETE_STEPS, NETWORK_STEPS
from stackube.controller.tenant import TENANT_DELETE_STEPS, TENANT_STEPS
from stackube.faults import CRASH_EXIT_CODE
from tests.integration.controller_harness import (
    Controller,
)
from tests.integration.test_controller import (
    create_tenant,
    delete_tenant,
    leftovers,
    wait_active,
    wait_until,
)

pytestmark = pytest.mark.integration


def wait_crash(proc: subprocess.Popen[bytes], harness: Controller, step: str) -> None:
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"crash point {step} never reached\n{harness.logs()[-3000:]}"
        ) from None
    assert code == CRASH_EXIT_CODE, f"exited {code} instead of crashing at {step}"


def duplicates(os_admin: Connection, name: str) -> dict[str, int]:
    domain = os_admin.identity.find_domain("stackube")
    neutron = f"kube-{name}-{name}"
    counts = {
        "projects": len(list(os_admin.identity.projects(name=name, domain_id=domain.id))),
        "users": len(list(os_admin.identity.users(name=name, domain_id=domain.id))),
        "networks": len(list(os_admin.network.networks(name=neutron))),
        "subnets": len(list(os_admin.network.subnets(name=neutron))),
        "routers": len(list(os_admin.network.routers(name=neutron))),
    }
    return {kind: n for kind, n in counts.items() if n != 1}


# Crash points taken in turn by one Tenant each: every restart recovers from the crash
# right after one step and goes on to the next step, where it crashes again (a point is
# `step@tenant`: the other tenants of the run go on undisturbed). A chain holds steps
# that one pass reaches in this order; the router is made beside the network and subnet
# (two threads), so it has a Tenant of its own.
CREATE_CHAINS = {
    "tenant": TENANT_STEPS,
    "network": ("neutron-network", "neutron-subnet", "router-interface"),
    "router": ("neutron-router",),
}
# Deletion is one sequence: the Tenant asks for its namespace's deletion, tears its
# Networks down in Neutron and deletes them, then removes Keystone's objects (the
# namespace goes in Kubernetes' own time).
DELETE_CHAIN = (TENANT_DELETE_STEPS[0], *NETWORK_DELETE_STEPS, *TENANT_DELETE_STEPS[1:])


def test_the_chains_take_every_crash_point() -> None:
    create = [step for chain in CREATE_CHAINS.values() for step in chain]
    assert sorted(create) == sorted(TENANT_STEPS + NETWORK_STEPS)
    assert sorted(DELETE_CHAIN) == sorted(TENANT_DELETE_STEPS + NETWORK_DELETE_STEPS)


def crash_after_each(
    harness: Controller, name: str, steps: tuple[str, ...], first: Callable[[], None]
) -> None:
    """Runs a controller that crashes after steps[0] of `name` (doing `first` once it
    runs), then one that crashes after steps[1], ...; returns with none running."""
    for index, step in enumerate(steps):
        proc = harness.start(crash_after=f"{step}@{name}")
        if index == 0:
            first()
        wait_crash(proc, harness, step)


@pytest.mark.parametrize("chain", CREATE_CHAINS)
def test_crashes_after_create_steps_converge_without_duplicates(
    kube: k8s.ApiClient, os_admin: Connection, harness: Controller, chain: str
) -> None:
    name = f"crash-{chain}"
    try:
        crash_after_each(harness, name, CREATE_CHAINS[chain], lambda: create_tenant(kube, name))
        harness.start()
        wait_active(kube, harness, name)
        assert duplicates(os_admin, name) == {}
    finally:
        delete_tenant(kube, name)
        if not any(p.poll() is None for p in harness.procs):
            harness.start()
        wait_until(
            lambda: not leftovers(kube, os_admin, name), 90, f"{name} cleaned up", harness.logs
        )
        harness.stop_all()


def test_crashes_after_delete_steps_still_remove_everything(
    kube: k8s.ApiClient, os_admin: Connection, harness: Controller
) -> None:
    name = "crash-delete"
    harness.start()
    try:
        create_tenant(kube, name)
        wait_active(kube, harness, name)
        harness.stop_all()
        crash_after_each(harness, name, DELETE_CHAIN, lambda: delete_tenant(kube, name))
        harness.start()
        wait_until(
            lambda: not leftovers(kube, os_admin, name), 90, f"{name} cleaned up", harness.logs
        )
    finally:
        delete_tenant(kube, name)
        harness.stop_all()


def test_leader_election_keeps_one_active_and_fails_over(
    kube: k8s.ApiClient, os_admin: Connection, harness: Controller
) -> None:
    first = harness.start(leader_elect=True)
    harness.wait_healthy()
    second = harness.start(leader_elect=True)
    lease = k8s.CoordinationV1Api(kube)
    try:
        time.sleep(3)
        holder = lease.read_namespaced_lease(
            "stackube-controller", "kube-system"
        ).spec.holder_identity
        assert f"_{first.pid}_" in holder, holder
        assert second.poll() is None  # waiting, not failed
        first.kill()
        first.wait()
        # The lease runs out (15 s) and the second takes over and serves.
        wait_until(
            lambda: (
                f"_{second.pid}_"
                in lease.read_namespaced_lease(
                    "stackube-controller", "kube-system"
                ).spec.holder_identity
            ),
            40,
            "the second controller to take the lease",
            harness.logs,
        )
        create_tenant(kube, "failover")
        wait_active(kube, harness, "failover")
    finally:
        delete_tenant(kube, "failover")
        wait_until(
            lambda: not leftovers(kube, os_admin, "failover"),
            90,
            "failover cleaned up",
            harness.logs,
        )
        harness.stop_all()
