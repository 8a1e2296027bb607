"""How soon a LoadBalancer Service serves: `type: LoadBalancer` created -> the first
byte from its address, fetched by a client on the external segment. Side by side with
Neutron's own floor for the address, in one run.

Run (root, devbox up):  python3 -m benchmarks.loadbalancer [--rounds 10]

- `loadbalancer`: a live tenant's nginx; a LoadBalancer Service for it is created, then
  a client in a network namespace on the external segment (tests/e2e/external_client)
  fetches `http://<status.loadBalancer.ingress[0].ip>/` every 0.1 s until nginx
  answers. The path: the controller allocates a floating IP in the tenant's project
  and writes the status; stackube-proxy puts the address on the router's gateway port
  and DNATs it (docs/services.md). The Service is deleted and its floating IP gone
  before the next round.
- `baseline`: the same floating IP create in the same project, direct (what any
  implementation on Neutron floating IPs pays), and its delete.
Prints a Markdown table in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time

from openstack.connection import Connection
from tests.e2e.external_client import ExternalClient, external_client
from tests.e2e.kubectl import Kubectl
from tests.integration.cni_harness import wait_for
from tests.live_tenant import LiveTenant

from benchmarks.live import started_tenant
from benchmarks.stats import row

SERVICE = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  type: LoadBalancer
  selector: {{app: nginx}}
  ports: [{{port: 80}}]
"""


def served(kubectl: Kubectl, client: ExternalClient, namespace: str, name: str) -> bool:
    service = kubectl.json("-n", namespace, "get", "service", name)
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    if not ingress:
        return False
    return "Welcome to nginx" in (client.fetch(f"http://{ingress[0]['ip']}/", timeout=1) or "")


def load_balancers(tenant: LiveTenant, client: ExternalClient, rounds: int) -> list[float]:
    took = []
    for n in range(rounds):
        name = f"lb-{n}"
        started = time.monotonic()
        tenant.kubectl.run(
            "apply", "-f", "-", stdin=SERVICE.format(name=name, namespace=tenant.name)
        )
        wait_for(
            lambda n=name: served(tenant.kubectl, client, tenant.name, n),
            60,
            "served",
            interval=0.1,
        )
        took.append(time.monotonic() - started)
        print(f"load balancer {n + 1}/{rounds}: {took[-1]:.2f} s", file=sys.stderr)
        tenant.kubectl.run("-n", tenant.name, "delete", "service", name, "--timeout=60s")
    return took


def baseline(admin: Connection, network_id: str, project_id: str, rounds: int) -> list[float]:
    took = []
    for _ in range(rounds):
        started = time.monotonic()
        ip = admin.network.create_ip(floating_network_id=network_id, project_id=project_id)
        took.append(time.monotonic() - started)
        admin.network.delete_ip(ip.id)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with started_tenant("bench-lb") as (devbox, admin, tenant, project_id):
        network_id = (devbox.settings.openstack_dir / "external-network-id").read_text().strip()
        with external_client(devbox, admin) as client:
            took = load_balancers(tenant, client, args.rounds)
        floor = baseline(admin, network_id, project_id, args.rounds)
        problems = tenant.problems()
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("LoadBalancer Service created -> first byte at its address", took))
    print(row("baseline: Neutron floating IP create, direct", floor))
    print(f"\nthe tenant afterwards: {problems or 'answering'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
