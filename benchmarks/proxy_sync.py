"""stackube-proxy sync cost at 1k, 5k and 10k Services, in one tenant and spread over 100
tenants, with each backend (nftables, iptables), next to a single load of the same
rules, in one run.

Run (root):  python3 -m benchmarks.proxy_sync [--sizes 1000,5000,10000] [--tenants 100]
             [--backends nftables,iptables]

The proxy's engine (stackube.proxy.sync.ProxyEngine, the code the program runs) drives
real nft and iptables in network namespaces this benchmark creates, one per tenant
router (named stkbbench-<n>, standing in for qrouter-<id>: same kernel, same tools).
Each Service has one TCP port and two endpoints.

- full sync: the engine's first pass over every tenant (everything written, hooks,
  local route);
- one change: one EndpointSlice of one tenant changes (an endpoint replaced): from the
  engine being told to the rules being in the kernel;
- baseline: one load of that tenant's complete rules (`nft -f` of the whole table;
  `iptables-restore --noflush` of every chain), i.e. what a proxy that rewrites
  everything would pay per change.
Prints a Markdown table (milliseconds).
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from typing import Any

from stackube.host import iptables, netlink, nftables
from stackube.proxy.nftables import full_script
from stackube.proxy.render import desired_tables, restore_input
from stackube.proxy.sync import ProxyEngine
from stackube.proxy.tenants import ProxySettings

PREFIX = "stkbbench-"
SERVICE_RANGE = ipaddress.ip_network("10.96.0.0/12")


class BenchTables:
    """stackube.host.iptables, with qrouter-<id> mapped to our own namespaces."""

    @staticmethod
    def _ns(netns: str) -> str:
        return PREFIX + netns.removeprefix("qrouter-")

    def namespace_exists(self, netns: str) -> bool:
        return iptables.namespace_exists(self._ns(netns))

    def chains(self, netns: str, table: str) -> set[str]:
        return iptables.chains(self._ns(netns), table)

    def restore(self, netns: str, text: str) -> None:
        iptables.restore(self._ns(netns), text)

    def ensure_jump(self, netns: str, table: str, chain: str, target: str) -> bool:
        return iptables.ensure_jump(self._ns(netns), table, chain, target)

    def forget_udp_flows(self, netns: str, cluster_ip: str, port: int, endpoint_ip: str) -> None:
        iptables.forget_udp_flows(self._ns(netns), cluster_ip, port, endpoint_ip)

    def ensure_local_route(self, netns: str, cidr: str) -> bool:
        return iptables.ensure_local_route(self._ns(netns), cidr)

    def remove_jump(self, netns: str, table: str, chain: str, target: str) -> bool:
        return iptables.remove_jump(self._ns(netns), table, chain, target)

    def load_balancer_addresses(self, netns: str) -> dict[str, str]:
        return iptables.load_balancer_addresses(self._ns(netns))

    def add_load_balancer_address(self, netns: str, address: str) -> bool:
        return iptables.add_load_balancer_address(self._ns(netns), address)

    def delete_load_balancer_address(self, netns: str, cidr: str) -> bool:
        return iptables.delete_load_balancer_address(self._ns(netns), cidr)


class BenchNftables:
    """stackube.host.nftables, with qrouter-<id> mapped to our own namespaces."""

    def apply(self, netns: str, script: str) -> None:
        nftables.apply(BenchTables._ns(netns), script)

    def delete_table(self, netns: str, family: str, table: str) -> bool:
        return nftables.delete_table(BenchTables._ns(netns), family, table)

    def table_exists(self, netns: str, family: str, table: str) -> bool:
        return nftables.table_exists(BenchTables._ns(netns), family, table)


def network(namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": namespace},
        "status": {"state": "Active", "routerID": namespace},
    }


def service(namespace: str, index: int, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": namespace, "name": f"svc-{index}"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"name": "http", "port": 80}]},
    }


def endpoint_slice(namespace: str, index: int, generation: int = 0) -> dict[str, Any]:
    base = 10 + (index % 200)
    return {
        "metadata": {
            "namespace": namespace,
            "name": f"svc-{index}-x",
            "labels": {"kubernetes.io/service-name": f"svc-{index}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [f"10.244.{base}.{(index + generation) % 250 + 1}"]},
            {"addresses": [f"10.244.{base + 1}.{index % 250 + 1}"]},
        ],
    }


def run_case(services: int, tenants: int, backend: str, rounds: int) -> dict[str, float]:
    names = [f"t{n}" for n in range(tenants)]
    for name in names:
        netlink.create_namespace(PREFIX + name)
    try:
        engine = ProxyEngine(
            ProxySettings(),
            BenchTables(),
            min_sync_seconds=0,
            nft=BenchNftables(),
            backend=backend,
        )
        ips = SERVICE_RANGE.hosts()
        next(ips)  # the kubernetes Service's
        for name in names:
            engine.on_change("networks", None, network(name))
        for index in range(services):
            name = names[index % tenants]
            engine.on_change("services", None, service(name, index, str(next(ips))))
            engine.on_change("endpointslices", None, endpoint_slice(name, index))
        started = time.perf_counter()
        engine.sync_dirty()
        full = time.perf_counter() - started

        changes = []
        for generation in range(1, rounds + 1):
            index = generation * 7
            name = names[index % tenants]
            started = time.perf_counter()
            engine.on_change("endpointslices", None, endpoint_slice(name, index, generation))
            engine.sync_dirty()
            changes.append(time.perf_counter() - started)

        # Baseline: the tenant's whole rule set in one load.
        name = names[0]
        if backend == "nftables":
            state = engine.nftables_of(name)
            text = full_script(state)
            rules = len(state.owners) + sum(len(r) for r in state.chains().values())

            def load() -> None:
                nftables.apply(PREFIX + name, text)
        else:
            text = restore_input(desired_tables(engine.services_of(name)), None, {}).text
            rules = text.count("\n-A ")

            def load() -> None:
                iptables.restore(PREFIX + name, text)

        baseline = []
        for _ in range(3):
            started = time.perf_counter()
            load()
            baseline.append(time.perf_counter() - started)
        return {
            "full": full * 1000,
            "change": statistics.median(changes) * 1000,
            "change_max": max(changes) * 1000,
            "baseline": statistics.median(baseline) * 1000,
            "rules": float(rules),
        }
    finally:
        for name in names:
            netlink.delete_namespace(PREFIX + name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,5000,10000")
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--backends", default="nftables,iptables")
    parser.add_argument("--changes", type=int, default=21)
    args = parser.parse_args()
    print(
        f"| backend | services | tenants | full sync ms | one change ms (p50 / max of "
        f"{args.changes}) | baseline: one load of the tenant's rules ms "
        "| rules (nftables: rules + elements) in that tenant |"
    )
    print("|---|---|---|---|---|---|---|")
    cases = [
        (size, tenants, backend)
        for size in (int(s) for s in args.sizes.split(","))
        for tenants in (1, args.tenants)
        for backend in args.backends.split(",")
    ]
    for size, tenants, backend in cases:
        print(f"running {backend}: {size} services / {tenants} tenants ...", file=sys.stderr)
        r = run_case(size, tenants, backend, args.changes)
        print(
            f"| {backend} | {size} | {tenants} | {r['full']:.0f} | {r['change']:.1f} / "
            f"{r['change_max']:.0f} | {r['baseline']:.0f} | {r['rules']:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
