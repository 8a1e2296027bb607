"""How long until a Tenant is Active, and until a deleted one is gone, on the devbox.

Run (root, devbox up):
    python3 -m benchmarks.tenant_active [--rounds 10] [--burst 20] [--total 100]

Side by side in one run:
- `controller`: kubectl-equivalent create of a Tenant -> status Active (Keystone project,
  user, role, namespace, RBAC, Network -> Neutron network, subnet, router + gateway +
  interface), one at a time, then `--total` in bursts of `--burst` created at once (a
  burst once the previous one is Active); and deletion -> all gone, the same way.
- `baseline`: the same Keystone and Neutron calls made directly with openstacksdk, one
  after the other, and the same wait for the router's interface to be ACTIVE (plumbed
  by Neutron's agents), no Kubernetes and no controller: the floor the controller pays.
A deletion is timed twice: until the Tenant, its Keystone user and project and its
Neutron network, subnet and router are gone (its namespace Terminating), and until the
namespace is gone too (Kubernetes' namespace controller looks at a deleted namespace
5 s after the request at the earliest). Then, from the controller's metrics, where its
passes spent their time: each step's count, mean and total.
Prints Markdown tables; numbers are seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from openstack.connection import Connection
from openstack.exceptions import HttpException
from prometheus_client.parser import text_string_to_metric_families
from tests.integration.controller_harness import (
    Controller,
    apply_crds,
    apply_rbac,
    devbox_controller_paused,
    service_account_kubeconfig,
    write_config,
)
from tests.integration.test_controller import (
    create_tenant,
    delete_tenant,
    leftovers,
    read,
    state_of,
)

from benchmarks.live import with_live_tenant
from benchmarks.stats import row
from stackube.controller.network import gateway_problem
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.kube.client import api_client
from stackube.openstack import identity
from stackube.openstack import network as neutron
from stackube.openstack.cloud import connect_cloud

# How often a waiting thread looks. Kubernetes is asked often (a GET or two); Keystone
# and Neutron (five calls), which 20 threads polling fast would flood (Neutron serves
# one request at a time here), only once the Tenant is gone from Kubernetes, which its
# finalizer allows only after removing them. The figures' error is up to one interval.
KUBE_POLL_SECONDS = 0.1
OPENSTACK_POLL_SECONDS = 0.5


def wait(check: Callable[[], bool], interval: float, timeout: float = 900) -> None:
    """Until `check()` is true; a 5xx from OpenStack while looking is "not yet" (it
    happens under a burst: Neutron's database pool runs dry)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except HttpException as exc:
            if (exc.status_code or 500) < 500:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(interval)


def settle(what: str, below: float = 1.0, most_seconds: float = 300) -> None:
    """Wait until the machine's 1-minute load average is below `below` (at most
    `most_seconds`): Neutron's agents finish a burst's routers minutes after its API
    calls, and a phase measured meanwhile measures that tail. Prints the wait."""
    started = time.monotonic()
    while time.monotonic() - started < most_seconds:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        if load < below:
            break
        time.sleep(5)
    waited = time.monotonic() - started
    print(f"settled before {what}: {waited:.0f} s (load {load:.2f})", file=sys.stderr)


def start_controller(devbox: Devbox, kube: k8s.ApiClient) -> Controller:
    apply_crds(kube)
    apply_rbac(kube)
    work = Path(tempfile.mkdtemp(prefix="stackube-bench-"))
    config_dir, secret_dir = write_config(devbox, work)
    kubeconfig = service_account_kubeconfig(kube, devbox, work / "kubeconfig")
    controller = Controller(
        kubeconfig, config_dir, secret_dir, work, resync_seconds=60, extra_args=("--timeline",)
    )
    controller.start()
    controller.wait_healthy()
    return controller


def namespace_gone(kube: k8s.ApiClient, name: str) -> bool:
    try:
        k8s.CoreV1Api(kube).read_namespace(name, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def namespace_terminating_or_gone(kube: k8s.ApiClient, name: str) -> bool:
    try:
        namespace = k8s.CoreV1Api(kube).read_namespace(name, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return namespace.metadata is not None and namespace.metadata.deletion_timestamp is not None


def measure_controller(
    kube: k8s.ApiClient, admin: Connection, rounds: int, burst: int, total: int
) -> dict[str, list[float]]:
    """Seconds per Tenant: `single` (one at a time, `rounds` of them), `burst` (`total`
    Tenants created `burst` at a time, each burst once the previous one is Active), and
    their deletions (`single_delete`, `burst_delete`, the same bursts), each also until
    the namespace is gone (`..._namespace`)."""
    results: dict[str, list[float]] = {}

    def create_and_wait(name: str) -> float:
        start = time.perf_counter()
        create_tenant(kube, name)
        wait(
            lambda: (
                state_of(kube, "tenants", name) == "Active"
                and state_of(kube, "networks", name, name) == "Active"
            ),
            KUBE_POLL_SECONDS,
        )
        return time.perf_counter() - start

    def delete_and_wait(name: str) -> tuple[float, float]:
        """(seconds until all but the namespace is gone, until the namespace is too)"""
        start = time.perf_counter()
        delete_tenant(kube, name)
        wait(lambda: read(kube, "tenants", name) is None, KUBE_POLL_SECONDS)
        wait(
            lambda: (
                not [f for f in leftovers(kube, admin, name) if not f.startswith("namespace ")]
                and namespace_terminating_or_gone(kube, name)
            ),
            OPENSTACK_POLL_SECONDS,
        )
        tenant_gone = time.perf_counter() - start
        wait(lambda: namespace_gone(kube, name), KUBE_POLL_SECONDS)
        wait(lambda: not leftovers(kube, admin, name), OPENSTACK_POLL_SECONDS)
        return tenant_gone, time.perf_counter() - start

    def record(key: str, pairs: list[tuple[float, float]]) -> None:
        results[key] = [first for first, _ in pairs]
        results[f"{key}_namespace"] = [second for _, second in pairs]

    settle("one at a time")
    results["single"] = [create_and_wait(f"bench-{i}") for i in range(rounds)]
    record("single_delete", [delete_and_wait(f"bench-{i}") for i in range(rounds)])
    if burst <= 0:
        return results
    names = [f"burst-{i}" for i in range(max(total, burst))]
    bursts = [names[i : i + burst] for i in range(0, len(names), burst)]
    settle("bursts")
    results["burst"] = []
    deleted: list[tuple[float, float]] = []
    with ThreadPoolExecutor(max_workers=burst) as pool:
        for group in bursts:
            results["burst"] += pool.map(create_and_wait, group)
        for group in bursts:
            deleted += pool.map(delete_and_wait, group)
    record("burst_delete", deleted)
    return results


def process_usage(pid: int) -> str:
    """CPU seconds (user + system) and peak resident memory of a running process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime (proc(5))
    status = Path(f"/proc/{pid}/status").read_text()
    peak = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    peak_kib = int(peak.split()[1])
    return f"controller: {cpu:.1f} s of CPU, {peak_kib / 1024:.0f} MiB peak resident memory"


def step_table(metrics_text: str) -> list[str]:
    """Markdown rows from the controller's stackube_step_duration_seconds: per kind and
    step, how many times it ran, its mean and its total seconds (largest total first)."""
    sums: dict[tuple[str, str], float] = {}
    counts: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "stackube_step_duration_seconds":
            continue
        for sample in family.samples:
            key = (sample.labels.get("kind", ""), sample.labels.get("step", ""))
            if sample.name.endswith("_sum"):
                sums[key] = sample.value
            elif sample.name.endswith("_count"):
                counts[key] = sample.value
    rows = ["| kind | step | runs | mean s | total s |", "|---|---|---|---|---|"]
    for key in sorted(sums, key=lambda k: -sums[k]):
        runs = counts.get(key, 0)
        mean = sums[key] / runs if runs else 0.0
        rows.append(f"| {key[0]} | {key[1]} | {runs:.0f} | {mean:.3f} | {sums[key]:.1f} |")
    return rows


def plumbed(admin: Connection, router_id: str, network_id: str, subnet_id: str) -> bool:
    """The router's interface on the subnet is ACTIVE (the controller's own check)."""
    ports = neutron.router_ports(admin, router_id, network_id)
    return gateway_problem(ports, router_id, subnet_id) is None


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
        # As the controller, until the agents have plumbed the interface (ACTIVE).
        wait(partial(plumbed, admin, router.id, net.id, subnet.id), 0.25)
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
    parser.add_argument(
        "--total", type=int, default=0, help="Tenants made in bursts (default: one burst)"
    )
    args = parser.parse_args()
    total = max(args.total, args.burst)

    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    kube = api_client(devbox.settings.admin_kubeconfig)
    admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    with devbox_controller_paused(devbox):
        controller = start_controller(devbox, kube)
        try:
            ours = measure_controller(kube, admin, args.rounds, args.burst, total)
            steps = step_table(controller.metrics())
            usage = process_usage(controller.procs[-1].pid)
            print(f"controller log (every pass's steps): {controller.log}")
        finally:
            controller.stop_all()
    settle("the baseline")
    base = measure_baseline(devbox, admin, args.rounds)

    gone = "Tenant, Keystone and Neutron gone"
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("controller: one Tenant -> Active (tenant + network)", ours["single"]))
    if args.burst > 0:
        made = f"{total} Tenants, {args.burst} at once"
        print(row(f"controller: {made} -> each Active", ours["burst"]))
    print(row("baseline: the same Keystone + Neutron calls, direct", base["create"]))
    print(row(f"controller: delete one Tenant -> {gone}", ours["single_delete"]))
    print(row("controller: ... and its namespace gone", ours["single_delete_namespace"]))
    if args.burst > 0:
        print(row(f"controller: delete {made} -> each: {gone}", ours["burst_delete"]))
        print(row("controller: ... and its namespace gone", ours["burst_delete_namespace"]))
    print(row("baseline: the same deletes, direct", base["delete"]))
    print()
    print(usage)
    print()
    print("\n".join(steps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
