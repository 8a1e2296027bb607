"""stackube-proxy's engine: keeps each tenant router on this node serving what the
tenant's Services and EndpointSlices say. Changes mark their scope (a tenant's
namespace, or the system router's) dirty, and name the Services they concern; a sync
pass (at most every `min_sync_seconds`) handles only dirty scopes. The nftables
backend (default, stackube.proxy.nftables) updates only the changed Services' elements;
the iptables backend (render.py) rewrites only the STKB chains whose rules changed. A
start is a full resync: every router written whole, what the other backend left
removed."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from stackube.api.objects import ObjectIndex, key_of
from stackube.api.types import SYSTEM_NAMESPACE
from stackube.errors import StackubeError
from stackube.host.portrelay import Backend, Frontend
from stackube.netpol.compiler import PolicyError
from stackube.netpol.render import ROUTER_CHAIN as NETWORK_POLICY
from stackube.netpol.render import router_chains
from stackube.netpol.selectors import SelectorError
from stackube.netpol.view import SYSTEM_SCOPE, PolicyInput, pod_changed, policy_input
from stackube.proxy import nftables
from stackube.proxy.model import NODE_PORT_TYPES, ServicePort, TenantServices, service_ports
from stackube.proxy.nodeports import NodePortService, addresses_in, node_port_relays
from stackube.proxy.render import (
    JUMPS,
    Restore,
    Tables,
    desired_tables,
    load_balancer_ips,
    restore_input,
    udp_endpoints_removed,
    udp_flows_removed,
)
from stackube.proxy.tenants import (
    DnsObjects,
    PortMemo,
    ProxySettings,
    changed_namespace,
    dns_by_tenant,
    own_networks,
    router_external_ip,
    router_of,
    scope_of,
    slice_owner,
    system_router_networks,
    tenant_namespace_name,
    tenant_services,
)

log = logging.getLogger("stackube.proxy")

# What NetworkPolicy enforcement in the routers reads (decision 0013).
POLICY_KINDS = ("pods", "networkpolicies")
WATCHED_KINDS = ("services", "endpointslices", "networks", *POLICY_KINDS)
BACKENDS = ("nftables", "iptables")
# The changed Services of a scope: (namespace, name) -> (the Service or None if it is
# gone, its EndpointSlices).
ChangedServices = dict[nftables.ServiceKey, tuple[dict[str, Any] | None, list[dict[str, Any]]]]


class Relays(Protocol):
    """The node's NodePort relays (stackube.host.portrelay.PortRelay)."""

    def apply(self, wanted: Mapping[Frontend, Backend]) -> dict[Frontend, str]: ...


@dataclass(frozen=True)
class NodePorts:
    """What the engine needs to serve NodePorts on this node."""

    relays: Relays
    node_name: str
    cidrs: tuple[str, ...]  # --nodeport-addresses
    local_addresses: Callable[[], list[str]]  # this node's IPv4 addresses


class RouterTables(Protocol):
    """The I/O the engine needs in a router's namespace (stackube.host.iptables)."""

    def namespace_exists(self, netns: str) -> bool: ...
    def chains(self, netns: str, table: str) -> set[str]: ...
    def restore(self, netns: str, text: str) -> None: ...
    def ensure_jump(self, netns: str, table: str, chain: str, target: str) -> bool: ...
    def forget_udp_flows(
        self, netns: str, cluster_ip: str, port: int, endpoint_ip: str
    ) -> None: ...
    def ensure_local_route(self, netns: str, cidr: str) -> bool: ...
    def load_balancer_addresses(self, netns: str) -> dict[str, str]: ...
    def add_load_balancer_address(self, netns: str, address: str) -> bool: ...
    def delete_load_balancer_address(self, netns: str, cidr: str) -> bool: ...
    def remove_jump(self, netns: str, table: str, chain: str, target: str) -> bool: ...


class RouterNftables(Protocol):
    """nft in a router's namespace (stackube.host.nftables)."""

    def apply(self, netns: str, script: str) -> None: ...
    def table_exists(self, netns: str, family: str, table: str) -> bool: ...
    def delete_table(self, netns: str, family: str, table: str) -> bool: ...


def router_netns(router_id: str) -> str:
    return f"qrouter-{router_id}"


@dataclass
class SyncResult:
    namespace: str
    router_id: str | None
    changed_chains: int = 0
    deleted_chains: int = 0
    seconds: float = 0.0


# A port's nftables rules, with the ServicePort and external address they were made from.
_Rendered = tuple[ServicePort, str, nftables.PortRules]


def _rules_of(
    previous: Mapping[nftables.PortKey, _Rendered],
    memo: dict[nftables.PortKey, _Rendered],
    port: ServicePort,
    external_ip: str,
) -> nftables.PortRules:
    """nftables.port_rules, made once per ServicePort object (the PortMemo hands back the
    same object while the Service and its slices are unchanged); kept in `memo`."""
    key = nftables.port_key(port)
    held = previous.get(key)
    if held is None or held[0] is not port or held[1] != external_ip:
        held = (port, external_ip, nftables.port_rules(port, external_ip))
    memo[key] = held
    return held[2]


class ProxyEngine:
    def __init__(
        self,
        settings: ProxySettings,
        tables: RouterTables,
        min_sync_seconds: float = 0.05,
        node_ports: NodePorts | None = None,
        *,
        nft: RouterNftables | None = None,
        backend: str = "iptables",
    ) -> None:
        """`backend`: Services as a native nftables table in each router ("nftables",
        stackube.proxy.nftables, through `nft`) or as iptables chains ("iptables",
        render.py; with `nft`, a table the other backend left is removed). NetworkPolicy
        is iptables chains either way."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: one of {', '.join(BACKENDS)}")
        if backend == "nftables" and nft is None:
            raise ValueError("the nftables backend needs nft")
        self.settings = settings
        self.tables = tables
        self.nft = nft
        self.nftables_backend = backend == "nftables"
        self.min_sync_seconds = min_sync_seconds
        self.node_ports = node_ports
        self._relays_dirty = True
        self._relay_failures: dict[Frontend, str] = {}
        # The sync thread and housekeeping both apply relays: one at a time, so an older
        # computation never lands after a newer one.
        self._relay_lock = threading.Lock()
        # Router tables are written by the sync pass and by housekeeping (hooks, load
        # balancer addresses): one at a time, so housekeeping never re-adds an address
        # from a set the sync pass is replacing.
        self._tables_lock = threading.Lock()
        self._objects = {kind: ObjectIndex() for kind in WATCHED_KINDS}
        self._namespaces: set[str] = set()  # seen in the Namespaces watch
        self._namespace_labels: dict[str, dict[str, str]] = {}
        self._tenant_namespaces: set[str] = set()
        self._dirty: set[str] = set()  # scopes: a tenant's namespace, or SYSTEM_SCOPE
        # Dirty scopes where only these Services changed (the nftables backend updates
        # just their elements); a dirty scope not here is synced whole.
        self._dirty_services: dict[str, set[nftables.ServiceKey]] = {}
        self._slices_by_service: dict[nftables.ServiceKey, dict[str, dict[str, Any]]] = {}
        self._memos: dict[str, PortMemo] = {}  # scope -> its Services' ports
        # router id -> its nftables table, and the router's external address it has
        self._nft_applied: dict[str, tuple[nftables.TableState, str]] = {}
        # router id -> each port's rules, from its ServicePort (the very object, from the
        # PortMemo); a whole sync keeps only the ports it used.
        self._port_rules: dict[str, dict[nftables.PortKey, _Rendered]] = {}
        # router id -> the ports of each Service the nftables table was last given
        self._nft_ports: dict[str, dict[nftables.ServiceKey, list[ServicePort]]] = {}
        self._changed = threading.Condition()
        self._applied: dict[str, Tables] = {}  # router id -> what is in its tables
        # router id -> the load balancer addresses on its gateway port
        self._lb_addresses: dict[str, set[str]] = {}
        self._last: dict[str, TenantServices] = {}
        self._router_of_ns: dict[str, str] = {}
        self._waiting: set[str] = set()  # tenants whose router is not (yet) on this node
        self.history: list[SyncResult] = []

    # ---- input ---------------------------------------------------------------------------
    def on_change(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._changed:
            if kind in POLICY_KINDS:
                self._policy_change(kind, old, new)
                return
            self._relays_dirty = True
            obj = new if new is not None else old
            if kind == "namespaces":
                if obj is None:
                    return
                name, tenant = tenant_namespace_name(obj)
                if new is None:
                    self._namespaces.discard(name)
                    self._namespace_labels.pop(name, None)
                else:
                    self._namespaces.add(name)
                    self._namespace_labels[name] = dict(
                        (new.get("metadata") or {}).get("labels") or {}
                    )
                if tenant and new is not None:
                    self._tenant_namespaces.add(name)
                else:
                    self._tenant_namespaces.discard(name)
                # Its Services may move between its own router and the system's.
                self._mark_whole(name, SYSTEM_SCOPE)
                self._changed.notify()
                return
            namespace = self._objects[kind].apply(old, new)
            services = self._services_changed(kind, old, new)
            if obj is not None and namespace is not None:
                namespace = changed_namespace(kind, obj, namespace, self.settings)
            if namespace is None:
                return
            if kind == "networks":
                self._mark_whole(namespace, SYSTEM_SCOPE)
            elif services:
                self._mark_services(self._scope(namespace), services)
            else:
                self._mark_whole(self._scope(namespace))
            self._changed.notify()

    def _services_changed(
        self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> set[nftables.ServiceKey]:
        """(Under self._changed.) The Services (namespace, name) a Service or
        EndpointSlice change concerns (none for other kinds, and for the DNS namespace's
        objects: those are tenants' DNS, synced whole); keeps the slices by Service."""
        obj = new if new is not None else old
        if kind not in ("services", "endpointslices") or obj is None:
            return set()
        namespace, name = key_of(obj)
        if namespace == self.settings.dns_namespace:
            return set()
        if kind == "services":
            return {(namespace, name)}
        found = set()
        before = slice_owner(old) if old is not None else None
        if before is not None:
            held = self._slices_by_service.get((namespace, before), {})
            held.pop(name, None)
            if not held:
                self._slices_by_service.pop((namespace, before), None)
            found.add((namespace, before))
        after = slice_owner(new) if new is not None else None
        if new is not None and after is not None:
            self._slices_by_service.setdefault((namespace, after), {})[name] = new
            found.add((namespace, after))
        return found

    def _mark_whole(self, *scopes: str) -> None:
        """(Under self._changed.) These scopes are synced whole next pass."""
        self._dirty.update(scopes)
        for scope in scopes:
            self._dirty_services.pop(scope, None)

    def _mark_services(self, scope: str, services: set[nftables.ServiceKey]) -> None:
        """(Under self._changed.) Only these Services of the scope changed (unless it
        is to be synced whole already)."""
        if scope not in self._dirty:
            self._dirty.add(scope)
            self._dirty_services[scope] = set(services)
        elif scope in self._dirty_services:
            self._dirty_services[scope] |= services

    def _policy_change(
        self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """(Under self._changed.) A Pod or NetworkPolicy changed: its scope is synced
        again if policies there may read it (a pod's address, labels or named ports)."""
        namespace = self._objects[kind].apply(old, new)
        if namespace is None or namespace == self.settings.dns_namespace:
            return
        scope = self._scope(namespace)
        if kind == "pods" and (
            not pod_changed(old, new)
            or not any(self._in("networkpolicies", ns) for ns in self._members(scope))
        ):
            return
        self._mark_whole(scope)
        self._changed.notify()

    def _members(self, scope: str) -> list[str]:
        """(Under self._changed.) The namespaces one scope's router serves."""
        if scope != SYSTEM_SCOPE:
            return [scope]
        every = {ns for index in self._objects.values() for ns in index.namespaces()}
        return sorted(ns for ns in every if self._scope(ns) == SYSTEM_SCOPE)

    def _policy_input(self, scope: str) -> PolicyInput:
        """(Under self._changed.)"""
        return policy_input(
            self._members(scope),
            self._objects["networkpolicies"],
            self._objects["pods"],
            self._namespace_labels,
        )

    def _scope(self, namespace: str) -> str:
        """(Under self._changed.) A namespace the Namespaces watch has not shown yet is
        its own unit (no router: nothing is written) until it does: its Services must
        not reach the system router before we know it is not a Tenant's."""
        if namespace not in self._namespaces:
            return namespace
        return scope_of(
            namespace, self._in("networks", namespace), self._tenant_namespaces, self.settings
        )

    def _in(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        return self._objects[kind].in_namespace(namespace)

    def _changed_services(self, keys: set[nftables.ServiceKey]) -> ChangedServices:
        """(Under self._changed.) Each of these Services (None: gone) with its slices."""
        return {
            key: (
                self._objects["services"].get(*key),
                list(self._slices_by_service.get(key, {}).values()),
            )
            for key in keys
        }

    def _snapshot(self, scope: str, whole: bool) -> tuple[list[Any], list[Any], list[Any]]:
        """(Under self._changed.) A scope's router Networks, and (`whole`) the Services
        and EndpointSlices of every namespace its router serves."""
        if scope == SYSTEM_SCOPE:
            networks = system_router_networks(self._in("networks", SYSTEM_NAMESPACE))
            members = sorted(self._members(SYSTEM_SCOPE)) if whole else []
        else:
            # A namespace now served by the system router has no router of its own here:
            # what its own router had goes.
            own = self._scope(scope) == scope
            networks = own_networks(scope, self._in("networks", scope)) if own else []
            members = [scope] if whole else []
        return (
            networks,
            [o for ns in members for o in self._in("services", ns)],
            [o for ns in members for o in self._in("endpointslices", ns)],
        )

    # ---- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._changed:
                while not self._dirty and not stop.is_set():
                    self._changed.wait(1)
            if stop.is_set():
                return
            started = time.monotonic()
            self.sync_dirty()
            # Bounded frequency: changes arriving meanwhile wait for the next pass.
            stop.wait(max(0.0, self.min_sync_seconds - (time.monotonic() - started)))

    def sync_dirty(self) -> list[SyncResult]:
        with self._changed:
            namespaces, self._dirty = sorted(self._dirty), set()
            partial, self._dirty_services = self._dirty_services, {}
            if not self.nftables_backend:  # the iptables renderer writes whole tenants
                partial = {}
            changed = {ns: self._changed_services(keys) for ns, keys in partial.items()}
            dns_namespace = self.settings.dns_namespace
            snapshot = {ns: self._snapshot(ns, whole=ns not in changed) for ns in namespaces}
            dns = dns_by_tenant(
                self._in("services", dns_namespace), self._in("endpointslices", dns_namespace)
            )
            # externalIPs only where a cluster admin set them (CVE-2020-8554): admission
            # refuses them in tenant namespaces; this keeps older ones there unserved.
            admins = {
                ns for ns in namespaces if ns not in self._tenant_namespaces and ns != dns_namespace
            }
            policies = {ns: self._policy_input(ns) for ns in namespaces if ns not in changed}
        with self._tables_lock:
            results = self._sync_snapshot(snapshot, dns, admins, policies, changed)
        self.history = (self.history + results)[-1000:]
        self.sync_node_ports()
        return results

    def _sync_snapshot(
        self,
        snapshot: Mapping[str, tuple[list[Any], list[Any], list[Any]]],
        dns: Mapping[str, DnsObjects],
        admins: set[str],
        policies: Mapping[str, PolicyInput],
        changed: Mapping[str, ChangedServices],
    ) -> list[SyncResult]:
        """(Under self._tables_lock.) One sync of each namespace in `snapshot`; a
        namespace that fails is retried by housekeeping, the others go on. A namespace
        in `changed` had only those Services change (its snapshot lists none)."""
        results = []
        for namespace, (networks, services, slices) in snapshot.items():
            # The system router's pods ask the cluster DNS Service itself (kube-dns).
            dns_services, dns_slices = (
                ([], []) if namespace == SYSTEM_SCOPE else dns.get(namespace, ([], []))
            )
            try:
                result = self.sync_namespace(
                    namespace,
                    networks,
                    services,
                    slices,
                    dns_services=dns_services,
                    dns_slices=dns_slices,
                    allow_external_ips=namespace in admins,
                    policies=policies.get(namespace),
                    changed=changed.get(namespace),
                )
                results.append(result)
            except (StackubeError, PolicyError, SelectorError) as exc:
                log.warning("namespace %s: %s; retrying", namespace, exc)
                self._retry(namespace)
            except Exception:  # a bug or an odd kernel answer: keep the others going
                log.exception("namespace %s: sync failed; retrying", namespace)
                self._retry(namespace)
        return results

    def _node_port_services(self) -> list[NodePortService]:
        """(Under self._changed.) Every NodePort or LoadBalancer Service, with its
        slices and the external address of the router that serves it."""
        found = []
        for namespace in self._objects["services"].namespaces():
            services = [
                s
                for s in self._in("services", namespace)
                if (s.get("spec") or {}).get("type") in NODE_PORT_TYPES
            ]
            if not services:
                continue
            scope = self._scope(namespace)
            networks = (
                system_router_networks(self._in("networks", SYSTEM_NAMESPACE))
                if scope == SYSTEM_SCOPE
                else own_networks(namespace, self._in("networks", namespace))
            )
            external_ip = router_external_ip(namespace, networks)
            slices = self._in("endpointslices", namespace)
            for service in services:
                name = (service.get("metadata") or {}).get("name")
                owned = [s for s in slices if slice_owner(s) == name]
                found.append(NodePortService(service, owned, external_ip))
        return found

    def sync_node_ports(self, *, force: bool = False) -> None:
        """Makes this node's NodePort relays what the Services say (when something
        changed since the last time, or `force`: housekeeping retries ports that could
        not be opened and follows the node's addresses)."""
        node_ports = self.node_ports
        if node_ports is None:
            return
        with self._relay_lock:
            with self._changed:
                if not (self._relays_dirty or force):
                    return
                self._relays_dirty = False
                services = self._node_port_services()
            addresses = addresses_in(node_ports.cidrs, node_ports.local_addresses())
            wanted = node_port_relays(services, addresses, node_ports.node_name)
            failures = node_ports.relays.apply(wanted)
            for frontend, problem in sorted(failures.items()):
                if self._relay_failures.get(frontend) != problem:
                    log.warning("NodePort %s cannot be served: %s", frontend, problem)
            self._relay_failures = failures

    def _retry(self, namespace: str) -> None:
        # Start from scratch for it: what reached the router is unknown.
        router = self._router_of_ns.pop(namespace, None)
        if router is not None:
            self._applied.pop(router, None)
            self._lb_addresses.pop(router, None)
            self._nft_applied.pop(router, None)
        with self._changed:
            self._waiting.add(namespace)  # retried by housekeeping, not in a hot loop

    def sync_namespace(
        self,
        namespace: str,
        networks: Iterable[Mapping[str, Any]],
        services: Iterable[Mapping[str, Any]],
        slices: Iterable[Mapping[str, Any]],
        *,
        dns_services: Iterable[Mapping[str, Any]] = (),
        dns_slices: Iterable[Mapping[str, Any]] = (),
        allow_external_ips: bool = False,
        policies: PolicyInput | None = None,
        changed: ChangedServices | None = None,
    ) -> SyncResult:
        """Makes the router of `namespace` (a scope) serve its Services. `changed`: only
        these Services changed (`services` and `slices` are then empty); the nftables
        backend updates their elements alone, or, with nothing of the router's applied
        yet, marks the scope to be synced whole."""
        started = time.monotonic()
        router = router_of(namespace, networks)
        previous = self._router_of_ns.get(namespace)
        if previous and previous != router:
            # The tenant's router changed or went: its tables went with it.
            self._forget_router(previous)
            self._router_of_ns.pop(namespace, None)
            self._memos.pop(namespace, None)
        if router is None:
            self._memos.pop(namespace, None)
            return SyncResult(namespace, None)
        netns = router_netns(router)
        if not self.tables.namespace_exists(netns):
            self._waiting.add(namespace)  # not on this node, or not yet: look again later
            return SyncResult(namespace, router)
        self._waiting.discard(namespace)
        external_ip = router_external_ip(namespace, networks)
        if self.nftables_backend and changed is not None:
            return self._sync_changed(namespace, router, changed, external_ip, allow_external_ips)
        tenant = tenant_services(
            namespace,
            router,
            services,
            slices,
            self.settings,
            dns_services=dns_services,
            dns_slices=dns_slices,
            external_ip=external_ip,
            allow_external_ips=allow_external_ips,
            memo=self._memos.setdefault(namespace, PortMemo()),
        )
        compiled = policies.compile() if policies is not None else None
        if self.nftables_backend:
            desired: Tables = {"nat": {}, "filter": router_chains(compiled or {})}
        else:
            desired = desired_tables(tenant, self.settings.service_cidr, compiled)
        restore, first = self._restore(router, desired)
        if self.nftables_backend:
            by_service: dict[nftables.ServiceKey, list[ServicePort]] = {}
            for port in tenant.ports:
                by_service.setdefault((port.namespace, port.service), []).append(port)
            result = self._sync_nftables(
                namespace, router, by_service, complete=True, external_ip=external_ip
            )
            result.changed_chains += restore.changed_chains
            result.deleted_chains += restore.deleted_chains
            return result
        if first:
            self._hook(netns)
        self._route_load_balancers(router, netns, set(load_balancer_ips(tenant)))
        for cluster_ip, number, endpoint_ip in udp_endpoints_removed(
            self._last.get(router), tenant
        ):
            self.tables.forget_udp_flows(netns, cluster_ip, number, endpoint_ip)
        self._last[router] = tenant
        self._router_of_ns[namespace] = router
        result = SyncResult(
            namespace,
            router,
            restore.changed_chains,
            restore.deleted_chains,
            time.monotonic() - started,
        )
        if not restore.empty:
            log.info(
                "synced %s (router %s): %d chains written, %d deleted in %.0f ms",
                namespace,
                router,
                result.changed_chains,
                result.deleted_chains,
                result.seconds * 1000,
            )
        return result

    def _restore(self, router: str, desired: Tables) -> tuple[Restore, bool]:
        """The router's STKB iptables chains made `desired`; whether this was the first
        sync of the router (after a start, a retry or a resync: stale chains read from
        the kernel go, and what the other backend wrote)."""
        netns = router_netns(router)
        applied = self._applied.get(router)
        existing = (
            {table: self.tables.chains(netns, table) for table in ("nat", "filter")}
            if applied is None
            else {}
        )
        if applied is None:
            self._leave_other_backend(netns, existing)
        restore = restore_input(desired, applied, existing)
        if not restore.empty:
            self.tables.restore(netns, restore.text)
        self._applied[router] = desired
        return restore, applied is None

    def _sync_changed(
        self,
        namespace: str,
        router: str,
        changed: ChangedServices,
        external_ip: str,
        allow_external_ips: bool,
    ) -> SyncResult:
        """Only these Services changed: their elements in the nftables table. With
        nothing applied to the router yet (or its external address changed) the scope
        is marked to be synced whole instead."""
        held = self._nft_applied.get(router)
        if held is None or held[1] != external_ip:
            with self._changed:
                self._mark_whole(namespace)
                self._changed.notify()
            return SyncResult(namespace, router)
        ports = {
            key: service_ports(obj, owned, allow_external_ips=allow_external_ips)
            if obj is not None
            else []
            for key, (obj, owned) in changed.items()
        }
        return self._sync_nftables(
            namespace, router, ports, complete=False, external_ip=external_ip
        )

    def _sync_nftables(
        self,
        namespace: str,
        router: str,
        services: Mapping[nftables.ServiceKey, list[ServicePort]],
        *,
        complete: bool,
        external_ip: str,
    ) -> SyncResult:
        """The router's nftables table: these Services' ports (`complete`: every Service
        of the scope, the others go; `external_ip`: the router's, where NodePorts enter)."""
        started = time.monotonic()
        if self.nft is None:
            raise StackubeError("the nftables backend needs nft")
        held = self._nft_applied.get(router)
        before = held[0] if held is not None else None
        # What the kernel was last given, kept through retries and lost tables (for the
        # UDP flows of endpoints that went, and to forget rules of ports that went).
        applied = self._nft_ports.setdefault(router, {})
        affected = set(applied) if complete else set(services)
        old_ports = [p for service in affected for p in applied.get(service, ())]
        previous = self._port_rules.setdefault(router, {})
        # A whole sync keeps only what it uses: nothing of ports gone meanwhile stays.
        memo = {} if complete else previous
        wanted = {
            service: {
                nftables.port_key(p): _rules_of(previous, memo, p, external_ip) for p in ports
            }
            for service, ports in services.items()
        }
        state = before or nftables.TableState(self.settings.service_cidr)
        router_elements = nftables.router_elements(external_ip)
        script = nftables.change(state, wanted, router_elements, complete)
        if before is None:
            script = nftables.full_script(state)
        netns = router_netns(router)
        self._nft_applied.pop(router, None)  # until applied: the state is ahead of the kernel
        if script:
            self.nft.apply(netns, script)
        if before is None:
            self._hook(netns, router)
        self._nft_applied[router] = (state, external_ip)
        self._router_of_ns[namespace] = router
        for service in affected:
            applied.pop(service, None)
        applied.update({service: ports for service, ports in services.items() if ports})
        self._port_rules[router] = memo
        for port in old_ports:
            if nftables.port_key(port) not in state.ports:
                memo.pop(nftables.port_key(port), None)
        self._route_load_balancers(router, netns, state.addresses())
        new_ports = [port for ports in services.values() for port in ports]
        for cluster_ip, number, endpoint_ip in udp_flows_removed(old_ports, new_ports):
            self.tables.forget_udp_flows(netns, cluster_ip, number, endpoint_ip)
        seconds = time.monotonic() - started
        if script:
            log.info(
                "synced %s (router %s): %s, %d nftables lines in %.0f ms",
                namespace,
                router,
                "table written whole"
                if before is None
                else ("every Service" if complete else f"{len(services)} Service(s)"),
                script.count("\n"),
                seconds * 1000,
            )
        return SyncResult(namespace, router, seconds=seconds)

    def _leave_other_backend(self, netns: str, existing: Mapping[str, set[str]]) -> None:
        """Before the first sync of a router: what the other backend wrote there goes
        (the jumps to the iptables chains in `existing`, so that the restore can delete
        the chains; or our nftables table)."""
        if self.nftables_backend:
            for table, chain, target in JUMPS:
                if target != NETWORK_POLICY and target in existing.get(table, set()):
                    self.tables.remove_jump(netns, table, chain, target)
        elif self.nft is not None:
            self.nft.delete_table(netns, nftables.FAMILY, nftables.TABLE)

    def _forget_router(self, router: str) -> None:
        """The router went (or is no longer its scope's): nothing of it is kept."""
        self._applied.pop(router, None)
        self._last.pop(router, None)
        self._lb_addresses.pop(router, None)
        self._nft_applied.pop(router, None)
        self._nft_ports.pop(router, None)
        self._port_rules.pop(router, None)

    def _route_load_balancers(self, router: str, netns: str, wanted: set[str]) -> None:
        """The router's load balancer addresses sit on its gateway port (so it answers
        ARP for them on the external network; Neutron's agent makes routers answer
        only for their own addresses); addresses no longer served are removed. After a
        start, every secondary non-/32 address there is taken for one of ours (Neutron
        puts a floating IP on the gateway port as a /32)."""
        had = self._lb_addresses.get(router)
        held = self.tables.load_balancer_addresses(netns) if had is None else {}
        if had is None:
            had = set(held)
        for address in sorted(wanted - had):
            self.tables.add_load_balancer_address(netns, address)
            log.info("router %s: serves load balancer address %s", router, address)
        for address in sorted(had - wanted):
            cidr = held.get(address) or self._lb_cidr(netns, address)
            if cidr:
                self.tables.delete_load_balancer_address(netns, cidr)
            log.info("router %s: no longer serves %s", router, address)
        self._lb_addresses[router] = wanted

    def _lb_cidr(self, netns: str, address: str) -> str | None:
        return self.tables.load_balancer_addresses(netns).get(address)

    def services_of(self, router_id: str) -> TenantServices:
        """What the iptables backend last applied to a router (KeyError if nothing)."""
        return self._last[router_id]

    def nftables_of(self, router_id: str) -> nftables.TableState:
        """What the nftables backend last applied to a router (KeyError if nothing)."""
        return self._nft_applied[router_id][0]

    def resync_all(self) -> None:
        """Forget what was applied: the next pass rewrites every tenant fully (used at
        start, and when a router's tables may have been rewritten behind our back)."""
        with self._changed:
            self._applied.clear()
            self._nft_applied.clear()
            every = {ns for index in self._objects.values() for ns in index.namespaces()}
            self._mark_whole(*{self._scope(ns) for ns in every})
            self._changed.notify()

    def housekeeping(self) -> None:
        """Periodic: retry tenants whose router was not here yet, and re-add our hooks
        where something removed them (e.g. a Neutron agent resync)."""
        with self._changed:
            if self._waiting:
                self._mark_whole(*self._waiting)
                self._changed.notify()
        with self._tables_lock:
            for router in list(self._applied):
                netns = router_netns(router)
                if not self.tables.namespace_exists(netns):
                    continue
                if self._hook(netns, router):
                    log.warning("router %s: a hook was missing; re-added", router)
                if self._nftables_lost(router, netns):
                    log.warning("router %s: our nftables table was gone; writing it again", router)
        self.sync_node_ports(force=True)

    def _nftables_lost(self, router: str, netns: str) -> bool:
        """(Under self._tables_lock.) With the nftables backend: whether our table went
        from the router (someone flushed the ruleset); then it is written again whole."""
        if not self.nftables_backend or self.nft is None or router not in self._nft_applied:
            return False
        if self.nft.table_exists(netns, nftables.FAMILY, nftables.TABLE):
            return False
        self._nft_applied.pop(router, None)
        self._applied.pop(router, None)
        with self._changed:
            self._mark_whole(*[ns for ns, r in self._router_of_ns.items() if r == router])
            self._changed.notify()
        return True

    def _hook(self, netns: str, router: str | None = None) -> bool:
        """Our jumps, the service range's and the load balancers' local routes; True if
        any was missing."""
        added = self.tables.ensure_local_route(netns, self.settings.service_cidr)
        for address in sorted(self._lb_addresses.get(router or "", set())):
            # Neutron's agent removes addresses it does not know when it re-plumbs the
            # gateway (an agent restart): put them back.
            added = self.tables.add_load_balancer_address(netns, address) or added
        for table, chain, target in JUMPS:
            if self.nftables_backend and target != NETWORK_POLICY:
                continue  # the nftables table has its own hooks
            added = self.tables.ensure_jump(netns, table, chain, target) or added
        return added
