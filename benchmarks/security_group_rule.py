"""How soon Neutron enforces a security group rule on a pod's port: the path kuryr
takes for NetworkPolicy (a policy -> security group rules), measured to choose where
Stackube enforces NetworkPolicy (docs/decisions/0013-network-policy.md).

Run (root, devbox up):  python3 -m benchmarks.security_group_rule [--rounds 10]

A live tenant's pods sit in its project's default security group. Each round adds an
ingress rule from a fresh /32 of 192.0.2.0/24 (TEST-NET-1: it only ever appears in
the rule) and times, from the API call, until the node's iptables hold it (Neutron's
agent has applied it to the pods' ports); then the same for its deletion. The agent is
the devbox's (ML2/Linux bridge, iptables firewall driver, its default polling).
Prints a Markdown table in seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from openstack.connection import Connection
from tests.e2e.kubectl import Kubectl
from tests.integration.cni_harness import wait_for
from tests.live_tenant import LiveTenant

from benchmarks.stats import row
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.openstack.cloud import connect_cloud


def in_iptables(text: str) -> bool:
    saved = subprocess.run(
        ["iptables-save", "-t", "filter"], capture_output=True, text=True, check=True, timeout=30
    )
    return text in saved.stdout


def rule_latencies(
    admin: Connection, project_id: str, rounds: int
) -> tuple[list[float], list[float]]:
    (group,) = admin.network.security_groups(project_id=project_id, name="default")
    added, removed = [], []
    for n in range(rounds):
        prefix = f"192.0.2.{10 + n}/32"
        started = time.monotonic()
        rule = admin.network.create_security_group_rule(
            security_group_id=group.id, direction="ingress", ethertype="IPv4",
            protocol="tcp", port_range_min=80, port_range_max=80, remote_ip_prefix=prefix,
        )  # fmt: skip
        wait_for(lambda p=prefix: in_iptables(p), 60, "the rule applied", interval=0.05)
        added.append(time.monotonic() - started)
        started = time.monotonic()
        admin.network.delete_security_group_rule(rule.id)
        wait_for(lambda p=prefix: not in_iptables(p), 60, "the rule removed", interval=0.05)
        removed.append(time.monotonic() - started)
        print(f"round {n + 1}/{rounds}: +{added[-1]:.2f} s -{removed[-1]:.2f} s", file=sys.stderr)
    return added, removed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    kubectl = Kubectl(devbox.settings.admin_kubeconfig)
    tenant = LiveTenant(kubectl, admin, "bench-sg")
    try:
        tenant.start()
        project_id = str(kubectl.json("get", "tenant", tenant.name)["status"]["projectID"])
        added, removed = rule_latencies(admin, project_id, args.rounds)
    finally:
        tenant.delete()
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("security group rule created -> in the node's iptables", added))
    print(row("security group rule deleted -> gone from the node's iptables", removed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
