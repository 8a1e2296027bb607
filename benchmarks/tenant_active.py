"""How long until a Tenant is Active, and until a deleted one is gone, on the devbox.

Run (root, devbox up):  python3 -m benchmarks.tenant_active [--rounds 10] [--burst 20]

Side by side in one run:
- `controller`: kubectl-equivalent create of a Tenant -> status Active (Keystone project,
  user, role, namespace, RBAC, Network -> Neutron network, subnet, router + gateway +
  interface), one at a time, then `--burst` created at once; and deletion -> all gone.
- `baseline`: the same Keystone and Neutron calls made directly with openstacksdk, one
  after the other, no Kubernetes and no controller: the floor the controller pays.
Prints a Markdown table; numbers are seconds.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client as k8s
from openstack.connection import Connection
from tests.integration.controller_harness import (
    Controller,
    apply_crds,
    apply_rbac,
    devbox_controller_paused,
    service_account_kubeconfig,
    write_config,
)
from tests.integration.test_controller import create_tenant, delete_tenant, leftovers, state_of

from benchmarks.live import with_live_tenant
from benchmarks.stats import row
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.kube.client import api_client
from stackube.openstack import identity
from stackube.openstack import network as neutron
from stackube.openstack.cloud import connect_cloud


def wait(check: Callable[[], bool], timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(0.05)


def start_controller(devbox: Devbox, kube: k8s.ApiClient) -> Controller:
    apply_crds(kube)
    apply_rbac(kube)
    work = Path(tempfile.mkdtemp(prefix="stackube-bench-"))
    config_dir, secret_dir = write_config(devbox, work)
    kubeconfig = service_account_kubeconfig(kube, devbox, work / "kubeconfig")
    controller = Controller(kubeconfig, config_dir, secret_dir, work, resync_seconds=60)
    controller.start()
    controller.wait_healthy()
    return controller


def measure_controller(
    kube: k8s.ApiClient, admin: Connection, rounds: int, burst: int
) -> dict[str, list[float]]:
    def create_and_wait(name: str) -> float:
        start = time.perf_counter()
        create_tenant(kube, name)
        wait(
            lambda: (
                state_of(kube, "tenants", name) == "Active"
                and state_of(kube, "networks", name, name) == "Active"
            )
        )
        return time.perf_counter() - start

    def delete_and_wait(name: str) -> float:
        start = time.perf_counter()
        delete_tenant(kube, name)
        wait(lambda: not leftovers(kube, admin, name))
        return time.perf_counter() - start

    results = {"single": [create_and_wait(f"bench-{i}") for i in range(rounds)]}
    results["single_delete"] = [delete_and_wait(f"bench-{i}") for i in range(rounds)]
    if burst <= 0:
        return results
    names = [f"burst-{i}" for i in range(burst)]
    with ThreadPoolExecutor(max_workers=burst) as pool:
        results["burst"] = list(pool.map(create_and_wait, names))
    with ThreadPoolExecutor(max_workers=burst) as pool:
        results["burst_delete"] = list(pool.map(delete_and_wait, names))
    return results


def measure_baseline(devbox: Devbox, admin: Connection, rounds: int) -> dict[str, list[float]]:
    """The same Keystone and Neutron calls the controller makes, made directly."""
    domain = identity.find_domain_id(admin, "stackube") or ""
    member = identity.ensure_role(admin, "member")
    ext = (devbox.settings.openstack_dir / "external-network-id").read_text().strip()
    creates, deletes = [], []
    for i in range(rounds):
        name = f"base-{i}"
        start = time.perf_counter()
        project = identity.create_project(admin, name, domain)
        user = identity.create_user(admin, name, "pw-bench", domain, project.id)
        identity.grant_project_role(admin, user.id, project.id, member)
        net = neutron.create_network(admin, name, project.id, "bench")
        subnet = neutron.create_subnet(
            admin, name, net.id, project.id, cidr="10.244.0.0/16", gateway_ip="10.244.0.1"
        )
        router = neutron.create_router(admin, name, project.id, ext)
        neutron.add_router_interface(admin, router.id, subnet.id)
        creates.append(time.perf_counter() - start)
        start = time.perf_counter()
        for port_id in neutron.router_interface_ports(admin, router.id):
            neutron.remove_router_interface_port(admin, router.id, port_id)
        neutron.delete_router(admin, router.id)
        neutron.delete_subnet(admin, subnet.id)
        neutron.delete_network(admin, net.id)
        identity.delete_user(admin, user.id)
        identity.delete_project(admin, project.id)
        deletes.append(time.perf_counter() - start)
    return {"create": creates, "delete": deletes}


@with_live_tenant
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--burst", type=int, default=20)
    args = parser.parse_args()

    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    kube = api_client(devbox.settings.admin_kubeconfig)
    admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    with devbox_controller_paused(devbox):
        controller = start_controller(devbox, kube)
        try:
            ours = measure_controller(kube, admin, args.rounds, args.burst)
        finally:
            controller.stop_all()
    base = measure_baseline(devbox, admin, args.rounds)

    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("controller: one Tenant -> Active (tenant + network)", ours["single"]))
    if args.burst > 0:
        print(row(f"controller: {args.burst} Tenants at once -> each Active", ours["burst"]))
    print(row("baseline: the same Keystone + Neutron calls, direct", base["create"]))
    print(row("controller: delete one Tenant -> everything gone", ours["single_delete"]))
    if args.burst > 0:
        print(row(f"controller: delete {args.burst} at once -> each gone", ours["burst_delete"]))
    print(row("baseline: the same deletes, direct", base["delete"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
