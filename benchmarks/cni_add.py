"""CNI ADD latency on the devbox: kubestack with a warm port pool, without a pool, and a
naive baseline, side by side in one run.

Run (root, devbox up):  python3 -m benchmarks.cni_add [--pods 50]

- `pool`: stackube-cni-daemon with a pool as large as the run, filled before the
  first ADD; each ADD moves a parked veth end into the pod and addresses it.
- `no pool`: the same daemon with --pool-size 0: each ADD creates a bound port, plugs
  it and waits until Neutron says ACTIVE (the agent has wired it).
- `naive`: what the original plugin did per ADD: authenticate to Keystone, create the
  port, then shell out to `ip` to make and configure the veth and attach it to the
  bridge; it does not wait for the port to be wired (so it is faster than `no pool`
  while handing out pods whose network may not work yet).
ADDs are one at a time, through the installed `kubestack` executable (its start-up
included), as containerd invokes it. Prints a Markdown table in milliseconds.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from kubernetes import client as k8s
from openstack.connection import Connection
from tests.integration.cni_harness import (
    CniNode,
    PodIdentity,
    Sandboxes,
    create_tenant,
    delete_tenant,
    network_id_of,
    node_of_its_own,
    pool_ports,
    wait_for,
)
from tests.integration.controller_harness import (
    apply_crds,
    node_cordoned,
    service_account_kubeconfig,
    write_config,
)

from benchmarks.live import with_live_tenant
from benchmarks.stats import row
from stackube.api.manifests import cni_rbac
from stackube.api.naming import POD_PORT_DEVICE_OWNER
from stackube.cni.drivers import linux_bridge_name
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.kube import apply
from stackube.kube.client import api_client
from stackube.openstack.cloud import connect_cloud


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def daemon_adds(
    node: CniNode, tenant: str, pods: int, netns: Sandboxes
) -> tuple[list[float], list[float]]:
    adds, dels = [], []
    attached = []
    for _ in range(pods):
        pod, path = PodIdentity.new(tenant), netns.new()

        def add(pod: PodIdentity = pod, path: str = path) -> None:
            run = node.invoke("ADD", pod, path)
            if run.code:
                raise RuntimeError(f"ADD failed: {run.output}")

        adds.append(timed(add))
        attached.append((pod, path))
    for pod, path in attached:
        dels.append(timed(lambda pod=pod, path=path: node.invoke("DEL", pod, path)))
    netns.remove_all()
    return adds, dels


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def naive_adds(
    devbox: Devbox, network_id: str, project_id: str, pods: int, netns: Sandboxes
) -> list[float]:
    """Keystone login + port create + ~9 `ip` commands per pod, no wait (the 2017 way)."""
    times, made = [], []
    host = socket.gethostname()
    bridge = linux_bridge_name(network_id)
    try:
        for _ in range(pods):
            ns = Path(netns.new()).name

            def add(ns: str = ns) -> None:
                conn = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
                port = conn.network.create_port(
                    network_id=network_id,
                    project_id=project_id,
                    name=f"naive-{ns}",
                    device_owner=POD_PORT_DEVICE_OWNER,
                    device_id=ns,
                    binding_host_id=host,
                )
                made.append(port.id)
                tap, peer = f"tap{port.id[:11]}", f"tmp{port.id[:11]}"
                ip = port.fixed_ips[0]["ip_address"]
                sh("ip", "link", "add", tap, "type", "veth", "peer", "name", peer)
                sh("ip", "link", "set", peer, "netns", ns)
                sh("ip", "netns", "exec", ns, "ip", "link", "set", peer, "name", "eth0")
                sh(
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    "ip",
                    "link",
                    "set",
                    "eth0",
                    "address",
                    port.mac_address,
                )
                sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/16", "dev", "eth0")
                sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
                sh("ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", "10.245.0.1")
                sh("ip", "link", "set", tap, "master", bridge)
                sh("ip", "link", "set", tap, "up")
                conn.close()

            times.append(timed(add))
    finally:
        admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
        for port_id in made:
            admin.network.delete_port(port_id, ignore_missing=True)
        netns.remove_all()
    return times


def run_paths(
    paths: set[str],
    pods: int,
    *,
    node: CniNode,
    tenant: str,
    network_id: str,
    project_id: str,
    netns: Sandboxes,
    devbox: Devbox,
    results: dict[str, list[float]],
) -> float:
    """Each chosen path in turn; returns how long the pool took to fill."""
    fill = 0.0
    if "pool" in paths:
        print(f"filling a pool of {pods} ...", file=sys.stderr)
        fill_started = time.monotonic()
        node.start(pool_size=pods, pool_eager=True)
        ready = f"pool for {network_id}: port "
        wait_for(lambda: node.log.read_text().count(ready) >= pods, 900, "the pool")
        fill = time.monotonic() - fill_started
        print(f"pool filled in {fill:.0f} s", file=sys.stderr)
        results["ADD, kubestack, warm pool"], results["DEL, kubestack"] = daemon_adds(
            node, tenant, pods, netns
        )
        node.stop()
    if "no-pool" in paths:
        print("no pool ...", file=sys.stderr)
        node.start(pool_size=0)
        results["ADD, kubestack, no pool (waits for ACTIVE)"], _ = daemon_adds(
            node, tenant, pods, netns
        )
        node.stop()
    if "naive" in paths:
        print("naive ...", file=sys.stderr)
        results["ADD, naive: Keystone login + port + `ip` x9, no wait"] = naive_adds(
            devbox, network_id, project_id, pods, netns
        )
    return fill


@with_live_tenant
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=50)
    parser.add_argument(
        "--paths", default="pool,no-pool,naive", help="which of pool,no-pool,naive to run"
    )
    args = parser.parse_args()

    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    kube = api_client(devbox.settings.admin_kubeconfig)
    # Its own cni-daemon beside the devbox's (its own node identity), which keeps serving
    # the live tenant; the node takes no new pods meanwhile.
    with node_cordoned(kube, devbox.settings.node_name):
        return measure(devbox, kube, args)


def measure(devbox: Devbox, kube: k8s.ApiClient, args: argparse.Namespace) -> int:
    paths = set(args.paths.split(","))
    admin: Connection = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    apply_crds(kube)
    apply.server_side_apply(kube, cni_rbac(), "stackube-benchmarks")
    root = Path(tempfile.mkdtemp(prefix="stackube-bench-cni-"))
    kubeconfig = service_account_kubeconfig(kube, devbox, root / "kubeconfig", "stackube-cni")
    config_dir, secret_dir = write_config(devbox, root)
    node = node_of_its_own(devbox, root, kubeconfig, config_dir, secret_dir, "cnibench")
    tenant = f"bench-cni-{secrets.token_hex(2)}"
    create_tenant(kube, tenant)
    netns = Sandboxes()
    results: dict[str, list[float]] = {}
    try:
        network_id = wait_for(lambda: network_id_of(kube, tenant), 120, "the Network")
        project_id = admin.network.get_network(network_id).project_id

        fill = run_paths(
            paths,
            args.pods,
            node=node,
            tenant=tenant,
            network_id=network_id,
            project_id=project_id,
            netns=netns,
            devbox=devbox,
            results=results,
        )
    finally:
        node.stop()
        netns.remove_all()
        node.start(pool_size=0)  # recovery deletes the pool's ports and links
        node.stop()
        delete_tenant(kube, tenant)
    leftover = [p.id for p in pool_ports(admin, network_id)]
    print("| path | pods | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, values in results.items():
        print(row(label, values, digits=0))
    if "pool" in paths:
        print(f"\npool of {args.pods} filled in {fill:.0f} s")
    print(f"pool ports left after the run: {len(leftover)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
