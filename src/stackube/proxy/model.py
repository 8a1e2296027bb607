"""What the proxy knows about a tenant's Services (pure values), and how they are
built from Kubernetes Service and EndpointSlice objects (plain dicts, as the API
serves them)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackube.api.types import FLOATING_IP_ANNOTATION

PROTOCOLS = ("TCP", "UDP")
# Service types whose ports have a nodePort (LoadBalancer's may opt out of them).
NODE_PORT_TYPES = ("NodePort", "LoadBalancer")


@dataclass(frozen=True, order=True)
class Endpoint:
    ip: str
    port: int


@dataclass(frozen=True, order=True)
class ServicePort:
    """One port of one Service: what a ClusterIP:port leads to."""

    namespace: str
    service: str
    port_name: str
    protocol: str
    cluster_ip: str
    port: int
    endpoints: tuple[Endpoint, ...] = ()
    affinity_seconds: int | None = None  # ClientIP session affinity
    # NodePort (also LoadBalancer's): reached at the router's external address, this port.
    node_port: int | None = None
    # LoadBalancer: its addresses (status.loadBalancer.ingress), reached at `port` from
    # the sources in `source_ranges` (empty: from anywhere).
    load_balancer_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    # spec.externalIPs, where a cluster admin set them (never in tenant namespaces:
    # CVE-2020-8554): served like load balancer addresses, from any source.
    external_ips: tuple[str, ...] = ()

    @property
    def addresses(self) -> tuple[str, ...]:
        """Load balancer and external addresses (each sits on the router's gateway)."""
        return tuple(sorted({*self.load_balancer_ips, *self.external_ips}))

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.service}:{self.port_name or self.port}/{self.protocol}"


@dataclass(frozen=True)
class TenantServices:
    """Everything one tenant router serves: its namespace's Services, plus the cluster
    DNS IP mapped to the tenant's own DNS."""

    router_id: str
    ports: tuple[ServicePort, ...] = field(default_factory=tuple)
    # The router's address on the external network ("" unknown): where NodePorts enter.
    external_ip: str = ""


def _cluster_ips(spec: Mapping[str, Any]) -> list[str]:
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return [ip for ip in ips if ip and ip != "None" and ipaddress.ip_address(ip).version == 4]


def ready_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str, protocol: str
) -> tuple[Endpoint, ...]:
    """Ready IPv4 endpoints of a Service's EndpointSlices for one named port."""
    found: set[Endpoint] = set()
    for slice_ in slices:
        if slice_.get("addressType", "IPv4") != "IPv4":
            continue
        number = next(
            (
                p.get("port")
                for p in slice_.get("ports") or []
                if (p.get("name") or "") == port_name and p.get("protocol", "TCP") == protocol
            ),
            None,
        )
        if number is None:
            continue
        for endpoint in slice_.get("endpoints") or []:
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for address in endpoint.get("addresses") or []:
                found.add(Endpoint(str(address), int(number)))
    return tuple(sorted(found))


def service_ports(
    service: Mapping[str, Any],
    slices: Sequence[Mapping[str, Any]],
    *,
    allow_external_ips: bool = False,
) -> list[ServicePort]:
    """The ClusterIP ports of a Service (headless and ExternalName have none; SCTP and
    IPv6 are not served), with their NodePort, load balancer addresses and, when
    `allow_external_ips` (not a tenant's namespace), externalIPs."""
    meta, spec = service.get("metadata") or {}, service.get("spec") or {}
    if spec.get("type", "ClusterIP") == "ExternalName":
        return []
    affinity = None
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or 10800)
    load_balancer_ips: tuple[str, ...] = ()
    source_ranges: tuple[str, ...] = ()
    external_ips = _ipv4s(spec.get("externalIPs") or []) if allow_external_ips else ()
    if spec.get("type") == "LoadBalancer":
        load_balancer_ips = load_balancer_addresses(service)
        source_ranges = tuple(sorted(str(r) for r in spec.get("loadBalancerSourceRanges") or []))
    result = []
    for cluster_ip in _cluster_ips(spec):
        for port in spec.get("ports") or []:
            protocol = port.get("protocol", "TCP")
            if protocol not in PROTOCOLS:
                continue
            name = port.get("name") or ""
            node_port = port.get("nodePort") if spec.get("type") in NODE_PORT_TYPES else None
            result.append(
                ServicePort(
                    namespace=str(meta.get("namespace", "")),
                    service=str(meta.get("name", "")),
                    port_name=name,
                    protocol=protocol,
                    cluster_ip=cluster_ip,
                    port=int(port["port"]),
                    endpoints=ready_endpoints(slices, name, protocol),
                    affinity_seconds=affinity,
                    node_port=int(node_port) if node_port else None,
                    load_balancer_ips=load_balancer_ips,
                    source_ranges=source_ranges,
                    external_ips=external_ips,
                )
            )
    return result


def _ipv4s(texts: Iterable[object]) -> tuple[str, ...]:
    found = set()
    for text in texts:
        try:
            address = ipaddress.ip_address(str(text or ""))
        except ValueError:
            continue
        if address.version == 4:
            found.add(str(address))
    return tuple(sorted(found))


def load_balancer_addresses(service: Mapping[str, Any]) -> tuple[str, ...]:
    """The IPv4 addresses in a Service's status.loadBalancer.ingress, if Stackube's
    controller allocated them (its floating IP annotation): anyone allowed to write
    services/status could otherwise make routers answer for any address (the
    conformance suite writes 203.0.113.1 there)."""
    if not ((service.get("metadata") or {}).get("annotations") or {}).get(FLOATING_IP_ANNOTATION):
        return ()
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return _ipv4s(entry.get("ip") for entry in ingress)


def redirected(port: ServicePort, cluster_ip: str) -> ServicePort:
    """The same endpoints behind another address (the cluster DNS IP -> tenant DNS)."""
    return ServicePort(
        namespace=port.namespace,
        service=port.service,
        port_name=f"{port.port_name or port.port}@{cluster_ip}",
        protocol=port.protocol,
        cluster_ip=cluster_ip,
        port=port.port,
        endpoints=port.endpoints,
        affinity_seconds=port.affinity_seconds,
    )
