"""What a pod gets from its Neutron port, as a CNI result (pure): interface, address,
routes and DNS, in the shape the CNI spec 1.0 (and 0.3.x/0.4.0) expects."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

LINUX_IFNAME_MAX = 15


@dataclass(frozen=True)
class PodAddressing:
    """Everything the pod's end needs, taken from its Neutron port and subnet."""

    port_id: str
    mac: str
    ip: str
    cidr: str
    gateway: str | None
    mtu: int
    dns_servers: Sequence[str] = ()
    dns_search: Sequence[str] = field(default_factory=tuple)


def port_name(namespace: str, pod: str) -> str:
    """The Neutron port of a pod (Neutron names may be 255 long)."""
    return f"kube-{namespace}-{pod}"[:255]


def host_ifname(port_id: str) -> str:
    """The host end of the pod's veth: what Neutron's Linux bridge agent looks for."""
    return f"tap{port_id[:11]}"


def dns_search(namespace: str, cluster_domain: str = "cluster.local") -> list[str]:
    return [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]


def render(addressing: PodAddressing, ifname: str, netns: str, cni_version: str) -> dict[str, Any]:
    network = ipaddress.ip_network(addressing.cidr, strict=False)
    address = f"{addressing.ip}/{network.prefixlen}"
    ip_entry: dict[str, Any] = {"address": address, "interface": 0}
    if addressing.gateway:
        ip_entry["gateway"] = addressing.gateway
    if cni_version.startswith("0.3") or cni_version.startswith("0.4"):
        # Before 1.0 every IP said its family.
        ip_entry["version"] = "4" if network.version == 4 else "6"
    default = "0.0.0.0/0" if network.version == 4 else "::/0"
    result: dict[str, Any] = {
        "cniVersion": cni_version,
        "interfaces": [{"name": ifname, "mac": addressing.mac, "sandbox": netns}],
        "ips": [ip_entry],
        "routes": [{"dst": default, "gw": addressing.gateway}] if addressing.gateway else [],
        "dns": {},
    }
    if addressing.dns_servers:
        result["dns"]["nameservers"] = list(addressing.dns_servers)
    if addressing.dns_search:
        result["dns"]["search"] = list(addressing.dns_search)
    return result
