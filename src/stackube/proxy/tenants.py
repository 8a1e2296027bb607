"""From the cluster's objects to one tenant router's Services (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stackube.api.naming import DNS_SERVICE
from stackube.api.types import is_deleting, namespace_network
from stackube.proxy.model import ServicePort, TenantServices, redirected, service_ports

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class ProxySettings:
    cluster_dns_ip: str = "10.96.0.10"
    dns_service: str = DNS_SERVICE
    service_cidr: str = "10.96.0.0/12"


def router_of(namespace: str, networks: Iterable[Mapping[str, Any]]) -> str | None:
    """The Neutron router of a tenant namespace: that of its Network named like the
    namespace, else of its only Network; None if it has none (not a tenant)."""
    chosen = namespace_network(namespace, list(networks))
    if chosen is None or is_deleting(chosen):
        return None
    router = (chosen.get("status") or {}).get("routerID")
    return str(router) if router else None


def tenant_services(
    namespace: str,
    router_id: str,
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    settings: ProxySettings,
) -> TenantServices:
    """The namespace's ClusterIP ports, plus the cluster DNS IP (UDP and TCP 53) sent
    to the tenant's own DNS Service."""
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for slice_ in slices:
        owner = ((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault(str(owner), []).append(slice_)
    ports: list[ServicePort] = []
    for service in services:
        name = str((service.get("metadata") or {}).get("name", ""))
        mine = service_ports(service, by_service.get(name, []))
        ports += mine
        if name == settings.dns_service:
            ports += [
                redirected(p, settings.cluster_dns_ip)
                for p in mine
                if p.port == 53 and p.cluster_ip != settings.cluster_dns_ip
            ]
    return TenantServices(router_id, tuple(sorted(ports)))
