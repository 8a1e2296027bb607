"""How soon a NetworkPolicy change is enforced, with 100 policies in the tenant; side by
side with the path kuryr takes (a Neutron security group rule on the pods' ports), in
one run. docs/decisions/0013-network-policy.md.

Run (root, devbox up):  python3 -m benchmarks.network_policy [--rounds 10] [--policies 100]

- `policy`: a live tenant's nginx pod, isolated by a deny policy, plus `--policies`
  - 2 unrelated policies (each selecting a label no pod has, with a rule). Each round
  applies a policy allowing ingress from one more /32 (198.18.0.0/15: benchmark space,
  only ever in the rule) and times until that /32 is in the nginx pod's chain in its
  network namespace (CNI daemon) and in the router's (stackube-proxy): both points.
- `baseline`: an ingress rule from such a /32 added to the tenant's default security
  group, until the node's iptables hold it (Neutron's agent applied it to the ports).
Prints a Markdown table in seconds.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from openstack.connection import Connection
from tests.integration.cni_harness import wait_for
from tests.live_tenant import LiveTenant

from benchmarks.live import started_tenant
from benchmarks.stats import row


def saved(netns: str) -> str:
    argv = ["iptables-save", "-t", "filter"]
    if netns:
        argv = ["nsenter", f"--net={netns}", *argv]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def pod_netns(ip: str) -> str:
    """The network namespace (path) that holds `ip`."""
    for path in sorted(Path("/var/run/netns").iterdir()):
        shown = subprocess.run(
            ["ip", "-n", path.name, "-j", "-4", "addr"], capture_output=True, text=True, check=False
        )
        addresses = [
            a.get("local")
            for link in json.loads(shown.stdout or "[]")
            for a in link.get("addr_info", [])
        ]
        if ip in addresses:
            return str(path)
    raise RuntimeError(f"no network namespace holds {ip}")


def policy(namespace: str, name: str, labels: dict[str, str], source: str | None) -> str:
    ingress = [{"from": [{"ipBlock": {"cidr": source}}]}] if source else []
    return json.dumps(
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"podSelector": {"matchLabels": labels}, "ingress": ingress},
        }
    )


def policy_latencies(tenant: LiveTenant, rounds: int, policies: int) -> list[float]:
    kubectl, ns = tenant.kubectl, tenant.name
    (nginx,) = kubectl.json("-n", ns, "get", "pods", "-l", "app=nginx")["items"]
    netns = pod_netns(nginx["status"]["podIP"])
    network = kubectl.json("-n", ns, "get", "network", ns)
    router = f"/var/run/netns/qrouter-{network['status']['routerID']}"
    kubectl.run("apply", "-f", "-", stdin=policy(ns, "deny", {"app": "nginx"}, None))
    for n in range(policies - 2):
        kubectl.run(
            "apply",
            "-f",
            "-",
            stdin=policy(ns, f"other-{n}", {"app": f"none-{n}"}, "198.19.0.0/16"),
        )
    took = []
    for n in range(rounds):
        source = f"198.18.0.{10 + n}/32"
        started = time.monotonic()
        kubectl.run("apply", "-f", "-", stdin=policy(ns, "allow", {"app": "nginx"}, source))
        wait_for(
            lambda s=source: s in saved(netns) and s in saved(router), 30, "enforced", interval=0.02
        )
        took.append(time.monotonic() - started)
        print(f"policy {n + 1}/{rounds}: {took[-1]:.2f} s", file=sys.stderr)
    kubectl.run("-n", ns, "delete", "networkpolicy", "--all")
    return took


def security_group_latencies(admin: Connection, project_id: str, rounds: int) -> list[float]:
    (group,) = admin.network.security_groups(project_id=project_id, name="default")
    took = []
    for n in range(rounds):
        prefix = f"198.18.1.{10 + n}/32"
        started = time.monotonic()
        rule = admin.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4",
            protocol="tcp", port_range_min=80, port_range_max=80, remote_ip_prefix=prefix,
        )  # fmt: skip
        wait_for(lambda p=prefix: p in saved(""), 60, "the rule applied", interval=0.02)
        took.append(time.monotonic() - started)
        admin.network.delete_security_group_rule(rule.id)
        print(f"security group rule {n + 1}/{rounds}: {took[-1]:.2f} s", file=sys.stderr)
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--policies", type=int, default=100)
    args = parser.parse_args()
    with started_tenant("bench-netpol") as (_, admin, tenant, project_id):
        took = policy_latencies(tenant, args.rounds, args.policies)
        floor = security_group_latencies(admin, project_id, args.rounds)
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(
        row(
            f"NetworkPolicy applied -> in the pod's and the router's chains "
            f"({args.policies} policies)",
            took,
        )
    )
    print(
        row("baseline: security group rule created -> in the node's iptables (kuryr's path)", floor)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
