"""stackube-cni-daemon's logic: ADD, DEL, CHECK, STATUS and GC for the pods of this
node, warm port pools, and recovery after a restart.

Every step that changes Neutron or the host is preceded by a journal entry
(`attachments.py`), so a daemon killed at any point can finish or undo the work on
the next call for that sandbox or at start-up. Calls for one sandbox are serialized;
calls for different sandboxes run in parallel.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stackube.api.naming import NODE_PORT_DEVICE_OWNER, POD_PORT_DEVICE_OWNER, node_port_name
from stackube.api.objects import ObjectIndex
from stackube.api.types import DNS_NAMESPACE, SYSTEM_NAMESPACE, is_system_network
from stackube.cni import spec
from stackube.cni.attachments import Attachment, AttachmentStore, Phase, attachment_key
from stackube.cni.drivers import PlugDriver, parked_ifname
from stackube.cni.hostports import (
    KUBELET_FIREWALL,
    LOOPBACK_JUMPS,
    PortMapping,
    frontend,
    host_port_relays,
    input_chain,
    parse_port_mappings,
    render_loopback_accepts,
)
from stackube.cni.netpol import LocalPod
from stackube.cni.pool import POOL_DEVICE_ID, PortPools, ReadyPort, pool_port_name
from stackube.cni.portforward import SandboxForwards
from stackube.cni.probe_gate import PortGate
from stackube.cni.probe_relay import CONNECT_TIMEOUT, Upstream
from stackube.cni.probes import chain_name, liveness_only_tcp_ports, probe_ports, render_chain
from stackube.cni.recovery import (
    HostPort,
    Repair,
    SandboxInterface,
    in_scope,
    node_marker,
    plan_recovery,
    plan_repairs,
    split_to_size,
)
from stackube.cni.result import PodAddressing, dns_search, host_ifname, port_name, render
from stackube.cni.tenancy import (
    NETWORK_PATIENCE_SECONDS,
    ExpectedInterface,
    NetworkRef,
    TenantNetwork,
    check_problems,
    choose_network,
    cidr_address,
    dns_pod_tenant,
    live_network_refs,
    present_network_ids,
    resolve_patiently,
    system_network_for,
)
from stackube.errors import NotFoundError, StackubeError, TemporaryError
from stackube.faults import checkpoint
from stackube.host import cri, iptables, netlink
from stackube.host.portrelay import Backend, Frontend
from stackube.host.runsc import Runsc
from stackube.kube import pods as kube_pods
from stackube.kube import resources as kube
from stackube.kube.client import ApiClient
from stackube.openstack import network as neutron
from stackube.openstack.cloud import Connection

log = logging.getLogger("stackube.cni")

CHECK_FAILED = 102
PORT_NOT_ACTIVE = 103
HOST_PORT_UNAVAILABLE = 104
# The pod condition the repair loop keeps (a pod that lists it in spec.readinessGates
# leaves its Services' endpoints while its network is broken).
NETWORK_READY_CONDITION = "stackube.kubernetes.io/network-ready"
EVENT_COMPONENT = "stackube-cni-daemon"
REPAIR_WAIT = 15.0  # seconds a repair waits for ACTIVE before the next pass takes over


class Relays(Protocol):
    """The hostPort relays (stackube.host.portrelay.PortRelay)."""

    def apply(self, wanted: Mapping[Frontend, Backend]) -> dict[Frontend, str]: ...


@dataclass(frozen=True)
class DaemonSettings:
    node: str
    pool_size: int = 3
    pool_eager: bool = False
    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"
    port_active_timeout: float = 60.0
    resync_seconds: float = 5.0
    pool_concurrency: int = 4
    binding_host: str = ""  # Neutron's name for this host; default: `node`
    cri_endpoint: str = cri.DEFAULT_ENDPOINT
    repair_seconds: float = 5.0
    node_link: str = ""  # the host's link on the system network ("": none)
    network_wait_seconds: float = NETWORK_PATIENCE_SECONDS  # an ADD's wait for its Network

    @property
    def host(self) -> str:
        """binding:host_id of our ports: the host Neutron's agent here reports."""
        return self.binding_host or self.node


class CniDaemon:
    def __init__(
        self,
        settings: DaemonSettings,
        conn: Callable[[], Connection],
        kube_api: ApiClient,
        driver: PlugDriver,
        store: AttachmentStore,
        *,
        hostport_relay: Relays | None = None,
        runsc: Runsc | None = None,
    ) -> None:
        self.settings = settings
        self.conn = conn
        self.kube = kube_api
        self.driver = driver
        self.store = store
        self.pools = PortPools(settings.pool_size)
        self._networks: dict[str, TenantNetwork] = {}
        self._sandbox_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._renames: queue.Queue[tuple[str, str]] = queue.Queue()  # (container, ifname)
        self._fillers = ThreadPoolExecutor(
            max(1, settings.pool_concurrency), thread_name_prefix="pool-fill"
        )
        self._kick = threading.Event()
        # Namespaces with ADDs in progress: their Network's pool waits (an ADD's own port
        # goes first: the Neutron agent wires ports one after another).
        self._adding: collections.Counter[str] = collections.Counter()
        self.stopping = threading.Event()
        self._network_objects = ObjectIndex()
        self._network_changed = threading.Condition()  # ADDs waiting for their Network
        # The Networks watch's "listed everything" event (until then: ask the API).
        self.networks_watched = threading.Event()
        self.ready = threading.Event()
        self.marker = node_marker(settings.node)
        self._reported: dict[str, str] = {}  # attachment key -> the trouble last reported
        # Probes: pod UID -> the ports its probes use (from the node's pod watch), and
        # (pod address, port) -> the pod's (netns, sandbox id) for the relay; its port.
        self._probe_ports: dict[str, set[int]] = {}
        self._tcp_socket_ports: dict[str, set[int]] = {}  # pod UID -> its tcpSocket ones
        self._lenient_ports: dict[str, set[int]] = {}  # ... those only liveness probes use
        self._probe_targets: dict[tuple[str, int], tuple[str, str]] = {}
        self._probes_applied = ""
        self._refused: set[str] = set()  # pod addresses the node routes itself
        self._probe_kick = threading.Event()
        # tcpSocket-probed targets are redirected only while open in their pods.
        self.gate = PortGate(on_change=self._probe_kick.set)
        self._probe_chain = chain_name(settings.node)
        # Taking an address for a pod (pool or new port) and journaling it, as one step:
        # two ADDs at once never end up with one address (probes name pods by it).
        self._claims = threading.Lock()
        # The /32 routes this daemon made (they outlive it: kept beside the journal).
        self._routes_file = store.directory.parent / "probe-routes.json"
        self.relay_port = 0
        # The system network's Neutron id once its Network is Active (node link, probes).
        self.system_network_id: str | None = None
        self.node_link_ip = ""  # this node's address on the system network, once made
        # hostPorts of this node's system-network pods (None: not served, e.g. in tests
        # that run several daemons on one host).
        self.hostport_relay = hostport_relay
        # gVisor pods (None: runc only): probes and port-forward reach them through runsc.
        self.runsc = runsc
        self.forwards = SandboxForwards(self.sandbox_upstream) if runsc is not None else None
        self._forward_problems: set[str] = set()
        self._hostports_lock = threading.Lock()
        self._hostports_chain = input_chain(settings.node)
        self._hostports_applied = ""
        self._hostports_jumped = False  # our loopback jumps were put in place once

    # ---- the socket's entry point --------------------------------------------------------
    def handle(self, message: Mapping[str, Any]) -> dict[str, Any]:
        """One request from `kubestack` -> {"result": ...} or {"error": CNI error}."""
        started = time.monotonic()
        command = str(message.get("command", ""))
        what = command
        try:
            request = spec.parse_request(*spec.from_message(message))
            what = _describe(request)
            result = self._dispatch(request)
        except spec.CniError as exc:
            log.warning("%s failed: %s (code %s) %s", what, exc.msg, exc.code, exc.details)
            return {"error": exc.to_json()}
        except TemporaryError as exc:
            log.warning("%s failed, the runtime will retry: %s", what, exc)
            return {"error": spec.CniError(spec.TRY_AGAIN_LATER, str(exc)).to_json()}
        except (StackubeError, OSError) as exc:
            log.error("%s failed: %s", what, exc)
            return {"error": spec.CniError(spec.IO_FAILURE, str(exc)).to_json()}
        except Exception as exc:  # a bug: still a CNI error, with the trace in our log
            log.exception("%s failed unexpectedly", what)
            return {"error": spec.CniError(spec.IO_FAILURE, f"internal error: {exc!r}").to_json()}
        log.info("%s done in %.0f ms", what, (time.monotonic() - started) * 1000)
        return {"result": result}

    def _dispatch(self, request: spec.Request) -> dict[str, Any]:
        if request.command == "ADD":
            return self.add(request)
        if request.command == "DEL":
            self.delete(request)
            return {}
        if request.command == "CHECK":
            self.check(request)
            return {}
        if request.command == "GC":
            self.gc(request)
            return {}
        if request.command == "STATUS":
            if not self.ready.is_set():
                raise spec.CniError(spec.PLUGIN_NOT_AVAILABLE, "the CNI daemon is still recovering")
            return {}
        raise spec.CniError(spec.INVALID_ENVIRONMENT, f"unsupported command {request.command}")

    @contextmanager
    def _sandbox(self, container_id: str, ifname: str) -> Iterator[None]:
        key = attachment_key(container_id, ifname)
        with self._guard:
            lock = self._sandbox_locks.setdefault(key, threading.Lock())
        with lock:
            yield

    # ---- tenant networks -----------------------------------------------------------------
    def _resolve(self, ref: NetworkRef) -> TenantNetwork:
        cached = self._networks.get(ref.network_id)
        if cached is not None and (not ref.subnet_id or cached.subnet_id == ref.subnet_id):
            return cached
        conn = self.conn()
        net = neutron.get_network(conn, ref.network_id)
        if net is None:
            raise spec.CniError(
                spec.TRY_AGAIN_LATER,
                f"Network {ref.namespace}/{ref.name}: Neutron network {ref.network_id} is missing",
            )
        subnets = neutron.subnets_of(conn, net.id)
        subnet = next((s for s in subnets if s.id == ref.subnet_id), None) or next(
            (s for s in subnets if ":" not in s.cidr), None
        )
        if subnet is None:
            raise spec.CniError(
                spec.TRY_AGAIN_LATER, f"Neutron network {net.id} has no IPv4 subnet yet"
            )
        found = TenantNetwork(
            net.id, subnet.id, subnet.cidr, subnet.gateway_ip, net.mtu, net.project_id
        )
        self._networks[net.id] = found
        return found

    def on_network(
        self, _kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        """Fed by a watch of Networks: ADDs and pool upkeep read this, not the API."""
        with self._guard:
            self._network_objects.apply(old, new)
        with self._network_changed:
            self._network_changed.notify_all()
        self._kick.set()

    def _wait_network_change(self, seconds: float) -> None:
        with self._network_changed:
            self._network_changed.wait(seconds)

    def _cached_networks(self, namespace: str | None = None) -> list[dict[str, Any]]:
        with self._guard:
            return self._network_objects.in_namespace(namespace)

    def _networks_now(self) -> list[dict[str, Any]]:
        """Every Network: from the watch once it has listed them, else from the API."""
        if self.networks_watched.is_set():
            return self._cached_networks()
        return kube.list_all_networks(self.kube)

    def network_namespace(self, namespace: str, pod: str) -> str:
        """The namespace whose Network a pod joins: its own, except for a tenant's DNS
        server (DNS_NAMESPACE, where only the controller writes), which joins the
        network of the tenant its label names. One pod read per such ADD or CHECK."""
        if namespace != DNS_NAMESPACE:
            return namespace
        return dns_pod_tenant(namespace, pod, kube.pod_labels(self.kube, namespace, pod))

    def tenant_network(self, namespace: str) -> TenantNetwork:
        """From the watched Networks; a namespace they do not (yet) show as usable, or
        show without any, is read from the API (a Network made a moment ago). Only a
        namespace that has no Network in the API and that no Tenant owns uses the system
        network."""
        if self.networks_watched.is_set():
            cached = self._cached_networks(namespace)
            if cached:
                try:
                    return self._resolve(choose_network(namespace, cached))
                except spec.CniError:
                    pass
        items = kube.list_networks(self.kube, namespace)
        if items:
            return self._resolve(choose_network(namespace, items))
        found = kube.get_namespace(self.kube, namespace)
        system = self._cached_networks(SYSTEM_NAMESPACE) if self.networks_watched.is_set() else []
        return self._resolve(
            system_network_for(
                namespace,
                found.labels if found else None,
                system or kube.list_networks(self.kube, SYSTEM_NAMESPACE),
            )
        )

    # ---- ADD -----------------------------------------------------------------------------
    def add(self, request: spec.Request) -> dict[str, Any]:
        pod = request.pod
        if pod is None:  # parse_request insists for ADD; kept for the type checker
            raise spec.CniError(spec.INVALID_ENVIRONMENT, "CNI_ARGS must name the pod")
        mappings = parse_port_mappings(request.config)
        with self._sandbox(request.container_id, request.ifname):
            namespace = self.network_namespace(pod.namespace, pod.name)
            with self._adding_in(namespace):
                return self._add(request, pod, namespace, mappings)

    @contextmanager
    def _adding_in(self, namespace: str) -> Iterator[None]:
        """An ADD for a pod of `namespace`'s Network is in progress (its pool waits);
        at its end the pools are looked at again."""
        with self._guard:
            self._adding[namespace] += 1
        try:
            yield
        finally:
            with self._guard:
                self._adding[namespace] -= 1
                if self._adding[namespace] <= 0:
                    del self._adding[namespace]
            self._kick.set()

    def _add(
        self,
        request: spec.Request,
        pod: spec.PodRef,
        namespace: str,
        mappings: tuple[PortMapping, ...],
    ) -> dict[str, Any]:
        network = resolve_patiently(
            lambda: self.tenant_network(namespace),
            self._wait_network_change,
            self.settings.network_wait_seconds,
        )
        if mappings:
            self._check_hostports(network, mappings)
        attachment = self.store.get(request.container_id, request.ifname)
        ready: ReadyPort | None = None
        if attachment is not None and attachment.network_id != network.network_id:
            log.info("%s: was on network %s; starting over", attachment.key, attachment.network_id)
            self._release(attachment, request.netns)
            attachment = None
        if attachment is None:
            # A fresh sandbox: one journal write, with the pool's port if it has one.
            self._track_pool(network.network_id, pod.namespace)
            with self._claims:
                ready = self._take_pooled(network.network_id)
                attachment = Attachment(
                    request.container_id,
                    request.ifname,
                    request.netns,
                    pod.namespace,
                    pod.name,
                    pod.uid,
                    network.network_id,
                    port_id=ready.id if ready else "",
                    phase=Phase.CLAIMED if ready else Phase.NEW,
                    mac=ready.mac if ready else "",
                    ip=ready.ip if ready else "",
                    port_mappings=mappings,
                )
                self.store.put(attachment)
        if ready is not None:
            checkpoint("cni-claimed")
            port, unnamed = ready, True
        else:
            attachment, port, unnamed = self._port_for(attachment, network)
        address = cidr_address(port.ip, network.cidr)
        netlink.move_into_namespace(
            parked_ifname(port.id),
            request.netns,
            ifname=request.ifname,
            mtu=network.mtu,
            address=address,
            gateway=network.gateway,
        )
        checkpoint("cni-moved")
        done = Phase.PLUGGED if unnamed or attachment.phase == Phase.PLUGGED else Phase.RECORDED
        if (
            attachment.phase != Phase.RECORDED
            or not attachment.ip
            or attachment.port_mappings != mappings
        ):
            attachment = attachment.advanced(
                done if attachment.phase != Phase.RECORDED else Phase.RECORDED,
                netns=request.netns,
                mac=port.mac,
                ip=port.ip,
                port_mappings=mappings,
            )
            self.store.put(attachment)
        if mappings:
            self._open_hostports(attachment)
        if attachment.phase == Phase.PLUGGED:
            self._renames.put((attachment.container_id, attachment.ifname))
        self._probe_kick.set()
        log.info(
            "ADD %s/%s: port %s %s on %s%s",
            pod.namespace,
            pod.name,
            port.id,
            address,
            network.network_id,
            " (from the pool)" if unnamed else "",
        )
        addressing = PodAddressing(
            port_id=port.id,
            mac=port.mac,
            ip=port.ip,
            cidr=network.cidr,
            gateway=network.gateway,
            mtu=network.mtu,
            dns_servers=self.settings.cluster_dns,
            dns_search=dns_search(pod.namespace, self.settings.cluster_domain),
        )
        return render(addressing, request.ifname, request.netns, request.cni_version)

    def _port_for(
        self, attachment: Attachment, network: TenantNetwork
    ) -> tuple[Attachment, ReadyPort, bool]:
        """The attachment's port, plugged with its pod end parked or already in the pod:
        the journaled one (a retried or interrupted ADD), else a pooled one, else a new
        one (or the one an interrupted ADD made: it carries the pod's device id). The
        flag says whether Neutron still has to name the port after the pod."""
        conn = self.conn()
        if attachment.port_id:
            port = neutron.get_pod_port(conn, attachment.port_id)
            if port is not None:
                if not self.driver.is_plugged(port.id, port.network_id):
                    self._plug(port)
                self._wait_active(port.id, port.network_id)
                # A pool port claimed before a crash still has the pool's name: rename it.
                unnamed = port.device_id != attachment.device_id
                return attachment, self._ready(port, network), unnamed
            log.warning(
                "%s: port %s is gone from Neutron; getting another",
                attachment.key,
                attachment.port_id,
            )
            self.driver.unplug(attachment.port_id)
            attachment = attachment.advanced(Phase.NEW, port_id="", mac="", ip="")
            self.store.put(attachment)

        self._track_pool(network.network_id, attachment.namespace)
        with self._claims:
            pooled = self._take_pooled(network.network_id)
            if pooled is not None:
                attachment = attachment.advanced(
                    Phase.CLAIMED, port_id=pooled.id, mac=pooled.mac, ip=pooled.ip
                )
                self.store.put(attachment)
        if pooled is not None:
            checkpoint("cni-claimed")
            return attachment, pooled, True

        made = self._our_ports(device_id=attachment.device_id, network_id=network.network_id)
        name = port_name(attachment.namespace, attachment.pod)
        for _ in range(3):
            if made:
                port = made.pop(0)
            else:
                port = self._create_port(network, name, attachment.device_id)
                checkpoint("cni-port-created")
            address = port.address_on(network.subnet_id) or ""
            with self._claims:
                clash = address in self._node_addresses()
                if not clash:
                    attachment = attachment.advanced(
                        Phase.CLAIMED, port_id=port.id, mac=port.mac, ip=address
                    )
                    self.store.put(attachment)
                    break
            log.info("port %s has %s, an address in use here: deleting it", port.id, address)
            neutron.delete_port(self.conn(), port.id)
        else:
            raise TemporaryError(
                f"Neutron keeps handing out addresses in use here ({network.cidr})"
            )
        self._plug(port)
        checkpoint("cni-plugged")
        self._wait_active(port.id, port.network_id)
        return attachment, self._ready(port, network), False

    def _our_ports(
        self, *, device_id: str | None = None, network_id: str | None = None
    ) -> list[neutron.Port]:
        """Our device owner, bound to this host, and this daemon's (node identity)."""
        return [
            p
            for p in self._host_ports(device_id=device_id, network_id=network_id)
            if in_scope(p.description, self.settings.node, self.settings.host)
        ]

    def _host_ports(
        self, *, device_id: str | None = None, network_id: str | None = None
    ) -> list[neutron.Port]:
        """Our device owner and bound to this host, whichever daemon's."""
        return neutron.pod_ports(
            self.conn(),
            device_owner=POD_PORT_DEVICE_OWNER,
            host=self.settings.host,
            device_id=device_id,
            network_id=network_id,
        )

    def _create_port(
        self,
        network: TenantNetwork,
        name: str,
        device_id: str,
        *,
        mac: str | None = None,
        ip: str | None = None,
    ) -> neutron.Port:
        """A bound port of ours. An address Neutron hands out that a pod of this node
        still uses (its port was deleted behind our back, a repair is due) is given back
        and another one taken: a live pod's address never goes to another pod."""
        for _ in range(3):
            port = neutron.create_pod_port(
                self.conn(),
                network_id=network.network_id,
                project_id=network.project_id,
                name=name,
                device_id=device_id,
                device_owner=POD_PORT_DEVICE_OWNER,
                host=self.settings.host,
                description=self.marker,
                mac=mac,
                fixed_ip=(network.subnet_id, ip) if ip else None,
            )
            if ip or port.address_on(network.subnet_id) not in self._node_addresses():
                return port
            log.warning(
                "port %s got %s, the address of a pod on this node (of another tenant, or "
                "one whose port is being repaired): taking another",
                port.id,
                port.address_on(network.subnet_id),
            )
            neutron.delete_port(self.conn(), port.id)
        raise TemporaryError(f"Neutron keeps handing out addresses of pods on {network.cidr}")

    def _node_addresses(self) -> set[str]:
        """Addresses of the pods on this node, every tenant's: unique here, so that a
        probe of `podIP:port` names one pod (probes.py)."""
        return {a.ip for a in self.store.all() if a.ip}

    def _take_pooled(self, network_id: str) -> ReadyPort | None:
        """A pool port whose address no pod on this node has (one that clashes is
        deleted in the background)."""
        taken = self._node_addresses()
        while (ready := self.pools.take(network_id)) is not None and ready.ip in taken:
            log.info("pool port %s has %s, an address in use here: deleting it", ready.id, ready.ip)
            self._fillers.submit(self._discard, ready.id)
        return ready

    def _plug(self, port: neutron.Port) -> None:
        network = self._networks.get(port.network_id)
        mtu = network.mtu if network else 1450
        self.driver.plug(
            port_id=port.id,
            network_id=port.network_id,
            mac=port.mac,
            mtu=mtu,
            device_id=port.device_id,
        )

    def _ready(self, port: neutron.Port, network: TenantNetwork) -> ReadyPort:
        ip = port.address_on(network.subnet_id)
        if ip is None:
            raise spec.CniError(
                spec.IO_FAILURE, f"port {port.id} has no address on {network.subnet_id}"
            )
        return ReadyPort(port.id, port.network_id, port.mac, ip)

    def _wait_active(self, port_id: str, network_id: str, *, repairing: bool = False) -> None:
        """Until Neutron says ACTIVE (the agent has wired it, security groups included)
        and the host end is attached; bounded. A repair gives up as soon as the host end
        is gone (its next pass plugs it again) rather than wait out the bound."""
        # A repair holds the sandbox's lock: it waits less, and the next pass looks again.
        bound = min(REPAIR_WAIT, self.settings.port_active_timeout) if repairing else None
        timeout = bound or self.settings.port_active_timeout
        deadline = time.monotonic() + timeout
        delay = 0.1
        status = "unknown"
        while True:
            port = neutron.get_pod_port(self.conn(), port_id)
            if port is None:
                raise TemporaryError(f"port {port_id} was deleted while being wired")
            status = port.status
            if status == "ACTIVE" and self.driver.is_plugged(port_id, network_id):
                return
            if repairing and host_ifname(port_id) not in netlink.link_names():
                raise TemporaryError(f"the host end of port {port_id} went away while wiring")
            if time.monotonic() >= deadline:
                raise spec.CniError(
                    PORT_NOT_ACTIVE,
                    f"port {port_id} is not ACTIVE after {timeout:.0f} s",
                    f"status {status}; is the Neutron agent on {self.settings.host} alive?",
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    # ---- DEL -----------------------------------------------------------------------------
    # ---- hostPorts (system network only) --------------------------------------------------
    def _check_hostports(self, network: TenantNetwork, mappings: tuple[PortMapping, ...]) -> None:
        if self.hostport_relay is None:
            raise spec.CniError(
                spec.INVALID_NETWORK_CONFIG,
                "this CNI daemon serves no hostPorts (started without them)",
            )
        if self.system_network_id is None:
            raise TemporaryError("hostPorts wait for the node's link to the system network")
        if network.network_id != self.system_network_id:
            raise spec.CniError(
                spec.INVALID_NETWORK_CONFIG,
                f"hostPort {mappings[0]}: hostPorts are served only for pods on the system "
                "network (a tenant's network is not the node's to reach)",
            )

    def _open_hostports(self, attachment: Attachment) -> None:
        """Relays the attachment's hostPorts; raises CniError if one cannot be opened
        (the runtime then deletes the sandbox, which closes the others)."""
        failures = self.sync_hostports()
        mine = {frontend(m): m for m in attachment.port_mappings}
        refused = [f"{mine[f]}: {why}" for f, why in sorted(failures.items()) if f in mine]
        if refused:
            raise spec.CniError(HOST_PORT_UNAVAILABLE, "hostPort not available", "; ".join(refused))
        log.info(
            "%s/%s: hostPorts %s",
            attachment.namespace,
            attachment.pod,
            ", ".join(str(m) for m in attachment.port_mappings),
        )

    def sync_hostports(self) -> dict[Frontend, str]:
        """Makes the hostPort relays those of the journal's plugged pods; returns the
        frontends that could not be opened, with the reason."""
        if self.hostport_relay is None:
            return {}
        with self._hostports_lock:
            pods = [
                (a.ip, a.port_mappings)
                for a in self.store.all()
                if a.port_mappings and a.ip and a.phase in (Phase.PLUGGED, Phase.RECORDED)
            ]
            failures = self.hostport_relay.apply(host_port_relays(pods))
            text = render_loopback_accepts(
                (m for _, mappings in pods for m in mappings), self._hostports_chain
            )
            if text != self._hostports_applied:
                iptables.restore("", text)
                self._hostports_applied = text
            if pods or self._hostports_jumped:
                # Every pass: the kubelet may have put KUBE-FIREWALL back in front.
                for builtin, match in LOOPBACK_JUMPS:
                    if iptables.ensure_jump_ahead_of(
                        "",
                        "filter",
                        builtin,
                        self._hostports_chain,
                        match=match,
                        ahead_of=KUBELET_FIREWALL,
                    ):
                        log.info("hostPorts: the %s jump put ahead of the kubelet's", builtin)
                self._hostports_jumped = True
        for frontend_, why in sorted(failures.items()):
            log.warning("hostPort %s cannot be served: %s", frontend_, why)
        return failures

    def delete(self, request: spec.Request) -> None:
        with self._sandbox(request.container_id, request.ifname):
            attachment = self.store.get(request.container_id, request.ifname)
            if attachment is not None:
                self._release(attachment, request.netns)
                return
            pod = request.pod
            if pod is None or not pod.uid:
                return  # nothing of ours: DEL succeeds
            # Not journaled (e.g. the journal was lost): this pod's ports on this node that
            # no other sandbox holds.
            held = {a.port_id for a in self.store.all()}
            for port in self._our_ports(device_id=pod.uid):
                if port.id not in held and port.name == port_name(pod.namespace, pod.name):
                    self.driver.unplug(port.id)
                    neutron.delete_port(self.conn(), port.id)
                    log.info(
                        "DEL %s/%s: deleted unjournaled port %s", pod.namespace, pod.name, port.id
                    )

    def _release(self, attachment: Attachment, netns: str) -> None:
        """Undo an attachment whatever phase it reached: pod interface, host links,
        Neutron port (also one made before its id was journaled), journal entry."""
        for path in {netns, attachment.netns} - {""}:
            netlink.delete_pod_interface(path, attachment.ifname)
        ports = {attachment.port_id} - {""}
        if not ports:
            ports = {
                p.id
                for p in self._our_ports(
                    device_id=attachment.device_id, network_id=attachment.network_id or None
                )
            }
        for port_id in ports:
            self.driver.unplug(port_id)
            neutron.delete_port(self.conn(), port_id)
        self.store.remove(attachment)
        self._reported.pop(attachment.key, None)
        self._probe_kick.set()
        if attachment.port_mappings:
            self.sync_hostports()
        log.info(
            "DEL %s/%s (%s): released port %s",
            attachment.namespace,
            attachment.pod,
            attachment.key,
            ", ".join(sorted(ports)) or "(none)",
        )

    # ---- CHECK and GC --------------------------------------------------------------------
    def check(self, request: spec.Request) -> None:
        with self._sandbox(request.container_id, request.ifname):
            attachment = self.store.get(request.container_id, request.ifname)
            if attachment is None or not attachment.port_id:
                raise spec.CniError(
                    spec.UNKNOWN_CONTAINER,
                    f"no attachment for container {request.container_id} {request.ifname}",
                )
            network = self.tenant_network(
                self.network_namespace(attachment.namespace, attachment.pod)
            )
            port = neutron.get_pod_port(self.conn(), attachment.port_id)
            found = netlink.pod_interface(request.netns, request.ifname)
            ip = port.address_on(network.subnet_id) if port else None
            expected = ExpectedInterface(
                request.ifname,
                port.mac if port else "",
                cidr_address(ip, network.cidr) if ip else "",
                network.mtu,
                network.gateway,
            )
            problems = check_problems(
                expected,
                found,
                port.status if port else None,
                self.driver.is_plugged(attachment.port_id, attachment.network_id),
            )
            if problems:
                raise spec.CniError(CHECK_FAILED, "; ".join(problems))

    def gc(self, request: spec.Request) -> None:
        """CNI 1.1 GC: release every attachment the runtime no longer lists."""
        valid = {
            attachment_key(str(a.get("containerID", "")), str(a.get("ifname", "")))
            for a in request.config.get("cni.dev/valid-attachments") or []
            if isinstance(a, dict)
        }
        for attachment in self.store.all():
            if attachment.key not in valid:
                container, ifname = attachment.container_id, attachment.ifname
                with self._sandbox(container, ifname):
                    current = self.store.get(container, ifname)
                    if current is not None:
                        self._release(current, current.netns)

    # ---- background: Neutron names, pools --------------------------------------------------
    def record_names(self) -> None:
        """Name pooled ports after the pods that took them (off the ADD's path)."""
        while not self.stopping.is_set():
            try:
                sandbox = self._renames.get(timeout=1)
            except queue.Empty:
                continue
            try:
                self._record_name(sandbox)
            except Exception:  # a background thread logs and lives on
                log.exception("naming the port of %s after its pod failed", sandbox[0][:12])

    def _record_name(self, sandbox: tuple[str, str]) -> None:
        attachment = self.store.get(*sandbox)
        if attachment is None or attachment.phase != Phase.PLUGGED:
            return
        try:
            neutron.rename_port(
                self.conn(),
                attachment.port_id,
                name=port_name(attachment.namespace, attachment.pod),
                device_id=attachment.device_id,
            )
        except NotFoundError:
            return  # deleted meanwhile: the repair loop (or a DEL) deals with it
        except StackubeError as exc:
            log.warning("naming port %s after its pod: %s (will retry)", attachment.port_id, exc)
            self.stopping.wait(2)
            self._renames.put(sandbox)
            return
        with self._sandbox(attachment.container_id, attachment.ifname):
            current = self.store.get(attachment.container_id, attachment.ifname)
            if current is not None and current.port_id == attachment.port_id:
                self.store.put(current.advanced(Phase.RECORDED))

    def maintain_pools(self) -> None:
        while not self.stopping.is_set():
            try:
                self._maintain_once()
            except StackubeError as exc:
                log.warning("pool maintenance: %s", exc)
            except Exception:  # a background thread logs and lives on
                log.exception("pool maintenance failed")
            self._kick.wait(self.settings.resync_seconds)
            self._kick.clear()

    def _maintain_once(self) -> None:
        items = self._networks_now()
        refs, present = live_network_refs(items), present_network_ids(items)
        for network_id in self.pools.networks():
            if network_id not in refs:
                dropped = self.pools.drop(network_id)
                self._networks.pop(network_id, None)
                # A deleted Network's finalizer deletes its ports in Neutron (two deletes
                # of one port slow that teardown down): only their host ends go here.
                for port in dropped:
                    self._discard(port.id, in_neutron=network_id in present)
                log.info(
                    "network %s is %s: dropped its pool (%d ports)",
                    network_id,
                    "not Active" if network_id in present else "gone",
                    len(dropped),
                )
        if self.settings.pool_size <= 0:
            return
        if self.settings.pool_eager:
            for network_id in refs:
                self.pools.track(network_id)
        with self._guard:
            adding = set(self._adding)
        for network_id in self.pools.networks():
            ref = refs.get(network_id)
            if ref is None or ref.namespace in adding:
                continue  # gone, or its pods' own ports go first (the ADD kicks us after)
            try:
                network = self._resolve(ref)
            except spec.CniError as exc:
                log.info("pool for %s waits: %s", network_id, exc.msg)
                continue
            for _ in range(self.pools.want(network_id)):
                self._fillers.submit(self._fill_one, network)

    def _track_pool(self, network_id: str, pod_namespace: str) -> None:
        """A pod of `pod_namespace` joins the network here: keep a pool of ready ports for
        the network's next pods on this node. Not for a tenant's DNS server (one per
        tenant, wherever it runs: its node may never see the tenant's own pods)."""
        if pod_namespace != DNS_NAMESPACE:
            self.pools.track(network_id)
            self._kick.set()

    def _fill_one(self, network: TenantNetwork) -> None:
        port: neutron.Port | None = None
        ready: ReadyPort | None = None
        if network.network_id not in live_network_refs(self._networks_now()):
            # Deleted (or not Active) while this fill waited for its turn: none made.
            self.pools.filled(None, network.network_id)
            return
        try:
            port = self._create_port(network, pool_port_name(self.settings.node), POOL_DEVICE_ID)
            self._plug(port)
            self._wait_active(port.id, port.network_id)
            ready = self._ready(port, network)
            log.info("pool for %s: port %s ready", network.network_id, port.id)
        except (StackubeError, spec.CniError, OSError) as exc:
            log.warning("pool for %s: could not prepare a port: %s", network.network_id, exc)
        kept = self.pools.filled(ready, network.network_id)
        if port is not None and (ready is None or not kept):
            self._discard(port.id)

    def _discard(self, port_id: str, *, in_neutron: bool = True) -> None:
        """Unplug the port's host end and (`in_neutron`) delete the port."""
        try:
            self.driver.unplug(port_id)
            if in_neutron:
                neutron.delete_port(self.conn(), port_id)
        except (StackubeError, OSError) as exc:
            log.warning("could not delete port %s (recovery will): %s", port_id, exc)

    # ---- NetworkPolicy (netpol.py) --------------------------------------------------------
    def policy_pods(self) -> list[LocalPod]:
        """The pods on this node with an address, their network namespace and subnet
        (a pod whose network is not resolved since the start waits for its next ADD,
        CHECK or repair)."""
        found = []
        for attachment in self.store.all():
            network = self._networks.get(attachment.network_id)
            if not (attachment.ip and attachment.netns and network and network.gateway):
                continue
            on_system = attachment.network_id == self.system_network_id
            found.append(
                LocalPod(
                    attachment.netns,
                    attachment.namespace,
                    attachment.pod,
                    attachment.ip,
                    network.cidr,
                    network.gateway,
                    host=self.node_link_ip if on_system else "",
                )
            )
        return found

    # ---- kubelet probes into tenant networks (probes.py, probe_relay.py) ------------------
    def on_pod(self, _kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """Fed by the watch of this node's pods: which ports their probes use."""
        uid = str(((new or old) or {}).get("metadata", {}).get("uid", ""))
        ports = probe_ports(new) if new is not None else set()
        tcp = probe_ports(new, ("tcpSocket",)) if new is not None else set()
        lenient = liveness_only_tcp_ports(new) if new is not None else set()
        with self._guard:
            known_maps = (self._probe_ports, self._tcp_socket_ports, self._lenient_ports)
            had = tuple(known.get(uid, set()) for known in known_maps)
            changed = had != (ports, tcp, lenient)
            for known, now in zip(known_maps, (ports, tcp, lenient), strict=True):
                if now:
                    known[uid] = now
                else:
                    known.pop(uid, None)
        if changed:
            self._probe_kick.set()

    def resolve_probe(self, ip: str, port: int) -> Upstream | None:
        """The relay's lookup: how to reach the pod whose probe targets ip:port (inside
        its netns, to its own address; inside its sandbox for a gVisor pod)."""
        with self._guard:
            target = self._probe_targets.get((ip, port))
        if target is None:
            return None
        return self._pod_upstream(ip, port, *target)

    def _pod_upstream(self, ip: str, port: int, netns: str, sandbox_id: str) -> Upstream:
        """ip:port from inside the pod's netns; inside the sandbox for a gVisor pod."""
        if self.runsc is not None and self.runsc.runs(sandbox_id):
            return self.sandbox_upstream(sandbox_id, port)
        return Upstream(
            lambda: netlink.connect_in_namespace(netns, (ip, port), CONNECT_TIMEOUT),
            f"{ip}:{port} in {netns}",
        )

    def sandbox_upstream(self, sandbox_id: str, port: int) -> Upstream:
        """127.0.0.1:port inside the gVisor sandbox `sandbox_id` (host/runsc.py)."""
        runsc = self.runsc
        if runsc is None:
            raise RuntimeError("sandbox_upstream without runsc")  # a bug: forwards need it
        return Upstream(
            lambda: runsc.connect(sandbox_id, port, CONNECT_TIMEOUT),
            f"port {port} in gVisor sandbox {sandbox_id[:12]}",
            half_close=False,
        )

    def sync_port_forwards(self) -> None:
        """Port-forward listeners for exactly this node's live gVisor pods (portforward.py)."""
        if self.forwards is None or self.runsc is None:
            return
        sandboxes = {
            a.container_id: a.netns
            for a in self.store.all()
            if a.netns and a.phase in (Phase.PLUGGED, Phase.RECORDED)
        }
        wanted = {sid: netns for sid, netns in sandboxes.items() if self.runsc.runs(sid)}
        problems = set(self.forwards.apply(wanted))
        for problem in sorted(problems - self._forward_problems):
            log.warning("%s (retried every %ss)", problem, self.settings.resync_seconds)
        self._forward_problems = problems

    def sync_probes(self) -> None:
        """The relay's targets, the node's DNAT chain and its /32 routes, from the
        journal (addresses, netns) and the pod watch (probe ports)."""
        with self._guard:
            ports, tcp_ports = dict(self._probe_ports), dict(self._tcp_socket_ports)
            lenient_ports = dict(self._lenient_ports)
        # System pods are reached directly (the node link): only tenant pods are relayed.
        relayed = [
            a
            for a in self.store.all()
            if a.ip
            and a.netns
            and a.phase in (Phase.PLUGGED, Phase.RECORDED)
            and a.network_id != self.system_network_id
        ]
        targets = {
            (a.ip, port): (a.netns, a.container_id)
            for a in relayed
            for port in ports.get(a.pod_uid, ())
        }
        gated = {(a.ip, port) for a in relayed for port in tcp_ports.get(a.pod_uid, ())}
        had = self._probe_routes()
        # An address the node routes itself (a tenant range overlapping the node's own
        # networks) is not relayed: the node's traffic there must not reach a pod.
        refused = netlink.node_routed({ip for ip, _ in targets} - had)
        for ip in sorted(refused - self._refused):
            log.warning(
                "probes of pod address %s are not relayed: the node routes that address "
                "itself (a tenant range overlaps the node's own networks)",
                ip,
            )
        self._refused = refused
        targets = {key: netns for key, netns in targets.items() if key[0] not in refused}
        with self._guard:
            self._probe_targets = targets
        self.gate.set_targets(
            {key: self._pod_upstream(*key, *targets[key]) for key in gated if key in targets},
            {(a.ip, port) for a in relayed for port in lenient_ports.get(a.pod_uid, ())},
        )
        closed = gated - self.gate.open_targets()
        redirected = {key: value for key, value in targets.items() if key not in closed}
        text = render_chain(redirected, self.relay_port, self._probe_chain)
        if text != self._probes_applied:
            wanted = {ip for ip, _ in targets}
            # Recorded before they change, so a crash in between leaks none of them.
            self._save_probe_routes(had | wanted)
            skipped = netlink.update_probe_routes(wanted - had, had - wanted)
            self._save_probe_routes(wanted - skipped)
            iptables.restore("", text)
            iptables.ensure_jump("", "nat", "OUTPUT", self._probe_chain)
            self._probes_applied = text
            log.info(
                "probes: %d targets relayed, %d closed tcpSocket ones not (%d routes added, "
                "%d removed)",
                len(redirected),
                len(closed & set(targets)),
                len(wanted - had - skipped),
                len(had - wanted),
            )

    def _probe_routes(self) -> set[str]:
        try:
            return set(json.loads(self._routes_file.read_text()))
        except FileNotFoundError:
            return set()
        except ValueError:
            log.warning("%s is unreadable: starting its record again", self._routes_file)
            return set()

    def _save_probe_routes(self, addresses: set[str]) -> None:
        tmp = self._routes_file.with_name(f".{self._routes_file.name}.tmp")
        tmp.write_text(json.dumps(sorted(addresses)))
        tmp.replace(self._routes_file)

    def probe_loop(self) -> None:
        self.ready.wait()
        while not self.stopping.is_set():
            self._probe_kick.clear()
            try:
                self.sync_probes()
            except Exception:  # a background thread logs and lives on
                log.exception("probe rules sync failed")
                self._probes_applied = ""
            try:
                self.sync_port_forwards()
            except Exception:  # a background thread logs and lives on
                log.exception("port-forward sync failed")
            self._probe_kick.wait(self.settings.resync_seconds)

    # ---- start-up --------------------------------------------------------------------------
    def recover(self) -> None:
        """Make sense of Neutron, the journal, the runtime and the API server after a
        (re)start: keep the pods' ports (journaled, or found in a live sandbox: the
        journal entry is rebuilt), adopt intact pool ports, delete only what is provably
        nobody's. Raises TemporaryError (the caller retries) while the runtime or the
        API server cannot say which pods are alive: a port is never deleted on a guess."""
        attachments = self.store.all()
        on_host = self._host_ports()
        ports = [
            p for p in on_host if in_scope(p.description, self.settings.node, self.settings.host)
        ]
        links = set(netlink.link_names())
        live = live_network_refs(kube.list_all_networks(self.kube))
        interfaces = self._sandbox_interfaces()
        node_pods = kube_pods.pod_uids_on_node(self.kube, self.settings.node)
        host_ports = [
            HostPort(
                p.id,
                p.network_id,
                p.device_id,
                p.mac,
                p.fixed_ips[0][1] if p.fixed_ips else "",
                p.status == "ACTIVE",
                p.name,
            )
            for p in ports
        ]
        plugged = [
            p.id
            for p in ports
            if parked_ifname(p.id) in links and self.driver.is_plugged(p.id, p.network_id)
        ]
        plan = plan_recovery(
            host_ports,
            attachments=attachments,
            plugged=plugged,
            live_networks=live,
            interfaces=interfaces,
            node_pod_uids=node_pods,
        )
        adopted, excess = split_to_size(plan.pool, self.settings.pool_size)
        for port in adopted:
            self.pools.adopt(ReadyPort(port.id, port.network_id, port.mac, port.ip))
        for port in (*plan.delete, *excess):
            log.info("recovery: port %s (%s) is nobody's: deleting it", port.id, port.name)
            self._discard(port.id)
        # The socket serves while this runs: every write is made under the sandbox's
        # lock, and only over the entry this plan saw (an ADD or DEL meanwhile wins).
        for attachment in plan.rebuilt:
            with self._sandbox(attachment.container_id, attachment.ifname):
                if self.store.get(attachment.container_id, attachment.ifname) is not None:
                    continue
                log.info(
                    "recovery: %s/%s holds port %s in sandbox %s: journal entry rebuilt",
                    attachment.namespace,
                    attachment.pod,
                    attachment.port_id,
                    attachment.container_id[:12],
                )
                self.store.put(attachment)
        by_key = {a.key: a for a in attachments}
        for port_id, key in plan.owned.items():
            seen = by_key[key]
            if seen.port_id:
                continue
            with self._sandbox(seen.container_id, seen.ifname):
                if self.store.get(seen.container_id, seen.ifname) == seen:
                    self.store.put(seen.advanced(Phase.CLAIMED, port_id=port_id))
        for attachment in (*attachments, *plan.rebuilt):
            if attachment.phase == Phase.PLUGGED and attachment.port_id:
                self._renames.put((attachment.container_id, attachment.ifname))
        # A parked veth pair is stray when no port on this host (any daemon's: a test
        # daemon shares the host with the node's) and no journal entry names it.
        kept = {p.id[:11] for p in on_host} | {a.port_id[:11] for a in attachments if a.port_id}
        stray = [
            name[3:]
            for name in links
            if name.startswith("stp") and name[3:] not in kept and host_ifname(name[3:]) in links
        ]
        for prefix in stray:
            self.driver.unplug(prefix)
        log.info(
            "recovered: %d pool ports adopted, %d pod ports kept, %d ports, %d link pairs "
            "deleted (%d journal entries rebuilt from live sandboxes, %d ports kept for pods "
            "bound here)",
            len(adopted),
            len(plan.owned) + len(plan.rebuilt) + len(plan.kept),
            len(plan.delete) + len(excess),
            len(stray),
            len(plan.rebuilt),
            len(plan.kept),
        )
        self.sync_hostports()
        self.ready.set()

    def _sandbox_interfaces(self) -> list[SandboxInterface]:
        """Every interface inside the runtime's READY sandboxes."""
        found = []
        for sandbox in cri.ready_sandboxes(self.settings.cri_endpoint):
            if not sandbox.netns:
                continue
            for ifname, mac in netlink.interface_macs(sandbox.netns).items():
                found.append(
                    SandboxInterface(
                        sandbox.id,
                        sandbox.namespace,
                        sandbox.name,
                        sandbox.uid,
                        sandbox.netns,
                        ifname,
                        mac,
                    )
                )
        return found

    # ---- the node's own port on the system network ----------------------------------------
    def sync_node_link(self) -> bool:
        """The node's port on the system network (`stackube-node-<node>`, bound here) and
        the host's link `node_link` with its MAC and address, attached to the agent's
        bridge: the host (kubelet, API server) reaches system pods through it. Nothing
        until the system Network is Active. True if anything was made or mended."""
        if not self.settings.node_link:
            return False
        refs = live_network_refs(
            n
            for n in self._networks_now()
            if is_system_network(
                str((n.get("metadata") or {}).get("namespace", "")),
                str((n.get("metadata") or {}).get("name", "")),
            )
        )
        if not refs:
            return False
        network = self._resolve(next(iter(refs.values())))
        self.system_network_id = network.network_id
        device_id = node_port_name(self.settings.node)
        conn = self.conn()
        ports = neutron.pod_ports(
            conn,
            device_owner=NODE_PORT_DEVICE_OWNER,
            device_id=device_id,
            network_id=network.network_id,
        )
        changed = False
        if not ports:
            ports = [
                neutron.create_pod_port(
                    conn,
                    network_id=network.network_id,
                    project_id=network.project_id,
                    name=device_id,
                    device_id=device_id,
                    device_owner=NODE_PORT_DEVICE_OWNER,
                    host=self.settings.host,
                    description=self.marker,
                )
            ]
            log.info("made port %s: this node on the system network", ports[0].id)
            changed = True
        port, extra = ports[0], ports[1:]
        for duplicate in extra:  # a create whose answer was lost, made again
            neutron.delete_port(conn, duplicate.id)
        if port.host != self.settings.host:
            port = neutron.rebind_port(conn, port.id, self.settings.host)
            changed = True
        ip = port.address_on(network.subnet_id)
        if ip is None:
            raise TemporaryError(f"node port {port.id} has no address on {network.subnet_id}")
        self.node_link_ip = ip
        tap = host_ifname(port.id)
        changed = (
            netlink.ensure_node_link(
                tap,
                self.settings.node_link,
                mac=port.mac,
                mtu=network.mtu,
                address=cidr_address(ip, network.cidr),
            )
            or changed
        )
        if not self.driver.is_plugged(port.id, network.network_id):
            self.driver.rewire(
                tap,
                port_id=port.id,
                network_id=network.network_id,
                mac=port.mac,
                device_id=device_id,
            )
            changed = True
        if changed:
            log.info(
                "node link %s: %s on the system network %s (port %s)",
                self.settings.node_link,
                cidr_address(ip, network.cidr),
                network.network_id,
                port.id,
            )
        return changed

    # ---- repair: ports deleted or unbound behind our back, host ends gone -----------------
    def repair_loop(self) -> None:
        """Every `repair_seconds`: mend the node link and the pods' attachments (never
        dies: a failed pass is logged and the next one runs)."""
        self.ready.wait()
        while True:
            try:
                self.sync_node_link()
            except (StackubeError, spec.CniError) as exc:
                log.warning("node link: %s (retrying)", exc)
            except Exception:  # a background thread logs and lives on
                log.exception("node link sync failed")
            if self.stopping.wait(self.settings.repair_seconds):
                return
            try:
                self.repair_once()
            except Exception:  # a background thread logs and lives on
                log.exception("repair pass failed")
            try:
                self.sync_hostports()  # relays, and our jumps still ahead of the kubelet's
            except StackubeError as exc:
                log.warning("hostPorts: %s (retrying)", exc)
            except Exception:  # a background thread logs and lives on
                log.exception("hostPort sync failed")

    def repair_once(self) -> int:
        """One pass: returns how many attachments it mended."""
        attachments = [a for a in self.store.all() if a.port_id]
        if not attachments:
            return 0
        listed = {p.id: p.host for p in self._our_ports()}
        for attachment in attachments:
            if attachment.port_id not in listed:  # gone, or moved off this host
                port = neutron.get_pod_port(self.conn(), attachment.port_id)
                if port is not None:
                    listed[port.id] = port.host
        wanted = [(a.port_id, a.network_id) for a in attachments]
        networks = self._networks_now()
        mended = 0
        for repair in plan_repairs(
            attachments,
            listed,
            self.settings.host,
            host_links=netlink.link_names(),
            attached=self.driver.attached(wanted),
            live_networks=live_network_refs(networks),
        ):
            if self._repair(repair):
                mended += 1
        return mended

    def _repair(self, repair: Repair) -> bool:
        found = repair.attachment
        with self._sandbox(found.container_id, found.ifname):
            attachment = self.store.get(found.container_id, found.ifname)
            if attachment is None or attachment.port_id != found.port_id:
                return False  # DEL or another pass got there first
            if not attachment.netns or not Path(attachment.netns).exists():
                return False  # the sandbox is gone: its DEL (or GC) releases it
            started = time.monotonic()
            try:
                detail = self._mend(attachment, repair.problem)
            except (StackubeError, spec.CniError, OSError) as exc:
                self._report(attachment, repair.problem, ok=False, message=str(exc))
                return False
            except Exception as exc:  # a bug or a netlink error: one pod, not the pass
                log.exception("repair of %s failed unexpectedly", attachment.key)
                self._report(attachment, repair.problem, ok=False, message=f"internal: {exc!r}")
                return False
            self._report(
                attachment,
                repair.problem,
                ok=True,
                message=f"{detail} in {time.monotonic() - started:.1f} s",
            )
            return True

    def _mend(self, attachment: Attachment, problem: str) -> str:
        network = self.tenant_network(self.network_namespace(attachment.namespace, attachment.pod))
        mac, ip = attachment.mac, attachment.ip
        if not (mac and ip):
            mac, ip = _address_in_pod(attachment, network)
            attachment = attachment.advanced(attachment.phase, mac=mac, ip=ip)
            self.store.put(attachment)
        if problem == "port-gone":
            old = attachment.port_id
            port = self._recreate_port(attachment, network, mac, ip)
            # Journal first: whatever happens next, the next pass finds the pod's host
            # end by its veth peer and wires it to this port.
            attachment = attachment.advanced(Phase.RECORDED, port_id=port.id)
            self.store.put(attachment)
            detail = f"port {old} was deleted: re-created as {port.id} ({ip}, {mac})"
        elif problem == "port-unbound":
            neutron.rebind_port(self.conn(), attachment.port_id, self.settings.host)
            detail = f"port {attachment.port_id} was unbound from {self.settings.host}: bound again"
        else:
            what = (
                "gone: plugged again" if problem == "host-link-gone" else "detached: attached again"
            )
            detail = f"host end {host_ifname(attachment.port_id)} was {what}"
        self._wire(attachment, network)
        self._wait_active(attachment.port_id, attachment.network_id, repairing=True)
        return detail

    def _wire(self, attachment: Attachment, network: TenantNetwork) -> None:
        """The pod's host end, found by its veth peer whatever it is named, becomes the
        tap of the attachment's port, attached; if the pod's interface is gone too, a new
        veth is plugged and configured in the pod as at ADD."""
        host_end = netlink.host_end_of(attachment.netns, attachment.ifname)
        if host_end is not None:
            self.driver.rewire(
                host_end,
                port_id=attachment.port_id,
                network_id=attachment.network_id,
                mac=attachment.mac,
                device_id=attachment.device_id,
            )
            return
        self.driver.plug(
            port_id=attachment.port_id,
            network_id=attachment.network_id,
            mac=attachment.mac,
            mtu=network.mtu,
            device_id=attachment.device_id,
        )
        netlink.move_into_namespace(
            parked_ifname(attachment.port_id),
            attachment.netns,
            ifname=attachment.ifname,
            mtu=network.mtu,
            address=cidr_address(attachment.ip, network.cidr),
            gateway=network.gateway,
        )

    def _recreate_port(
        self, attachment: Attachment, network: TenantNetwork, mac: str, ip: str
    ) -> neutron.Port:
        """The pod's port again, with its MAC and address: one an interrupted repair
        already made, else a new one; an unused pool port holding the address gives it
        back first."""
        ours = self._our_ports(network_id=network.network_id)
        for port in ours:
            if port.device_id == attachment.device_id and port.mac.lower() == mac.lower():
                return port
        for port in ours:
            held = port.device_id == POOL_DEVICE_ID and port.address_on(network.subnet_id) == ip
            if held and self.pools.discard(port.id):
                self._discard(port.id)
        return self._create_port(
            network,
            port_name(attachment.namespace, attachment.pod),
            attachment.device_id,
            mac=mac,
            ip=ip,
        )

    def _report(self, attachment: Attachment, problem: str, *, ok: bool, message: str) -> None:
        """Log, and tell the pod: an Event and the network-ready condition (once per
        trouble; a mend is always told)."""
        seen = f"{problem}:{'ok' if ok else message}"
        if not ok and self._reported.get(attachment.key) == seen:
            return
        self._reported[attachment.key] = seen
        where = f"{attachment.namespace}/{attachment.pod}"
        if ok:
            log.info("repair %s: %s", where, message)
        else:
            log.error("repair %s: %s could not be mended: %s", where, problem, message)
        try:
            kube_pods.pod_event(
                self.kube,
                attachment.namespace,
                attachment.pod,
                attachment.pod_uid,
                reason="NetworkRepaired" if ok else "NetworkBroken",
                message=message if ok else f"{problem}: {message}",
                warning=not ok,
                component=EVENT_COMPONENT,
                host=self.settings.node,
            )
            kube_pods.set_pod_condition(
                self.kube,
                attachment.namespace,
                attachment.pod,
                NETWORK_READY_CONDITION,
                ok=ok,
                reason="Repaired" if ok else _reason(problem),
                message=message,
            )
        except StackubeError as exc:
            log.warning("could not tell pod %s about its network: %s", where, exc)

    def start_background(self) -> list[threading.Thread]:
        threads = [
            threading.Thread(target=self.record_names, name="record-names", daemon=True),
            threading.Thread(target=self.maintain_pools, name="pools", daemon=True),
            threading.Thread(target=self.repair_loop, name="repair", daemon=True),
            threading.Thread(target=self.probe_loop, name="probes", daemon=True),
            threading.Thread(
                target=self.gate.run, args=(self.stopping,), name="probe-gate", daemon=True
            ),
        ]
        for thread in threads:
            thread.start()
        return threads

    def stop(self) -> None:
        self.stopping.set()
        self._kick.set()
        self._probe_kick.set()
        self._fillers.shutdown(wait=False, cancel_futures=True)
        if self.forwards is not None:  # not waited for: a signal handler calls this
            threading.Thread(target=self.forwards.close, name="port-forward-close").start()


def _reason(problem: str) -> str:
    """'port-gone' -> 'PortGone' (a condition reason is CamelCase)."""
    return "".join(part.capitalize() for part in problem.split("-"))


def _address_in_pod(attachment: Attachment, network: TenantNetwork) -> tuple[str, str]:
    """(MAC, IPv4) of the pod's interface, for journal entries older than those fields."""
    found = netlink.pod_interface(attachment.netns, attachment.ifname)
    if found is None or not found.addresses:
        raise spec.CniError(
            CHECK_FAILED, f"{attachment.key}: the pod's interface is gone, its address unknown"
        )
    return found.mac, found.addresses[0].split("/")[0]


def _describe(request: spec.Request) -> str:
    pod = f" {request.pod.namespace}/{request.pod.name}" if request.pod else ""
    container = f" container {request.container_id[:12]}" if request.container_id else ""
    return f"{request.command}{pod}{container}"
