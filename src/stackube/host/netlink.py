"""Links and network namespaces through netlink (pyroute2), with idempotent calls."""

from __future__ import annotations

import errno
from collections.abc import Iterable

from pyroute2 import IPRoute, NetlinkError, netns


def link_names() -> list[str]:
    with IPRoute() as ipr:
        return [str(link.get("ifname")) for link in ipr.get_links()]


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


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
