"""Plug drivers: how a pod's veth meets the Neutron agent of this node.

Both make a veth pair whose host end is `tap<port id[:11]>` and whose other end is
parked in the host namespace (`stp<port id[:11]>`, the port's MAC and MTU) until an ADD
moves it into the pod; they differ in what the host end is attached to.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from stackube.cni.result import host_ifname
from stackube.host import netlink, ovs


def parked_ifname(port_id: str) -> str:
    return f"stp{port_id[:11]}"


def linux_bridge_name(network_id: str) -> str:
    """The bridge Neutron's Linux bridge agent uses for a network."""
    return f"brq{network_id[:11]}"


class PlugDriver(Protocol):
    name: str

    def plug(self, *, port_id: str, network_id: str, mac: str, mtu: int, device_id: str) -> None:
        """Host end attached and up, pod end parked here (idempotent)."""

    def unplug(self, port_id: str) -> None:
        """Host end detached and both ends gone (idempotent)."""

    def is_plugged(self, port_id: str, network_id: str) -> bool:
        """The host end exists and is attached where the agent expects it."""

    def attached(self, ports: Iterable[tuple[str, str]]) -> set[str]:
        """Of these (port id, network id), the ports whose host end is attached where
        the agent expects it (one look at the host for all of them)."""

    def rewire(
        self, host_end: str, *, port_id: str, network_id: str, mac: str, device_id: str
    ) -> None:
        """The pod's host end (the link `host_end`; its pod end stays in the pod) serves
        `port_id`: renamed to the port's tap name and attached where the agent expects
        it (a port re-created after a deletion, or a host end detached; idempotent)."""


class LinuxBridgeDriver:
    """The host end joins `brq<network id[:11]>`. For `compute:` ports the agent does not
    enslave taps itself (Nova's os-vif does), so we make the bridge if it is not there
    yet and attach the tap, as os-vif does; the agent adds its VXLAN interface to it."""

    name = "linuxbridge"

    def plug(self, *, port_id: str, network_id: str, mac: str, mtu: int, device_id: str) -> None:
        tap = host_ifname(port_id)
        netlink.ensure_parked_veth(tap, parked_ifname(port_id), mac=mac, mtu=mtu)
        bridge = linux_bridge_name(network_id)
        netlink.ensure_bridge(bridge)
        netlink.attach_to_bridge(tap, bridge)

    def unplug(self, port_id: str) -> None:
        netlink.delete_links([host_ifname(port_id), parked_ifname(port_id)])

    def is_plugged(self, port_id: str, network_id: str) -> bool:
        return netlink.master_of(host_ifname(port_id)) == linux_bridge_name(network_id)

    def attached(self, ports: Iterable[tuple[str, str]]) -> set[str]:
        masters = netlink.masters()
        return {
            port_id
            for port_id, network_id in ports
            if masters.get(host_ifname(port_id)) == linux_bridge_name(network_id)
        }

    def rewire(
        self, host_end: str, *, port_id: str, network_id: str, mac: str, device_id: str
    ) -> None:
        tap = host_ifname(port_id)
        if not netlink.rename_link(host_end, tap):
            raise FileNotFoundError(f"neither {host_end} nor {tap} exists")
        bridge = linux_bridge_name(network_id)
        netlink.ensure_bridge(bridge)
        netlink.attach_to_bridge(tap, bridge)


def ovs_external_ids(port_id: str, mac: str, device_id: str) -> dict[str, str]:
    """What Neutron's Open vSwitch agent (and os-vif) key a VIF by."""
    return {
        "iface-id": port_id,
        "iface-status": "active",
        "attached-mac": mac,
        "vm-uuid": device_id,
    }


class OpenVSwitchDriver:
    """The host end becomes a port of the integration bridge with os-vif's external ids
    (a veth survives a vswitchd restart, unlike internal ports moved into pods)."""

    name = "openvswitch"

    def __init__(self, integration_bridge: str = "br-int") -> None:
        self.bridge = integration_bridge

    def plug(self, *, port_id: str, network_id: str, mac: str, mtu: int, device_id: str) -> None:
        tap = host_ifname(port_id)
        netlink.ensure_parked_veth(tap, parked_ifname(port_id), mac=mac, mtu=mtu)
        ovs.vsctl(
            ovs.add_port_commands(self.bridge, tap, ovs_external_ids(port_id, mac, device_id))
        )

    def unplug(self, port_id: str) -> None:
        ovs.vsctl(ovs.del_port_commands(self.bridge, host_ifname(port_id)))
        netlink.delete_links([host_ifname(port_id), parked_ifname(port_id)])

    def is_plugged(self, port_id: str, network_id: str) -> bool:
        return ovs.port_bridge(host_ifname(port_id)) == self.bridge

    def attached(self, ports: Iterable[tuple[str, str]]) -> set[str]:
        on_bridge = set(ovs.vsctl(["list-ports", self.bridge]).split())
        return {port_id for port_id, _ in ports if host_ifname(port_id) in on_bridge}

    def rewire(
        self, host_end: str, *, port_id: str, network_id: str, mac: str, device_id: str
    ) -> None:
        tap = host_ifname(port_id)
        ovs.vsctl(ovs.del_port_commands(self.bridge, host_end))
        if not netlink.rename_link(host_end, tap):
            raise FileNotFoundError(f"neither {host_end} nor {tap} exists")
        ovs.vsctl(
            ovs.add_port_commands(self.bridge, tap, ovs_external_ids(port_id, mac, device_id))
        )


def driver_for(plugin_name: str, integration_bridge: str) -> PlugDriver:
    if plugin_name in ("linuxbridge", "linux_bridge"):
        return LinuxBridgeDriver()
    if plugin_name in ("openvswitch", "ovs"):
        return OpenVSwitchDriver(integration_bridge)
    raise ValueError(f"plugin-name {plugin_name!r}: use linuxbridge or openvswitch")
