"""Links and network namespaces through netlink (pyroute2), with idempotent calls."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from pyroute2 import IPRoute, NetlinkError, config, netns

# pyroute2 opens sockets inside other netns from a forked child; without this the child
# runs its parent's SIGTERM handler when pyroute2 stops it (a daemon would log "stopping").
# The pod paths below avoid the fork altogether (see in_namespace).
config.disable_mp_signal = True

T = TypeVar("T")


def in_netns(netns_path: str, work: Callable[[], T]) -> T:
    """Run `work` in a thread that joined the netns at `netns_path` (setns is per
    thread; sockets it makes stay in that netns): ~1 ms."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            fd = os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                netns.setns(fd)
            finally:
                os.close(fd)
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="netns")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return cast(T, outcome["value"])


def in_namespace(netns_path: str, work: Callable[[IPRoute], T]) -> T:
    """Run `work` with a netlink socket inside the netns at `netns_path`, from a thread
    that joined that netns: ~1 ms, where pyroute2's IPRoute(netns=...) forks a child to
    open the socket (~7 ms, more in a big daemon)."""

    def with_socket() -> T:
        with IPRoute() as ipr:
            return work(ipr)

    return in_netns(netns_path, with_socket)


def connect_in_namespace(
    netns_path: str, address: tuple[str, int], timeout: float
) -> socket.socket:
    """A TCP connection made from inside the netns at `netns_path` (the socket stays
    there: a pod's own view of `address`). Raises OSError as socket.create_connection."""
    return in_netns(netns_path, lambda: socket.create_connection(address, timeout=timeout))


def link_names_in(netns_path: str) -> list[str]:
    """The names of the links inside a netns."""
    return in_namespace(
        netns_path, lambda ns: [str(link.get_attr("IFLA_IFNAME")) for link in ns.get_links()]
    )


def link_names() -> list[str]:
    with IPRoute() as ipr:
        return [str(link.get("ifname")) for link in ipr.get_links()]


def ensure_veth_pair(name: str, peer: str, mtu: int = 1500) -> None:
    """Both ends exist and are up (created if missing; a half-pair is replaced)."""
    with IPRoute() as ipr:
        have, have_peer = ipr.link_lookup(ifname=name), ipr.link_lookup(ifname=peer)
        if not (have and have_peer):
            for index in have + have_peer:
                ipr.link("del", index=index)
            ipr.link("add", ifname=name, kind="veth", peer={"ifname": peer, "mtu": mtu}, mtu=mtu)
        for ifname in (name, peer):
            ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], state="up")


def ensure_address(ifname: str, cidr: str) -> bool:
    """`cidr` (address/prefix) on the host's link `ifname`. True if it was added."""
    address, prefix = cidr.split("/")
    with IPRoute() as ipr:
        index = _require(ipr, ifname)
        if address in {a.get("address") for a in ipr.get_addr(index=index)}:
            return False
        ipr.addr("add", index=index, address=address, prefixlen=int(prefix))
        return True


RTN_UNREACHABLE = 7  # rtnetlink route type
# Fallback routes lose to any real route of the same range (a link's connected route has
# metric 0), and take over when that goes.
FALLBACK_METRIC = 4242


def ensure_unreachable_route(cidr: str) -> bool:
    """`unreachable <cidr> metric FALLBACK_METRIC` in the host's main table (one of
    another metric is replaced). True if it was added."""
    address, prefix = cidr.split("/")
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2, table=254):
            if (
                route.get("dst") == address
                and route["dst_len"] == int(prefix)
                and route["type"] == RTN_UNREACHABLE
            ):
                if route.get_attr("RTA_PRIORITY") == FALLBACK_METRIC:
                    return False
                ipr.route("del", dst=address, dst_len=int(prefix), type="unreachable")
        ipr.route(
            "add",
            dst=address,
            dst_len=int(prefix),
            type="unreachable",
            priority=FALLBACK_METRIC,
        )
        return True


def delete_unreachable_route(cidr: str) -> bool:
    address, prefix = cidr.split("/")
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2, table=254):
            if (
                route.get("dst") == address
                and route["dst_len"] == int(prefix)
                and route["type"] == RTN_UNREACHABLE
            ):
                ipr.route(
                    "del",
                    dst=address,
                    dst_len=int(prefix),
                    type="unreachable",
                    priority=route.get_attr("RTA_PRIORITY") or 0,
                )
                return True
    return False


def ensure_node_link(
    host_ifname: str, node_ifname: str, *, mac: str, mtu: int, address: str
) -> bool:
    """The node's own end of a port: a veth pair whose `host_ifname` end goes to the
    Neutron agent's bridge (the caller attaches it) and whose `node_ifname` end stays in
    this namespace with the port's MAC and `address` (address/prefix; its connected
    route is how the host reaches that network), both up. A pair that differs (half,
    wrong MAC, another peer) is replaced. True if anything was made or changed."""
    changed = False
    with IPRoute() as ipr:
        host, node = _index(ipr, host_ifname), _index(ipr, node_ifname)
        fits = False
        if host is not None and node is not None:
            link = ipr.get_links(node)[0]
            fits = (
                str(link.get_attr("IFLA_ADDRESS")).lower() == mac.lower()
                and link.get_attr("IFLA_LINK") == host
            )
        if not fits:
            _new_veth_pair(ipr, host_ifname, node_ifname, mac=mac, mtu=mtu)
            changed = True
        node_index = _require(ipr, node_ifname)
        for index in (_require(ipr, host_ifname), node_index):
            if ipr.get_links(index)[0].get_attr("IFLA_MTU") != mtu:
                ipr.link("set", index=index, mtu=mtu)
                changed = True
        ip, prefix = address.split("/")
        present = ipr.get_addr(index=node_index, family=2)
        for found in present:
            if (found.get_attr("IFA_ADDRESS"), found["prefixlen"]) != (ip, int(prefix)):
                ipr.addr(
                    "del",
                    index=node_index,
                    address=found.get_attr("IFA_ADDRESS"),
                    prefixlen=found["prefixlen"],
                )
                changed = True
        if not any(
            (f.get_attr("IFA_ADDRESS"), f["prefixlen"]) == (ip, int(prefix)) for f in present
        ):
            ipr.addr("add", index=node_index, address=ip, prefixlen=int(prefix))
            changed = True
        for index in (_require(ipr, host_ifname), node_index):
            if not ipr.get_links(index)[0]["flags"] & 1:  # IFF_UP
                ipr.link("set", index=index, state="up")
                changed = True
    return changed


def delete_links(names: Iterable[str]) -> list[str]:
    """Delete these links if present; returns the ones that were deleted."""
    deleted = []
    with IPRoute() as ipr:
        for name in names:
            for index in ipr.link_lookup(ifname=name):
                try:
                    ipr.link("del", index=index)
                    deleted.append(name)
                except NetlinkError as exc:
                    # The peer of a veth we just deleted vanishes with it.
                    if exc.code != errno.ENODEV:
                        raise
    return deleted


def namespaces() -> list[str]:
    return sorted(netns.listnetns())


def delete_namespace(name: str) -> None:
    try:
        netns.remove(name)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise


def create_namespace(name: str) -> None:
    if name not in netns.listnetns():
        netns.create(name)


def plug_veth_into_namespace(
    host_ifname: str,
    namespace: str,
    *,
    ifname: str = "eth0",
    mac: str,
    mtu: int,
    address: str,
    gateway: str | None,
) -> None:
    """A veth pair whose host end stays here (up) and whose other end becomes `ifname`
    inside `namespace`, with this MAC, MTU, address (CIDR form) and default route."""
    peer = f"{host_ifname[:10]}-p"
    ensure_parked_veth(host_ifname, peer, mac=mac, mtu=mtu)
    move_into_namespace(
        peer,
        f"{netns.NETNS_RUN_DIR}/{namespace}",
        ifname=ifname,
        mtu=mtu,
        address=address,
        gateway=gateway,
    )


# ---- pod plumbing (the CNI daemon) ------------------------------------------------------
@dataclass(frozen=True)
class PodInterface:
    """A pod's interface as found inside its network namespace (for CNI CHECK)."""

    ifname: str
    mac: str
    mtu: int
    up: bool
    addresses: tuple[str, ...]  # CIDR form
    default_gateway: str | None


def _index(ipr: IPRoute, ifname: str) -> int | None:
    found = ipr.link_lookup(ifname=ifname)
    return int(found[0]) if found else None


def _require(ipr: IPRoute, ifname: str) -> int:
    index = _index(ipr, ifname)
    if index is None:
        raise FileNotFoundError(f"link {ifname} does not exist")
    return index


def ensure_bridge(name: str) -> None:
    """A Linux bridge (made if missing, as os-vif does for Neutron's Linux bridge agent,
    which adds its VXLAN or physical interface to it), up."""
    with IPRoute() as ipr:
        if _index(ipr, name) is None:
            try:
                ipr.link("add", ifname=name, kind="bridge")
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:  # the agent made it meanwhile
                    raise
        ipr.link("set", index=_require(ipr, name), state="up")


def ensure_parked_veth(host_ifname: str, parked_ifname: str, *, mac: str, mtu: int) -> None:
    """A veth pair in this namespace: the host end up, the other end (later the pod's)
    down and parked with the port's MAC and MTU. A half pair is replaced."""
    with IPRoute() as ipr:
        if _index(ipr, host_ifname) is None or _index(ipr, parked_ifname) is None:
            _new_veth_pair(ipr, host_ifname, parked_ifname, mac=mac, mtu=mtu)
        ipr.link("set", index=_require(ipr, host_ifname), state="up")


def _new_veth_pair(ipr: IPRoute, name: str, peer: str, *, mac: str, mtu: int) -> None:
    """Replace whatever is called `name` or `peer` by a veth pair, `peer` with `mac`.
    (Deleting one end of a pair takes the other with it: each is looked up again.)"""
    for ifname in (name, peer):
        index = _index(ipr, ifname)
        if index is not None:
            ipr.link("del", index=index)
    ipr.link(
        "add",
        ifname=name,
        kind="veth",
        mtu=mtu,
        peer={"ifname": peer, "mtu": mtu, "address": mac},
    )


def attach_to_bridge(ifname: str, bridge: str) -> None:
    with IPRoute() as ipr:
        index, master = _index(ipr, ifname), _index(ipr, bridge)
        if index is None or master is None:
            raise FileNotFoundError(f"{ifname if index is None else bridge} does not exist")
        ipr.link("set", index=index, master=master)


def master_of(ifname: str) -> str | None:
    """The bridge this link is enslaved to, or None (also when the link is missing)."""
    with IPRoute() as ipr:
        index = _index(ipr, ifname)
        if index is None:
            return None
        master = ipr.get_links(index)[0].get("master")
        if not master:
            return None
        return str(ipr.get_links(master)[0].get("ifname"))


def masters() -> dict[str, str]:
    """{link: the bridge it is enslaved to} for every enslaved link here (one dump)."""
    with IPRoute() as ipr:
        links = ipr.get_links()
    names = {int(link["index"]): str(link.get("ifname")) for link in links}
    return {
        str(link.get("ifname")): names.get(int(link.get("master")), "")
        for link in links
        if link.get("master")
    }


def links_with_prefix(prefix: str) -> list[str]:
    return [name for name in link_names() if name.startswith(prefix)]


def _netns_fd(netns_path: str) -> int:
    return os.open(netns_path, os.O_RDONLY | os.O_CLOEXEC)


def move_into_namespace(
    parked_ifname: str,
    netns_path: str,
    *,
    ifname: str,
    mtu: int,
    address: str,
    gateway: str | None,
) -> None:
    """The parked end becomes `ifname` inside the pod's netns, with its address and
    default route. Repeatable: a pod end already moved is (re)configured in place."""
    with IPRoute() as ipr:
        parked = _index(ipr, parked_ifname)
        if parked is not None:
            fd = _netns_fd(netns_path)
            try:
                ipr.link("set", index=parked, net_ns_fd=fd)
            finally:
                os.close(fd)
    ip, prefix = address.split("/")

    def configure(ns: IPRoute) -> None:
        index = _index(ns, ifname)
        if index is None:
            index = _index(ns, parked_ifname)
            if index is None:
                raise FileNotFoundError(f"neither {parked_ifname} nor {ifname} is in {netns_path}")
            ns.link("set", index=index, ifname=ifname, mtu=mtu)
        have = {a.get("address") for a in ns.get_addr(index=index)}
        if ip not in have:
            ns.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ns.link("set", index=index, state="up")
        lo = _index(ns, "lo")
        if lo is not None:
            ns.link("set", index=lo, state="up")
        if gateway is not None:
            ns.route("replace", dst="0.0.0.0/0", gateway=gateway, oif=index)

    in_namespace(netns_path, configure)


def pod_interface(netns_path: str, ifname: str) -> PodInterface | None:
    """What the pod's netns holds under `ifname`; None if the netns or link is gone."""
    if not Path(netns_path).exists():
        return None

    def inspect(ns: IPRoute) -> PodInterface | None:
        index = _index(ns, ifname)
        if index is None:
            return None
        link = ns.get_links(index)[0]
        addresses = tuple(
            f"{a.get('address')}/{a['prefixlen']}" for a in ns.get_addr(index=index, family=2)
        )
        gateway = None
        for route in ns.get_routes(family=2, oif=index):
            if route["dst_len"] == 0 and route.get("gateway"):
                gateway = str(route.get("gateway"))
        return PodInterface(
            ifname=ifname,
            mac=str(link.get("address")),
            mtu=int(link.get("mtu")),
            up=bool(link["flags"] & 1),
            addresses=addresses,
            default_gateway=gateway,
        )

    return in_namespace(netns_path, inspect)


def delete_pod_interface(netns_path: str, ifname: str) -> bool:
    """Delete `ifname` in the pod's netns (its veth peer goes with it). False if the
    netns or the link was already gone."""
    if not netns_path or not Path(netns_path).exists():
        return False

    def delete(ns: IPRoute) -> bool:
        index = _index(ns, ifname)
        if index is None:
            return False
        ns.link("del", index=index)
        return True

    try:
        return in_namespace(netns_path, delete)
    except (OSError, NetlinkError) as exc:
        if getattr(exc, "code", None) == errno.ENODEV or getattr(exc, "errno", None) in (
            errno.ENOENT,
            errno.EINVAL,
        ):
            return False
        raise


def ensure_local_route(netns_path: str, cidr: str) -> bool:
    """`local <cidr> dev lo` in the netns's local table: its addresses are delivered to
    the namespace itself. Returns True if it had to be added."""
    address, prefix = cidr.split("/")

    def ensure(ns: IPRoute) -> bool:
        lo = _require(ns, "lo")
        for route in ns.get_routes(table=255):
            if (
                route.get("type") == 2  # RTN_LOCAL
                and route.get("dst") == address
                and route["dst_len"] == int(prefix)
            ):
                return False
        ns.route("replace", dst=cidr, type="local", table=255, oif=lo, scope=254)  # host
        return True

    return in_namespace(netns_path, ensure)


IFA_F_SECONDARY = 0x01
FLOATING_IP_PREFIX = 32  # how Neutron's L3 agent puts floating IPs on a gateway port


def gateway_secondaries(netns_path: str, prefix: str) -> dict[str, str]:
    """{address: "address/len"} of the secondary, non-/32 IPv4 addresses on the links
    whose names start with `prefix` (a router's gateway port, `qg-`) in the netns."""

    def listed(ns: IPRoute) -> dict[str, str]:
        links = {
            link["index"]
            for link in ns.get_links()
            if link.get_attr("IFLA_IFNAME").startswith(prefix)
        }
        return {
            str(a.get_attr("IFA_ADDRESS")): f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in ns.get_addr(family=socket.AF_INET)
            if a["index"] in links
            and a["flags"] & IFA_F_SECONDARY
            and a["prefixlen"] != FLOATING_IP_PREFIX
        }

    return in_namespace(netns_path, listed)


def ensure_gateway_secondary(netns_path: str, prefix: str, address: str) -> bool:
    """`address` on the netns's link named `prefix...` as a secondary address of the
    subnet of the link's primary address that holds it (a /32 where none does: that
    is how Neutron marks its floating IPs, which its agent removes). True if added."""

    def ensure(ns: IPRoute) -> bool:
        link = next(
            (k for k in ns.get_links() if k.get_attr("IFLA_IFNAME").startswith(prefix)), None
        )
        if link is None:
            raise OSError(errno.ENODEV, f"no link {prefix}* in {netns_path}")
        index = link["index"]
        held = ns.get_addr(index=index, family=socket.AF_INET)
        if address in {str(a.get_attr("IFA_ADDRESS")) for a in held}:
            return False
        length = next(
            (
                a["prefixlen"]
                for a in held
                if not a["flags"] & IFA_F_SECONDARY
                and ipaddress.ip_address(address)
                in ipaddress.ip_network(
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}", strict=False
                )
            ),
            None,
        )
        if length is None:
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"{address} is on none of {link.get_attr('IFLA_IFNAME')}'s subnets",
            )
        ns.addr("add", index=index, address=address, prefixlen=length)
        return True

    return in_namespace(netns_path, ensure)


def delete_gateway_secondary(netns_path: str, prefix: str, cidr: str) -> bool:
    """Removes `cidr` (as gateway_secondaries lists it) from the `prefix...` link."""
    address, length = cidr.split("/")

    def delete(ns: IPRoute) -> bool:
        for link in ns.get_links():
            if link.get_attr("IFLA_IFNAME").startswith(prefix):
                try:
                    ns.addr("del", index=link["index"], address=address, prefixlen=int(length))
                except NetlinkError as exc:
                    if exc.code == errno.EADDRNOTAVAIL:
                        continue
                    raise
                return True
        return False

    return in_namespace(netns_path, delete)


def interface_macs(netns_path: str) -> dict[str, str]:
    """{ifname: MAC} of the links inside a netns (loopback left out); {} if the netns
    is gone."""
    if not Path(netns_path).exists():
        return {}

    def read(ns: IPRoute) -> dict[str, str]:
        found = {}
        for link in ns.get_links():
            name, mac = str(link.get("ifname")), str(link.get("address") or "")
            if name != "lo" and mac and mac != "00:00:00:00:00:00":
                found[name] = mac
        return found

    try:
        return in_namespace(netns_path, read)
    except FileNotFoundError:
        return {}


def host_end_of(netns_path: str, ifname: str) -> str | None:
    """The name, in this namespace, of the veth peer of `ifname` inside the netns: the
    pod's host end whatever it is called. None if the netns, the interface or the peer
    is gone (or `ifname` is no veth)."""
    if not Path(netns_path).exists():
        return None

    def peer_index(ns: IPRoute) -> int | None:
        index = _index(ns, ifname)
        if index is None:
            return None
        peer = ns.get_links(index)[0].get_attr("IFLA_LINK")
        return int(peer) if peer else None

    try:
        index = in_namespace(netns_path, peer_index)
    except FileNotFoundError:
        return None
    if index is None:
        return None
    with IPRoute() as ipr:
        try:
            return str(ipr.get_links(index)[0].get("ifname"))
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                return None
            raise


def rename_link(old: str, new: str) -> bool:
    """Rename a link in this namespace (down, rename, up: Linux refuses to rename a link
    that is up); its bridge membership stays. False if neither name exists; True when
    `new` exists afterwards."""
    with IPRoute() as ipr:
        index = _index(ipr, old)
        if index is None:
            return _index(ipr, new) is not None
        if old == new:
            return True
        ipr.link("set", index=index, state="down")
        ipr.link("set", index=index, ifname=new)
        ipr.link("set", index=index, state="up")
        return True


# Routes to pod addresses that the node's kubelet probes (docs/cni.md, "Probes"): one
# /32 per address through the loopback device, marked with this routing protocol number
# so that they can be listed and removed (rtnetlink's RTPROT_* values up to 99 are
# taken by routing daemons; 0xfe is not assigned).
PROBE_ROUTE_PROTOCOL = 0xFE


def update_probe_routes(add: Iterable[str], remove: Iterable[str]) -> set[str]:
    """Add and remove /32 probe routes through `lo` (both idempotent). An address the
    node already routes itself (a local address, a connected subnet, a route of its
    own: anything but its default route or an unreachable/blackhole range) gets no
    route: a tenant range overlapping the node's networks must not take the node's
    traffic. Returns those skipped."""
    skipped: set[str] = set()
    with IPRoute() as ipr:
        lo = _require(ipr, "lo")
        for ip in add:
            if _routed_by_node(ipr, ip):
                skipped.add(ip)
                continue
            try:
                ipr.route("add", dst=f"{ip}/32", oif=lo, proto=PROBE_ROUTE_PROTOCOL)
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise
        for ip in remove:
            try:
                ipr.route("del", dst=f"{ip}/32", oif=lo, proto=PROBE_ROUTE_PROTOCOL)
            except NetlinkError as exc:
                if exc.code != errno.ESRCH:
                    raise
    return skipped


RTN_UNICAST = 1
RTN_LOCAL = 2


def node_routed(addresses: Iterable[str]) -> set[str]:
    """Those of `addresses` the node routes itself (see update_probe_routes)."""
    with IPRoute() as ipr:
        return {ip for ip in addresses if _routed_by_node(ipr, ip)}


def _routed_by_node(ipr: IPRoute, ip: str) -> bool:
    """Does the node's main table send `ip` somewhere on purpose (longest match)?"""
    try:
        routes = ipr.route("get", dst=ip)
    except NetlinkError:
        return False  # unreachable/prohibited: nothing of the node's is there
    for route in routes:
        if route.get_attr("RTA_TABLE") not in (None, 254) and route["type"] != RTN_LOCAL:
            continue
        if route["type"] == RTN_LOCAL:
            return True
        if route["type"] != RTN_UNICAST or route["proto"] == PROBE_ROUTE_PROTOCOL:
            return False
    # A unicast answer: specific (connected or explicit) unless only the default matches.
    return _matching_prefix(ipr, ip) > 0


def _matching_prefix(ipr: IPRoute, ip: str) -> int:
    """The longest prefix of a unicast route in the main table that covers `ip` (0: only
    the default route)."""
    address = ipaddress.ip_address(ip)
    best = 0
    for route in ipr.get_routes(family=2, table=254):
        if route["type"] != RTN_UNICAST or route["proto"] == PROBE_ROUTE_PROTOCOL:
            continue
        length = int(route["dst_len"])
        dst = route.get_attr("RTA_DST")
        if length and dst and address in ipaddress.ip_network(f"{dst}/{length}", strict=False):
            best = max(best, length)
    return best


def ipv4_addresses() -> list[str]:
    """Every IPv4 address of this network namespace's interfaces (loopback included)."""
    with IPRoute() as ipr:
        return sorted({str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=socket.AF_INET)})
