"""What a (re)started stackube-cni-daemon makes of Neutron, its journal, the container
runtime and the API server, and what its repair loop must mend. Pure decisions; the
daemon does the I/O.

The rule: a port is deleted only when it is provably nobody's. The journal names the
pods' ports; where the journal is lost or behind, the runtime's live sandboxes name
them (the MAC of an interface inside a READY sandbox's netns is the port's MAC); a port
whose device id is a pod still bound to this node is kept too (its sandbox may be
between two lives). Only then are pool ports adopted or deleted and the rest deleted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stackube.cni.attachments import Attachment, Phase
from stackube.cni.pool import POOL_DEVICE_ID
from stackube.cni.result import host_ifname

# Neutron's port description for the ports of one daemon (one node identity). Ports
# from before descriptions were set have none: they are the node's whose name is the
# binding host (there was one daemon per binding host then).
NODE_MARKER = "stackube-cni node="


def node_marker(node: str) -> str:
    return f"{NODE_MARKER}{node}"


def in_scope(description: str, node: str, binding_host: str) -> bool:
    """Is a port bound to `binding_host` this daemon's (node identity `node`)?"""
    if description.startswith(NODE_MARKER):
        return description == node_marker(node)
    return node == binding_host


@dataclass(frozen=True)
class HostPort:
    """A Neutron port bound to this node with our device_owner, in this daemon's scope."""

    id: str
    network_id: str
    device_id: str
    mac: str
    ip: str
    active: bool
    name: str = ""


@dataclass(frozen=True)
class SandboxInterface:
    """An interface inside a READY sandbox's network namespace (from the runtime)."""

    sandbox_id: str
    namespace: str
    pod: str
    pod_uid: str
    netns: str
    ifname: str
    mac: str


@dataclass(frozen=True)
class Recovery:
    pool: tuple[HostPort, ...]  # adopt: plugged, parked, ACTIVE, network still wanted
    delete: tuple[HostPort, ...]  # provably nobody's: delete port and links
    owned: Mapping[str, str]  # port id -> journal key (pods' ports, kept)
    rebuilt: tuple[Attachment, ...]  # journal entries rebuilt from live sandboxes
    kept: tuple[HostPort, ...]  # a pod bound to this node still names it: left alone


def plan_recovery(
    ports: Iterable[HostPort],
    *,
    attachments: Iterable[Attachment],
    plugged: Iterable[str],  # port ids whose host end and parked pod end both exist
    live_networks: Iterable[str],
    interfaces: Iterable[SandboxInterface],
    node_pod_uids: Iterable[str],
) -> Recovery:
    plugged_ids, live = set(plugged), set(live_networks)
    journal = list(attachments)
    by_port = {a.port_id: a.key for a in journal if a.port_id}
    by_device = {a.device_id: a.key for a in journal if not a.port_id}
    journaled_keys = {a.key for a in journal}
    by_mac = {i.mac.lower(): i for i in interfaces}
    pods = set(node_pod_uids)
    adopt: list[HostPort] = []
    delete: list[HostPort] = []
    kept: list[HostPort] = []
    rebuilt: list[Attachment] = []
    owned: dict[str, str] = {}
    for port in ports:
        live_if = by_mac.get(port.mac.lower())
        if port.id in by_port:
            owned[port.id] = by_port[port.id]
        elif port.device_id in by_device:
            owned[port.id] = by_device.pop(port.device_id)
        elif live_if is not None and _key(live_if) not in journaled_keys:
            rebuilt.append(rebuilt_attachment(live_if, port))
            journaled_keys.add(_key(live_if))
        elif live_if is not None or port.device_id in pods:
            kept.append(port)
        elif (
            port.device_id == POOL_DEVICE_ID
            and port.id in plugged_ids
            and port.network_id in live
            and port.active
        ):
            adopt.append(port)
        else:
            delete.append(port)
    return Recovery(tuple(adopt), tuple(delete), owned, tuple(rebuilt), tuple(kept))


def _key(interface: SandboxInterface) -> str:
    return Attachment(interface.sandbox_id, interface.ifname, "", "", "", "").key


def rebuilt_attachment(interface: SandboxInterface, port: HostPort) -> Attachment:
    """The journal entry an ADD would have left for this sandbox and port: RECORDED when
    Neutron already names the port after the pod, else PLUGGED (a rename is due)."""
    attachment = Attachment(
        interface.sandbox_id,
        interface.ifname,
        interface.netns,
        interface.namespace,
        interface.pod,
        interface.pod_uid,
        port.network_id,
        port.id,
        Phase.PLUGGED,
        port.mac,
        port.ip,
    )
    if port.device_id == attachment.device_id:
        return attachment.advanced(Phase.RECORDED)
    return attachment


def split_to_size(ports: Iterable[HostPort], size: int) -> tuple[list[HostPort], list[HostPort]]:
    """At most `size` ports per network to keep; the rest to delete."""
    keep: list[HostPort] = []
    extra: list[HostPort] = []
    per_network: dict[str, int] = {}
    for port in ports:
        count = per_network.get(port.network_id, 0)
        (keep if count < size else extra).append(port)
        per_network[port.network_id] = count + 1
    return keep, extra


# ---- the repair loop -------------------------------------------------------------------
@dataclass(frozen=True)
class Repair:
    """One attachment's trouble, as the repair loop sees it."""

    attachment: Attachment
    problem: str  # "port-gone", "port-unbound", "host-link-gone", "host-link-detached"


def plan_repairs(
    attachments: Iterable[Attachment],
    ports: Mapping[str, str],  # port id -> binding host, for every port of ours listed
    binding_host: str,
    *,
    host_links: Iterable[str],  # host ends (tap<port[:11]>) present on the node
    attached: Iterable[str],  # port ids whose host end is where the agent expects it
    live_networks: Iterable[str],  # Active and not being deleted
) -> list[Repair]:
    """Pods' attachments (PLUGGED or RECORDED) whose port, binding or host end is gone.
    Pods of a Network that is going away are left to it (its ports go first)."""
    links, wired, live = set(host_links), set(attached), set(live_networks)
    found: list[Repair] = []
    for attachment in attachments:
        if attachment.phase not in (Phase.PLUGGED, Phase.RECORDED) or not attachment.port_id:
            continue
        if attachment.network_id not in live:
            continue
        host = ports.get(attachment.port_id)
        if host is None:
            found.append(Repair(attachment, "port-gone"))
        elif host != binding_host:
            found.append(Repair(attachment, "port-unbound"))
        elif host_ifname(attachment.port_id) not in links:
            found.append(Repair(attachment, "host-link-gone"))
        elif attachment.port_id not in wired:
            found.append(Repair(attachment, "host-link-detached"))
    return found
