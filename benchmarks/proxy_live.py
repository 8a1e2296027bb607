"""From an EndpointSlice update in the apiserver to its rule being in the tenant's
router, with the real `stackube proxy` program watching the devbox's apiserver.

Run (root, devbox up):  python3 -m benchmarks.proxy_live [--sizes 1000,10000] [--changes 10]

One tenant (a real Neutron router); its namespace gets Services (no selector) and
EndpointSlices up to each size; then `--changes` times one EndpointSlice gets a new
endpoint. Latency = the proxy's log timestamp of the sync that applied it (written
after iptables-restore returned) minus the wall-clock time the update was sent.
Prints a Markdown table (milliseconds).
"""

from __future__ import annotations

import argparse
import datetime
import re
import secrets
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kubernetes import client as k8s
from tests.integration.cni_harness import create_tenant, delete_tenant, router_id_of, wait_for
from tests.integration.controller_harness import (
    devbox_services_paused,
    node_cordoned,
    service_account_kubeconfig,
)
from tests.integration.test_proxy import Proxy, make_service, set_endpoints

from benchmarks.live import with_live_tenant
from stackube.api.manifests import proxy_rbac
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.kube import apply
from stackube.kube.client import api_client

PORTS = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]
SYNCED = re.compile(r"^(\S+ \S+) INFO stackube.proxy: synced (\S+) ")


def synced_at(log: Path, namespace: str, after: float) -> float | None:
    """Wall-clock time of the first sync of `namespace` logged after `after`."""
    for line in log.read_text().splitlines():
        match = SYNCED.match(line)
        if not match or match.group(2) != namespace:
            continue
        stamp = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if stamp >= after:
            return stamp
    return None


def populate(kube: k8s.ApiClient, namespace: str, start: int, stop: int) -> None:
    def one(index: int) -> None:
        make_service(kube, namespace, f"svc-{index}", PORTS)
        set_endpoints(
            kube, namespace, f"svc-{index}", [f"10.244.{index % 200 + 10}.5"], SLICE_PORTS
        )

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(start, stop)))


@with_live_tenant
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--changes", type=int, default=10)
    args = parser.parse_args()
    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    kube = api_client(devbox.settings.admin_kubeconfig)
    # This benchmark runs its own proxy: the devbox's pauses, its node takes no pods.
    with (
        devbox_services_paused(devbox, "stackube-proxy"),
        node_cordoned(kube, devbox.settings.node_name),
    ):
        return measure(devbox, kube, args)


def measure(devbox: Devbox, kube: k8s.ApiClient, args: argparse.Namespace) -> int:
    apply.server_side_apply(kube, proxy_rbac(), "stackube-benchmarks")
    root = Path(tempfile.mkdtemp(prefix="stackube-bench-proxy-"))
    proxy = Proxy(
        service_account_kubeconfig(kube, devbox, root / "kubeconfig", "stackube-proxy"), root
    )
    tenant = f"bench-proxy-{secrets.token_hex(2)}"
    create_tenant(kube, tenant)
    rows = []
    try:
        wait_for(lambda: router_id_of(kube, tenant), 120, "the tenant's router")
        proxy.start()
        made = 0
        for round_no, size in enumerate(int(s) for s in args.sizes.split(",")):
            started = time.monotonic()
            populate(kube, tenant, made, size)
            made = size
            print(
                f"{size} services in the apiserver after {time.monotonic() - started:.0f} s",
                file=sys.stderr,
            )
            time.sleep(5)  # let the proxy catch up with the creations
            latencies = []
            for change in range(args.changes):
                index = (change * 97) % size
                sent = time.time()
                # New in every round: an unchanged endpoint would not need a sync at all.
                fresh = f"10.245.{change}.{round_no + 1}"
                set_endpoints(kube, tenant, f"svc-{index}", [fresh], SLICE_PORTS)
                stamp = wait_for(
                    lambda t=sent: synced_at(proxy.log, tenant, t), 30, "the sync", 0.02
                )
                latencies.append((stamp - sent) * 1000)
                time.sleep(0.3)
            rows.append((size, latencies))
        print("| services in the tenant | changes | p50 ms | max ms |")
        print("|---|---|---|---|")
        for size, latencies in rows:
            p50, worst = statistics.median(latencies), max(latencies)
            print(f"| {size} | {len(latencies)} | {p50:.0f} | {worst:.0f} |", flush=True)
    finally:
        proxy.stop()
        delete_tenant(kube, tenant, timeout=900)  # the namespace controller empties it
    return 0


if __name__ == "__main__":
    sys.exit(main())
