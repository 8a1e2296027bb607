"""How pods reach the API server on the devbox.

kube-apiserver listens on loopback only. Pods live behind their tenant's Neutron
router, whose gateway port is on the external segment; the host owns one address there
(kept out of Neutron's pool). A DNAT rule sends what arrives at that address's API
port through the external veth to the loopback listener; nothing else is exposed.
"""

from __future__ import annotations

import ipaddress

from stackube.devbox.commands import run
from stackube.devbox.settings import DevboxSettings
from stackube.host import netlink, sysctl

RULE_COMMENT = "stackube-devbox: pods to kube-apiserver"


def dnat_rule(settings: DevboxSettings) -> list[str]:
    """The nat PREROUTING rule (iptables arguments after the chain name)."""
    port = str(settings.ports.kube_apiserver)
    return [
        "-i", settings.external_host_veth,
        "-d", f"{settings.external_host_address}/32",
        "-p", "tcp", "--dport", port,
        "-m", "comment", "--comment", RULE_COMMENT,
        "-j", "DNAT", "--to-destination", f"{settings.host}:{port}",
    ]  # fmt: skip


def host_cidr(settings: DevboxSettings) -> str:
    prefix = ipaddress.ip_network(settings.external_cidr).prefixlen
    return f"{settings.external_host_address}/{prefix}"


def ensure(settings: DevboxSettings) -> None:
    """The host address on the external veth, loopback routing allowed for what arrives
    there (DNAT to 127.0.0.1 needs it), and the DNAT rule; each only if missing."""
    link = settings.external_host_veth
    netlink.ensure_address(link, host_cidr(settings))
    sysctl.write(f"net.ipv4.conf.{link}.route_localnet", "1")
    rule = dnat_rule(settings)
    present = run(["iptables", "-w", "5", "-t", "nat", "-C", "PREROUTING", *rule], check=False)
    if present.returncode != 0:
        run(["iptables", "-w", "5", "-t", "nat", "-A", "PREROUTING", *rule])


def remove(settings: DevboxSettings) -> bool:
    """Drop the DNAT rule (the address and sysctl go with the veth). True if it was there."""
    rule = dnat_rule(settings)
    gone = run(["iptables", "-w", "5", "-t", "nat", "-D", "PREROUTING", *rule], check=False)
    return gone.returncode == 0
