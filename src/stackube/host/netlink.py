"""Links and network namespaces through netlink (pyroute2), with idempotent calls."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from pyroute2 import IPRoute, NetlinkError, netns


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
    with IPRoute() as ipr:
        ipr.link("add", ifname=host_ifname, kind="veth", peer={"ifname": peer}, mtu=mtu)
        ipr.link("set", index=ipr.link_lookup(ifname=peer)[0], net_ns_fd=namespace)
        ipr.link("set", index=ipr.link_lookup(ifname=host_ifname)[0], state="up")
    ip, prefix = address.split("/")
    with IPRoute(netns=namespace) as ns:
        index = ns.link_lookup(ifname=peer)[0]
        ns.link("set", index=index, ifname=ifname, address=mac, mtu=mtu)
        ns.addr("add", index=index, address=ip, prefixlen=int(prefix))
        ns.link("set", index=index, state="up")
        lo = ns.link_lookup(ifname="lo")[0]
        ns.link("set", index=lo, state="up")
        if gateway is not None:
            ns.route("add", dst="0.0.0.0/0", gateway=gateway)
