"""Idempotent Neutron operations the devbox and its tests need."""

from __future__ import annotations

from dataclasses import dataclass

from openstack.connection import Connection


@dataclass(frozen=True)
class ExternalNetwork:
    network_id: str
    subnet_id: str


def ensure_external_network(
    conn: Connection, name: str, physnet: str, cidr: str
) -> ExternalNetwork:
    """A shared, external flat network on `physnet` with a subnet that has no gateway:
    routers get addresses on it but no default route, so nothing is routed off the box."""
    net = conn.network.find_network(name, ignore_missing=True)
    if net is None:
        net = conn.network.create_network(
            name=name,
            is_router_external=True,
            is_shared=False,
            provider_network_type="flat",
            provider_physical_network=physnet,
        )
    subnet_name = f"{name}-subnet"
    subnet = conn.network.find_subnet(subnet_name, network_id=net.id, ignore_missing=True)
    if subnet is None:
        subnet = conn.network.create_subnet(
            name=subnet_name,
            network_id=net.id,
            ip_version=4,
            cidr=cidr,
            gateway_ip=None,
            is_dhcp_enabled=False,
        )
    return ExternalNetwork(str(net.id), str(subnet.id))


def alive_agents(conn: Connection) -> dict[str, bool]:
    """Agent binary -> alive, for the agents Neutron knows of on any host."""
    return {agent.binary: bool(agent.is_alive) for agent in conn.network.agents()}
