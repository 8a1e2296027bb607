"""The Network reconciler: a Neutron network, subnet and router (with the external
gateway and an interface on the subnet) owned by the tenant's Keystone project, or an
adopted Neutron network used as it is. Level-based, like the Tenant reconciler:
lookups by derived name make every step safe to repeat after a crash.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, overload

from stackube.api.naming import (
    NODE_PORT_DEVICE_OWNER,
    POD_PORT_DEVICE_OWNER,
    SYSTEM_PROJECT_TAG,
    neutron_name,
)
from stackube.api.types import (
    LABEL_PROJECT_ID,
    NetworkSpec,
    SpecError,
    is_system_network,
    is_tenant_namespace,
    overlapping,
    parse_network,
)
from stackube.config import ControllerConfig
from stackube.controller.timeline import step
from stackube.errors import PermanentError, StackubeError, TemporaryError
from stackube.faults import checkpoint
from stackube.kube import resources as kube
from stackube.kube.client import ApiClient
from stackube.openstack import identity
from stackube.openstack import network as neutron
from stackube.openstack.cloud import Connection

SERVICES_RULE_DESCRIPTION = "stackube: Services reach pods through the tenant router"

log = logging.getLogger(__name__)

NETWORK_STEPS = ("neutron-network", "neutron-subnet", "neutron-router", "router-interface")
NETWORK_DELETE_STEPS = ("ports-deleted", "interface-removed", "router-deleted", "subnet-deleted")
# How long a pass waits in itself for the router's interface to be plumbed before it
# hands over to a retry, and its first poll interval (then x1.5, at most 1 s).
PLUMB_WAIT_SECONDS = 5.0
PLUMB_FIRST_POLL_SECONDS = 0.25
# Ports Neutron itself manages on a network and removes with it (or that we remove).
_NEUTRON_OWNED = ("network:router_interface", "network:dhcp")


@dataclass(frozen=True)
class NetworkResult:
    network_id: str
    subnet_id: str | None
    router_id: str | None
    recreated: bool = False
    # The router's IPv4 address on the external network ("" without one).
    router_external_ip: str = ""


@dataclass(frozen=True)
class _Made:
    """What a pass found or made in Neutron, before the router's plumbing is awaited."""

    project: str
    net: neutron.Network
    subnet: neutron.Subnet
    router: neutron.Router
    recreated: bool


def external_ipv4(router: neutron.Router) -> str:
    """The router's first IPv4 address on the external network ("" if none yet)."""
    return next((ip for ip in router.external_ips if ipaddress.ip_address(ip).version == 4), "")


def gateway_problem(ports: list[neutron.Port], router_id: str, subnet_id: str) -> str | None:
    """Why the router's interface on the subnet does not carry traffic yet (None: it
    does, Neutron says ACTIVE)."""
    interfaces = [
        p
        for p in ports
        if p.device_owner == "network:router_interface"
        and p.device_id == router_id
        and any(s == subnet_id for s, _ in p.fixed_ips)
    ]
    if not interfaces:
        return f"router {router_id} has no interface on subnet {subnet_id} yet"
    if interfaces[0].status != "ACTIVE":
        return (
            f"waiting for router {router_id}'s interface {interfaces[0].id} to come up "
            f"(Neutron says {interfaces[0].status}: the L3 and L2 agents plumb it)"
        )
    return None


class NetworkReconciler:
    def __init__(
        self,
        openstack: Callable[[], Connection],
        kube_api: ApiClient,
        config: ControllerConfig,
        neutron_concurrency: int = 4,
    ) -> None:
        self._openstack = openstack
        self.kube = kube_api
        self.config = config
        # Neutron (one API worker on the devbox) slows down for everyone when flooded:
        # passes and teardowns beyond this many wait their turn instead of timing out
        # together (measured: docs/benchmarks.md, 2026-12-04).
        self._slots = threading.BoundedSemaphore(neutron_concurrency)
        self._system_project: str | None = None
        self._system_guard = threading.Lock()

    @property
    def conn(self) -> Connection:
        return self._openstack()

    def project_id(self, namespace: str) -> str:
        """The Keystone project owning a namespace's Networks: its Tenant's (the
        namespace's label), or the system project for a namespace no Tenant owns.
        Raises TemporaryError for a namespace being deleted: nothing new (a network, a
        LoadBalancer's floating IP) is made in a project its Tenant's finalizer may be
        emptying."""
        ns = kube.get_namespace(self.kube, namespace)
        if ns is None:
            raise TemporaryError(f"namespace {namespace} does not exist (yet)", retry_after=5)
        if ns.terminating:
            raise TemporaryError(
                f"namespace {namespace} is being deleted: nothing new is made for it",
                retry_after=5,
            )
        project = ns.labels.get(LABEL_PROJECT_ID)
        if project:
            return project
        if is_tenant_namespace(ns.labels):
            raise TemporaryError(
                f"namespace {namespace} is a Tenant's but has no {LABEL_PROJECT_ID} label yet",
                retry_after=5,
            )
        return self.system_project()

    @overload
    def system_project(self) -> str: ...
    @overload
    def system_project(self, *, create: Literal[False]) -> str | None: ...

    def system_project(self, *, create: bool = True) -> str | None:
        """The system project (config `system-project`, in the controller's project
        domain), made on first use (unless `create` is False: None if there is none) and
        tagged so it is never taken for someone else's."""
        with self._system_guard:
            if self._system_project is None:
                domain = identity.find_domain_id(self.conn, self.config.project_domain_name)
                if domain is None:
                    raise PermanentError(
                        f"Keystone domain {self.config.project_domain_name!r} does not exist"
                    )
                name = self.config.system_project
                project = identity.find_project(self.conn, name, domain)
                if project is None and not create:
                    return None
                if project is None:
                    project = identity.create_project(
                        self.conn,
                        name,
                        domain,
                        description="Stackube system network (namespaces no Tenant owns)",
                        tags=(SYSTEM_PROJECT_TAG,),
                    )
                    log.info("created the system project %s (%s)", name, project.id)
                elif SYSTEM_PROJECT_TAG not in project.tags:
                    raise PermanentError(
                        f"Keystone project {name!r} exists and was not made by Stackube for "
                        "the system network: set system-project to another name"
                    )
                self._system_project = project.id
            return self._system_project

    def owner_if_known(self, namespace: str) -> str | None:
        """project_id() for a finalizer: None where it cannot say (namespace gone, or a
        Tenant's without its label), instead of waiting."""
        ns = kube.get_namespace(self.kube, namespace)
        if ns is None:
            return None
        project = ns.labels.get(LABEL_PROJECT_ID)
        if project or is_tenant_namespace(ns.labels):
            return project or None
        # Found, never made, while deleting; status ids suffice if Keystone cannot say.
        try:
            return self.system_project(create=False)
        except StackubeError as exc:
            log.warning("namespace %s: the system project is unknown (%s)", namespace, exc)
            return None

    def _check_range(self, spec: NetworkSpec, cidrs: list[str]) -> None:
        """Only the system network may use user-cidr: the nodes route it to the system
        network, so a pod of another network there could not be probed (and must not
        be mistaken for a system pod)."""
        if is_system_network(spec.namespace, spec.name):
            return
        for cidr in cidrs:
            if overlapping(cidr, self.config.user_cidr):
                raise PermanentError(
                    f"CIDR {cidr} overlaps the system network's user-cidr "
                    f"{self.config.user_cidr}, which the nodes route to: choose another range "
                    f"(a Tenant's default is {self.config.tenant_cidr})"
                )

    def _adopted(self, spec: NetworkSpec, network_id: str, project: str) -> NetworkResult:
        """An existing Neutron network, only if the namespace's tenant owns it: pods
        here would otherwise join another project's L2 (and its ports be billed there)."""
        net = neutron.get_network(self.conn, network_id)
        if net is None:
            raise PermanentError(f"adopted Neutron network {network_id} does not exist")
        if net.project_id != project:
            raise PermanentError(
                f"adopted Neutron network {network_id} belongs to project {net.project_id}, "
                f"not to this namespace's tenant (project {project})"
            )
        subnets = neutron.subnets_of(self.conn, net.id)
        self._check_range(spec, [s.cidr for s in subnets])
        return NetworkResult(net.id, subnets[0].id if subnets else None, None)

    def reconcile(self, body: Mapping[str, Any]) -> NetworkResult:
        """One pass: the Neutron network, subnet and router the Network asks for (made if
        missing), once its router's interface is up. Raises TemporaryError (Neutron or
        Kubernetes unreachable, the interface not up yet, the namespace being deleted)
        or PermanentError (invalid spec, a range or network not allowed)."""
        try:
            spec = parse_network(body)
        except SpecError as exc:
            raise PermanentError(str(exc)) from exc
        # Before a Neutron slot: a pass for a namespace being deleted waits for none
        # (holding the Network's lock, which its Tenant's finalizer needs).
        with step("project"):
            project = self.project_id(spec.namespace)
        with self._neutron_slot():
            made = self._reconcile(spec, project, body.get("status") or {})
        return made if isinstance(made, NetworkResult) else self._plumbed(made)

    def finalize(self, body: Mapping[str, Any]) -> None:
        """Tear down what the Network made in Neutron, in a Neutron slot like a pass."""
        with self._neutron_slot():
            self._finalize(body)

    @contextlib.contextmanager
    def _neutron_slot(self) -> Iterator[None]:
        """One of the slots that bound the calls in flight to Neutron (its wait timed)."""
        with step("neutron-slot"):
            self._slots.acquire()
        try:
            yield
        finally:
            self._slots.release()

    def _reconcile(
        self, spec: NetworkSpec, project: str, status: Mapping[str, Any]
    ) -> NetworkResult | _Made:
        """Find or make what the Network needs in Neutron (an adopted network: only
        checked, the result final)."""
        if spec.network_id is not None:
            return self._adopted(spec, spec.network_id, project)
        if spec.cidr is None:  # parse_network requires one of the two
            raise PermanentError("spec.cidr is required unless spec.networkID adopts a network")
        self._check_range(spec, [spec.cidr])
        name = neutron_name(spec.namespace, spec.name)

        # The router does not depend on the network: make both side by side (Neutron's
        # router with its external gateway is the slowest single call).
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="neutron") as pool:
            # (in a copy of this context: the crash-point tests target this object)
            in_context = contextvars.copy_context().run
            routed = pool.submit(in_context, self._router, name, project, status)
            net, subnet, recreated = self._network_and_subnet(spec, name, project, status)
            router = routed.result()
        with step("router-interface"):
            if subnet.id not in neutron.router_interface_subnets(self.conn, router.id):
                neutron.add_router_interface(self.conn, router.id, subnet.id)
                checkpoint("router-interface")
        return _Made(project, net, subnet, router, recreated)

    def _plumbed(self, made: _Made) -> NetworkResult:
        """Wait (in this pass, outside the Neutron slot) until the router's interface on
        the subnet is ACTIVE: Active means pods here reach their gateway (and Services,
        DNS through it), and the L3 and L2 agents plumb it a second or a few after the
        API calls. Polls every 0.25 s, slowing to 1 s, for PLUMB_WAIT_SECONDS; then
        raises TemporaryError (the next pass looks again)."""
        router, net, subnet = made.router, made.net, made.subnet
        delay, deadline = PLUMB_FIRST_POLL_SECONDS, time.monotonic() + PLUMB_WAIT_SECONDS
        with step("router-plumbed"):
            while True:
                ports = neutron.router_ports(self.conn, router.id, net.id)
                problem = gateway_problem(ports, router.id, subnet.id)
                if problem is None:
                    break
                if time.monotonic() + delay > deadline:
                    raise TemporaryError(problem, retry_after=1)
                time.sleep(delay)
                delay = min(delay * 1.5, 1.0)
        if subnet.gateway_ip:
            # Service traffic reaches pods from the router (stackube-proxy masquerades
            # it to the gateway address); the default group admits only its members.
            with step("security-group-rule"):
                neutron.allow_ingress_from(
                    self.conn, made.project, f"{subnet.gateway_ip}/32", SERVICES_RULE_DESCRIPTION
                )
        return NetworkResult(net.id, subnet.id, router.id, made.recreated, external_ipv4(router))

    def _network_and_subnet(
        self, spec: NetworkSpec, name: str, project: str, status: Mapping[str, Any]
    ) -> tuple[neutron.Network, neutron.Subnet, bool]:
        known = status.get("networkID")
        with step("network-find"):
            nets = neutron.find_networks(self.conn, name, project)
        recreated = bool(known) and known not in {n.id for n in nets}
        if nets:
            net = next((n for n in nets if n.id == known), nets[0])
        else:
            description = f"Stackube Network {spec.namespace}/{spec.name}"
            with step("network-create"):
                net = neutron.create_network(self.conn, name, project, description)
            if recreated:
                log.warning(
                    "network %s/%s: Neutron network %s was gone; made %s",
                    spec.namespace,
                    spec.name,
                    known,
                    net.id,
                )
            checkpoint("neutron-network")
        with step("subnet-find"):
            subnets = neutron.subnets_of(self.conn, net.id)
        subnet = next((s for s in subnets if s.name == name), None)
        if subnet is None:
            if spec.cidr is None:
                raise PermanentError("spec.cidr is required unless spec.networkID adopts a network")
            with step("subnet-create"):
                subnet = neutron.create_subnet(
                    self.conn, name, net.id, project, cidr=spec.cidr, gateway_ip=spec.gateway
                )
            checkpoint("neutron-subnet")
        return net, subnet, recreated

    def _router(self, name: str, project: str, status: Mapping[str, Any]) -> neutron.Router:
        with step("router-find"):
            routers = neutron.find_routers(self.conn, name, project)
        router = next((r for r in routers if r.id == status.get("routerID")), None)
        router = router or (routers[0] if routers else None)
        if router is None:
            with step("router-create"):
                router = neutron.create_router(self.conn, name, project, self.config.ext_net_id)
            checkpoint("neutron-router")
        elif self.config.ext_net_id and router.external_network_id != self.config.ext_net_id:
            neutron.set_router_gateway(self.conn, router.id, self.config.ext_net_id)
            router = neutron.get_router(self.conn, router.id) or router  # its new address
        return router

    def _finalize(self, body: Mapping[str, Any]) -> None:
        """Remove what we made in Neutron: pod ports, router interface, router, subnet,
        network. Ports we did not make block it (reported, retried). Adopted networks
        are left as they are."""
        meta = body["metadata"]
        spec_body = body.get("spec") or {}
        if spec_body.get("networkID"):
            return
        status = body.get("status") or {}
        namespace, name = str(meta["namespace"]), str(meta["name"])
        neutron_names = neutron_name(namespace, name)
        with step("project"):
            project = self.owner_if_known(namespace)

        net_ids = {status["networkID"]} if status.get("networkID") else set()
        router_ids = {status["routerID"]} if status.get("routerID") else set()
        if project:
            with step("find"):
                net_ids |= {n.id for n in neutron.find_networks(self.conn, neutron_names, project)}
                router_ids |= {
                    r.id for r in neutron.find_routers(self.conn, neutron_names, project)
                }

        for net_id in net_ids:
            foreign = []
            with step("ports-delete"):
                for port in neutron.ports_on(self.conn, net_id):
                    owner = port.device_owner
                    if owner.startswith((POD_PORT_DEVICE_OWNER, NODE_PORT_DEVICE_OWNER)):
                        neutron.delete_port(self.conn, port.id)
                    elif not owner.startswith(_NEUTRON_OWNED):
                        foreign.append(f"{port.id} ({owner or 'no owner'})")
            if foreign:
                raise TemporaryError(
                    f"Neutron network {net_id} still has ports Stackube did not make: "
                    + ", ".join(foreign),
                    retry_after=10,
                )
        checkpoint("ports-deleted")
        for router_id in router_ids:
            with step("router-read"):
                router = neutron.get_router(self.conn, router_id)
            if router is None:
                continue
            with step("router-interface-remove"):
                for port_id in neutron.router_interface_ports(self.conn, router_id):
                    neutron.remove_router_interface_port(self.conn, router_id, port_id)
            checkpoint("interface-removed")
            with step("router-delete"):
                neutron.delete_router(self.conn, router_id)
            checkpoint("router-deleted")
        for net_id in net_ids:
            with step("subnet-delete"):
                for subnet in neutron.subnets_of(self.conn, net_id):
                    neutron.delete_subnet(self.conn, subnet.id)
            checkpoint("subnet-deleted")
            with step("network-delete"):
                neutron.delete_network(self.conn, net_id)
            log.info("network %s/%s: deleted Neutron network %s", namespace, name, net_id)
