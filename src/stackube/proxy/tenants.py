"""From the cluster's objects to one tenant router's Services (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stackube.api.types import (
    DNS_NAMESPACE,
    SYSTEM_NAMESPACE,
    is_deleting,
    is_system_network,
    is_tenant_namespace,
    namespace_network,
)
from stackube.netpol.view import SYSTEM_SCOPE
from stackube.proxy.model import ServicePort, TenantServices, redirected, service_ports

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# SYSTEM_SCOPE: the sync unit of every namespace on the system network (not a namespace
# name: those are DNS labels); one router serves them all.


@dataclass(frozen=True)
class ProxySettings:
    cluster_dns_ip: str = "10.96.0.10"
    # Each tenant's DNS Service lives here, named after the tenant's namespace.
    dns_namespace: str = DNS_NAMESPACE
    service_cidr: str = "10.96.0.0/12"


def _router_status(namespace: str, networks: Iterable[Mapping[str, Any]], key: str) -> str | None:
    chosen = namespace_network(namespace, list(networks))
    if chosen is None or is_deleting(chosen):
        return None
    value = (chosen.get("status") or {}).get(key)
    return str(value) if value else None


def router_of(namespace: str, networks: Iterable[Mapping[str, Any]]) -> str | None:
    """The Neutron router of a tenant namespace: that of its Network named like the
    namespace, else of its only Network; None if it has none (not a tenant)."""
    return _router_status(namespace, networks, "routerID")


def router_external_ip(namespace: str, networks: Iterable[Mapping[str, Any]]) -> str:
    """The external address of the router of router_of ("" unknown): where NodePort
    traffic enters it."""
    return _router_status(namespace, networks, "routerExternalIP") or ""


def own_networks(namespace: str, networks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """A namespace's Networks other than the system network."""
    return [
        n
        for n in networks
        if not is_system_network(namespace, str((n.get("metadata") or {}).get("name", "")))
    ]


def scope_of(
    namespace: str,
    networks: Iterable[Mapping[str, Any]],
    tenant_namespaces: Iterable[str],
    settings: ProxySettings,
) -> str:
    """Whose router serves a namespace's Services: its own (a Tenant's namespace, or one
    with a Network of its own) or, for every other namespace, the system network's
    (SYSTEM_SCOPE). The DNS namespace is never the system's: its Services are tenants'."""
    if namespace == settings.dns_namespace or namespace in tenant_namespaces:
        return namespace
    return namespace if own_networks(namespace, networks) else SYSTEM_SCOPE


def tenant_namespace_name(obj: Mapping[str, Any]) -> tuple[str, bool]:
    """A Namespace object -> (its name, whether a Tenant owns it)."""
    meta = obj.get("metadata") or {}
    return str(meta.get("name", "")), is_tenant_namespace(meta.get("labels") or {})


def system_router_networks(networks: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The system Network among kube-system's Networks (a list of at most one)."""
    return [
        n
        for n in networks
        if is_system_network(SYSTEM_NAMESPACE, str((n.get("metadata") or {}).get("name", "")))
    ]


def slice_owner(slice_: Mapping[str, Any]) -> str | None:
    """The Service an EndpointSlice belongs to (its kubernetes.io/service-name label)."""
    owner = ((slice_.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
    return str(owner) if owner else None


def changed_namespace(
    kind: str, obj: Mapping[str, Any], namespace: str, settings: ProxySettings
) -> str | None:
    """The tenant namespace a changed object concerns: its own, except for a tenant's DNS
    Service (in settings.dns_namespace, named after the tenant's namespace) or its slice."""
    if namespace != settings.dns_namespace:
        return namespace
    if kind == "endpointslices":
        return slice_owner(obj)
    name = (obj.get("metadata") or {}).get("name")
    return str(name) if name else None


DnsObjects = tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]


def dns_by_tenant(
    services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]]
) -> dict[str, DnsObjects]:
    """The DNS namespace's Services and EndpointSlices, by the tenant namespace they
    serve (the Service's name), so that each tenant's sync gets its own only."""
    grouped: dict[str, DnsObjects] = {}
    for service in services:
        name = str((service.get("metadata") or {}).get("name", ""))
        grouped.setdefault(name, ([], []))[0].append(service)
    for slice_ in slices:
        owner = slice_owner(slice_)
        if owner:
            grouped.setdefault(owner, ([], []))[1].append(slice_)
    return grouped


# (the Service, its EndpointSlices, allow_external_ips) -> its ports
_Held = tuple[Mapping[str, Any], tuple[Mapping[str, Any], ...], bool, list[ServicePort]]


class PortMemo:
    """service_ports remembered per Service between passes: a Service whose object and
    EndpointSlices are the very objects of the last pass (a watch replaces an object
    when it changes) gets the same ServicePort values back, unread. Each pass keeps
    only what it used."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, str], _Held] = {}
        self._used: dict[tuple[str, str], _Held] = {}

    def ports(
        self,
        key: tuple[str, str],
        service: Mapping[str, Any],
        slices: list[Mapping[str, Any]],
        allow_external_ips: bool,
    ) -> list[ServicePort]:
        held = self._held.get(key)
        if (
            held is not None
            and held[0] is service
            and held[2] == allow_external_ips
            and len(held[1]) == len(slices)
            and all(a is b for a, b in zip(held[1], slices, strict=True))
        ):
            self._used[key] = held
            return held[3]
        ports = service_ports(service, slices, allow_external_ips=allow_external_ips)
        self._used[key] = (service, tuple(slices), allow_external_ips, ports)
        return ports

    def end_pass(self) -> None:
        """Forget what this pass did not ask for (deleted Services)."""
        self._held, self._used = self._used, {}


def _ports(
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    allow_external_ips: bool = False,
    memo: PortMemo | None = None,
) -> list[ServicePort]:
    # By (namespace, Service): the system router serves many namespaces at once, and two
    # of them may each have a Service of one name.
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for slice_ in slices:
        owner = slice_owner(slice_)
        if owner:
            namespace = str((slice_.get("metadata") or {}).get("namespace", ""))
            by_service.setdefault((namespace, owner), []).append(slice_)
    ports: list[ServicePort] = []
    for service in services:
        meta = service.get("metadata") or {}
        key = (str(meta.get("namespace", "")), str(meta.get("name", "")))
        owned = by_service.get(key, [])
        if memo is not None:
            ports += memo.ports(key, service, owned, allow_external_ips)
        else:
            ports += service_ports(service, owned, allow_external_ips=allow_external_ips)
    if memo is not None:
        memo.end_pass()
    return ports


def tenant_services(
    namespace: str,
    router_id: str,
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    settings: ProxySettings,
    *,
    dns_services: Iterable[Mapping[str, Any]] = (),
    dns_slices: Iterable[Mapping[str, Any]] = (),
    external_ip: str = "",
    allow_external_ips: bool = False,
    memo: PortMemo | None = None,
) -> TenantServices:
    """The namespace's ClusterIP ports, plus the cluster DNS IP (UDP and TCP 53) sent
    to the endpoints of the tenant's DNS Service (`dns_services`/`dns_slices`: those of
    settings.dns_namespace; only the Service named `namespace` counts). `memo`: the
    scope's PortMemo (one per sync unit), to read only the Services that changed."""
    ports = _ports(services, slices, allow_external_ips, memo)
    own_dns = [s for s in dns_services if (s.get("metadata") or {}).get("name") == namespace]
    ports += [
        redirected(p, settings.cluster_dns_ip)
        for p in _ports(own_dns, [s for s in dns_slices if slice_owner(s) == namespace])
        if p.port == 53
    ]
    return TenantServices(router_id, tuple(sorted(ports)), external_ip)
