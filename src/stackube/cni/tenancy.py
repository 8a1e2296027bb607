"""Which Neutron network a pod belongs on, and what CHECK compares (pure)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from stackube.api.types import (
    LABEL_TENANT,
    SYSTEM_NAMESPACE,
    SYSTEM_NETWORK,
    State,
    is_deleting,
    is_system_network,
    is_tenant_namespace,
    namespace_network,
)
from stackube.cni import spec
from stackube.host.netlink import PodInterface

T = TypeVar("T")
# How long an ADD waits for its namespace's Network to become usable (a pod created with
# its Tenant, e.g. the tenant's DNS server): failing at once would make the kubelet back
# off ~10-20 s before the next sandbox. Well inside the kubelet's 2 min runtime timeout
# and kubestack's 120 s.
NETWORK_PATIENCE_SECONDS = 45.0
NETWORK_RECHECK_SECONDS = 1.0  # at most this long between looks, whatever the watch says


@dataclass(frozen=True)
class NetworkRef:
    """A namespace's Network object, as far as the CNI daemon cares."""

    namespace: str
    name: str
    network_id: str
    subnet_id: str


@dataclass(frozen=True)
class TenantNetwork:
    """The Neutron side of a NetworkRef (immutable once made, so cached by id)."""

    network_id: str
    subnet_id: str
    cidr: str
    gateway: str | None
    mtu: int
    project_id: str


def _ref(item: Mapping[str, Any]) -> NetworkRef:
    meta, status = item.get("metadata") or {}, item.get("status") or {}
    return NetworkRef(
        str(meta.get("namespace", "")),
        str(meta.get("name", "")),
        str(status.get("networkID") or ""),
        str(status.get("subnetID") or ""),
    )


def choose_network(namespace: str, items: Sequence[Mapping[str, Any]]) -> NetworkRef:
    """The Network of a namespace: the one named like the namespace (the tenant's), else
    the only one. It must be Active and not being deleted."""
    if not items:
        raise spec.CniError(
            spec.NO_TENANT_NETWORK,
            f"namespace {namespace} has no Network",
            "pods run only in tenant namespaces (create a Tenant, or a Network in this namespace)",
        )
    item = namespace_network(namespace, items)
    if item is None:
        names = sorted(str((i.get("metadata") or {}).get("name")) for i in items)
        raise spec.CniError(
            spec.NO_TENANT_NETWORK,
            f"namespace {namespace} has several Networks and none named {namespace}",
            f"found: {', '.join(names)}",
        )
    ref = _ref(item)
    state = (item.get("status") or {}).get("state")
    if is_deleting(item):
        raise spec.CniError(
            spec.NO_TENANT_NETWORK, f"Network {namespace}/{ref.name} is being deleted"
        )
    if state != State.ACTIVE or not ref.network_id:
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            f"Network {namespace}/{ref.name} is not Active yet (state {state or 'unset'})",
        )
    return ref


def resolve_patiently(
    resolve: Callable[[], T],
    wait_for_change: Callable[[float], object],
    patience: float = NETWORK_PATIENCE_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """`resolve()`; while it raises CniError TRY_AGAIN_LATER (a Network not Active yet, a
    namespace not made yet), again after `wait_for_change(seconds)` returns (a Network
    changed, or NETWORK_RECHECK_SECONDS passed), for up to `patience` seconds. Any other
    error, and the last one after `patience`, is raised as it is."""
    deadline = clock() + patience
    while True:
        try:
            return resolve()
        except spec.CniError as exc:
            remaining = deadline - clock()
            if exc.code != spec.TRY_AGAIN_LATER or remaining <= 0:
                raise
            wait_for_change(min(remaining, NETWORK_RECHECK_SECONDS))


def system_network_for(
    namespace: str,
    labels: Mapping[str, str] | None,
    system_items: Sequence[Mapping[str, Any]],
) -> NetworkRef:
    """The Network of a namespace that has none of its own: the system network, unless a
    Tenant owns the namespace (its pods wait for the tenant's Network: a tenant's pod
    never joins the system network). `labels`: the namespace's (None: no namespace)."""
    if labels is None:
        raise spec.CniError(spec.TRY_AGAIN_LATER, f"namespace {namespace} does not exist")
    if is_tenant_namespace(labels):
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            f"namespace {namespace} is Tenant {labels[LABEL_TENANT]}'s and has no Network yet",
        )
    system = [
        item
        for item in system_items
        if is_system_network(
            str((item.get("metadata") or {}).get("namespace", "")),
            str((item.get("metadata") or {}).get("name", "")),
        )
    ]
    if not system:
        raise spec.CniError(
            spec.TRY_AGAIN_LATER,
            f"namespace {namespace} uses the system network, and Network "
            f"{SYSTEM_NAMESPACE}/{SYSTEM_NETWORK} does not exist yet",
            "stackube-controller makes it from user-cidr and user-gateway",
        )
    return choose_network(SYSTEM_NAMESPACE, system)


def dns_pod_tenant(namespace: str, pod: str, labels: Mapping[str, str] | None) -> str:
    """The tenant whose network a DNS server pod joins: its LABEL_TENANT label (None:
    the pod is not there, e.g. deleted meanwhile)."""
    if labels is None:
        raise spec.CniError(spec.TRY_AGAIN_LATER, f"pod {namespace}/{pod} is not in the API")
    tenant = labels.get(LABEL_TENANT)
    if not tenant:
        raise spec.CniError(
            spec.NO_TENANT_NETWORK,
            f"pod {namespace}/{pod} has no {LABEL_TENANT} label",
            f"pods in {namespace} join the network of the tenant that label names",
        )
    return tenant


def _standing_refs(
    items: Iterable[Mapping[str, Any]],
) -> Iterator[tuple[Mapping[str, Any], NetworkRef]]:
    """Networks not being deleted that name a Neutron network, with their refs."""
    for item in items:
        if not is_deleting(item) and (ref := _ref(item)).network_id:
            yield item, ref


def live_network_refs(items: Iterable[Mapping[str, Any]]) -> dict[str, NetworkRef]:
    """Networks that are Active and not being deleted (the ones worth keeping a pool
    for), by Neutron network id."""
    return {
        ref.network_id: ref
        for item, ref in _standing_refs(items)
        if (item.get("status") or {}).get("state") == State.ACTIVE
    }


def present_network_ids(items: Iterable[Mapping[str, Any]]) -> set[str]:
    """Neutron network ids of the Networks that exist and are not being deleted (Active
    or not): a pool port of any other network is removed from Neutron by the Network's
    finalizer (the controller deletes every pod port on it), not by the node."""
    return {ref.network_id for _, ref in _standing_refs(items)}


@dataclass(frozen=True)
class ExpectedInterface:
    ifname: str
    mac: str
    address: str  # CIDR form
    mtu: int
    gateway: str | None


def cidr_address(ip: str, cidr: str) -> str:
    return f"{ip}/{ipaddress.ip_network(cidr, strict=False).prefixlen}"


def check_problems(
    expected: ExpectedInterface, found: PodInterface | None, port_status: str | None, plugged: bool
) -> list[str]:
    """What CHECK finds wrong (an empty list means the attachment is as ADD left it)."""
    if found is None:
        return [f"{expected.ifname} is missing from the pod's network namespace"]
    problems = []
    if found.mac.lower() != expected.mac.lower():
        problems.append(f"{expected.ifname} has MAC {found.mac}, the port has {expected.mac}")
    if expected.address not in found.addresses:
        problems.append(f"{expected.ifname} lacks address {expected.address}")
    if found.mtu != expected.mtu:
        problems.append(f"{expected.ifname} has MTU {found.mtu}, the network has {expected.mtu}")
    if not found.up:
        problems.append(f"{expected.ifname} is down")
    if expected.gateway and found.default_gateway != expected.gateway:
        problems.append(f"default route via {found.default_gateway}, expected {expected.gateway}")
    if port_status is None:
        problems.append("the Neutron port is gone")
    elif port_status != "ACTIVE":
        problems.append(f"the Neutron port is {port_status}")
    if not plugged:
        problems.append("the host end is not attached to the Neutron agent's bridge")
    return problems
