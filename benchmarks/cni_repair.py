"""How soon a pod's Neutron port, deleted behind the CNI daemon's back, is back: same
MAC and address, bound, ACTIVE. Side by side with Neutron's own floor for the same
work, in one run.

Run (root, devbox up):  python3 -m benchmarks.cni_repair [--deletions 10]

- `repair`: the devbox's own stackube-cni-daemon (repair pass every 5 s) and a real
  nginx pod of a live tenant; `openstack port delete` of its port, then the time until
  a port with the pod's device id, MAC and address is ACTIVE again. Detection waits
  for the next pass (0-5 s); the mend is a port create with the MAC and address, the
  host end renamed, and Neutron's agent wiring it.
- `baseline`: Neutron alone, no detection: create a bound port with a given MAC and
  address on the same network, plug a veth into the agent's bridge at once, and wait
  for ACTIVE (the floor any repair pays).
Prints a Markdown table in seconds.
"""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from typing import Any

from openstack.connection import Connection
from tests.e2e.kubectl import Kubectl
from tests.integration.cni_harness import wait_for
from tests.live_tenant import LiveTenant

from benchmarks.stats import row
from stackube.api.naming import POD_PORT_DEVICE_OWNER
from stackube.cni.drivers import linux_bridge_name, parked_ifname
from stackube.cni.result import host_ifname
from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.host import netlink
from stackube.openstack.cloud import connect_cloud


def repairs(tenant: LiveTenant, admin: Connection, deletions: int) -> list[float]:
    pods = tenant.kubectl.json("-n", tenant.name, "get", "pods", "-l", "app=nginx")["items"]
    uid = pods[0]["metadata"]["uid"]
    took = []
    for n in range(deletions):
        old = admin.network.get_port(tenant.ports[uid])
        admin.network.delete_port(old.id)
        started = time.monotonic()

        def back(old: Any = old) -> Any:
            found = [
                p
                for p in admin.network.ports(device_owner=POD_PORT_DEVICE_OWNER, device_id=uid)
                if p.id != old.id and p.status == "ACTIVE"
            ]
            return found[0] if found else None

        new = wait_for(back, 60, "the port re-created", interval=0.1)
        took.append(time.monotonic() - started)
        assert new.mac_address == old.mac_address and new.fixed_ips == old.fixed_ips
        tenant.ports[uid] = new.id
        print(f"repair {n + 1}/{deletions}: {took[-1]:.1f} s", file=sys.stderr)
        # The next deletion lands at a random point of the daemon's repair cycle.
        time.sleep(random.uniform(0, 5))  # noqa: S311 - not for security
    return took


def baseline(admin: Connection, network_id: str, project_id: str, rounds: int) -> list[float]:
    """A bound port with a given MAC and address, plugged at once, until ACTIVE."""
    host = socket.gethostname()
    took = []
    for _ in range(rounds):
        probe = admin.network.create_port(network_id=network_id, project_id=project_id)
        mac, fixed = probe.mac_address, probe.fixed_ips
        admin.network.delete_port(probe.id)
        started = time.monotonic()
        port = admin.network.create_port(
            network_id=network_id,
            project_id=project_id,
            name="bench-repair-baseline",
            device_owner=POD_PORT_DEVICE_OWNER,
            device_id="bench-repair-baseline",
            binding_host_id=host,
            mac_address=mac,
            fixed_ips=fixed,
        )
        try:
            netlink.ensure_parked_veth(
                host_ifname(port.id), parked_ifname(port.id), mac=mac, mtu=1450
            )
            netlink.ensure_bridge(linux_bridge_name(network_id))
            netlink.attach_to_bridge(host_ifname(port.id), linux_bridge_name(network_id))
            wait_for(
                lambda port=port: admin.network.get_port(port.id).status == "ACTIVE",
                60,
                "ACTIVE",
                interval=0.1,
            )
            took.append(time.monotonic() - started)
        finally:
            admin.network.delete_port(port.id)
            netlink.delete_links([host_ifname(port.id), parked_ifname(port.id)])
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deletions", type=int, default=10)
    args = parser.parse_args()
    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    tenant = LiveTenant(Kubectl(devbox.settings.admin_kubeconfig), admin, "bench-repair")
    try:
        tenant.start()
        port = admin.network.get_port(next(iter(tenant.ports.values())))
        took = repairs(tenant, admin, args.deletions)
        floor = baseline(admin, port.network_id, port.project_id, args.deletions)
        problems = tenant.problems()
    finally:
        tenant.delete()
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("repair: port deleted -> same MAC + address, ACTIVE again", took, digits=1))
    print(row("baseline: Neutron create (MAC + address) + plug -> ACTIVE", floor, digits=1))
    print(f"\nthe tenant afterwards: {problems or 'answering'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
