"""Which NodePorts this node relays, and where to (pure).

Every node answers a Service's nodePort on its NodePort addresses (`--nodeport-addresses`)
and relays the traffic to the same port on the external address of the router that
serves the Service's namespace (its tenant's, or the system network's); the router
DNATs it to an endpoint (stackube.proxy.render). With `externalTrafficPolicy: Local`,
a node answers only while it has a ready endpoint of the Service; the others refuse
the connection, so an external load balancer's health checks take them out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stackube.host.portrelay import Backend, Frontend
from stackube.proxy.model import NODE_PORT_TYPES, PROTOCOLS


@dataclass(frozen=True)
class NodePortService:
    """A Service with its EndpointSlices, and its router's external address ("" if
    not known yet)."""

    service: Mapping[str, Any]
    slices: Sequence[Mapping[str, Any]]
    router_external_ip: str


def addresses_in(cidrs: Sequence[str], addresses: Iterable[str]) -> list[str]:
    """This node's NodePort addresses: its IPv4 addresses inside `cidrs`, without
    loopback (kube-proxy's `--nodeport-addresses`; loopback would need route_localnet,
    CVE-2020-8558)."""
    networks = [ipaddress.ip_network(cidr) for cidr in cidrs]
    found = []
    for text in addresses:
        address = ipaddress.ip_address(text)
        if address.version == 4 and not address.is_loopback and any(address in n for n in networks):
            found.append(text)
    return sorted(set(found))


def has_local_endpoint(slices: Iterable[Mapping[str, Any]], node_name: str) -> bool:
    """Whether a ready endpoint of these EndpointSlices runs on `node_name`."""
    return any(
        endpoint.get("nodeName") == node_name
        and (endpoint.get("conditions") or {}).get("ready") is not False
        for slice_ in slices
        for endpoint in slice_.get("endpoints") or []
    )


def node_port_relays(
    services: Iterable[NodePortService], addresses: Sequence[str], node_name: str
) -> dict[Frontend, Backend]:
    """{(protocol, node address, nodePort): (router external address, nodePort)}."""
    relays: dict[Frontend, Backend] = {}
    for item in services:
        spec = item.service.get("spec") or {}
        if spec.get("type") not in NODE_PORT_TYPES or not item.router_external_ip:
            continue
        if spec.get("externalTrafficPolicy") == "Local" and not has_local_endpoint(
            item.slices, node_name
        ):
            continue
        for port in spec.get("ports") or []:
            protocol = port.get("protocol", "TCP")
            number = port.get("nodePort")
            if protocol not in PROTOCOLS or not number:
                continue
            backend = Backend(item.router_external_ip, int(number))
            for address in addresses:
                relays[Frontend(protocol, address, int(number))] = backend
    return relays
