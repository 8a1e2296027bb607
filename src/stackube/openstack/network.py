"""Neutron operations for the devbox and for tenant networks (lookups return small
typed values; creates and deletes are idempotent where Neutron lets them be)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openstack import exceptions as sdk
from openstack.connection import Connection

from stackube.errors import PermanentError
from stackube.openstack.errors import translating


@dataclass(frozen=True)
class ExternalNetwork:
    network_id: str
    subnet_id: str


@dataclass(frozen=True)
class Network:
    id: str
    name: str
    project_id: str
    mtu: int


@dataclass(frozen=True)
class Subnet:
    id: str
    name: str
    network_id: str
    cidr: str
    gateway_ip: str | None


@dataclass(frozen=True)
class Router:
    id: str
    name: str
    external_network_id: str | None
    # The gateway's addresses on the external network (where NodePort and LoadBalancer
    # traffic enters the router).
    external_ips: tuple[str, ...] = ()


@dataclass(frozen=True)
class Port:
    """A port: identity, owner, addressing, binding and state."""

    id: str
    name: str
    network_id: str
    project_id: str
    mac: str
    fixed_ips: tuple[tuple[str, str], ...]  # (subnet id, address)
    status: str
    device_owner: str
    device_id: str
    host: str
    description: str = ""

    def address_on(self, subnet_id: str) -> str | None:
        return next((ip for sid, ip in self.fixed_ips if sid == subnet_id), None)


def _port(raw: Any) -> Port:
    return Port(
        id=str(raw.id),
        name=str(raw.name or ""),
        network_id=str(raw.network_id),
        project_id=str(raw.project_id or ""),
        mac=str(raw.mac_address),
        fixed_ips=tuple((str(ip["subnet_id"]), str(ip["ip_address"])) for ip in raw.fixed_ips),
        status=str(raw.status or ""),
        device_owner=str(raw.device_owner or ""),
        device_id=str(raw.device_id or ""),
        host=str(raw.binding_host_id or ""),
        description=str(raw.description or ""),
    )


def _network(raw: Any) -> Network:
    return Network(str(raw.id), str(raw.name), str(raw.project_id), int(raw.mtu or 0))


def _subnet(raw: Any) -> Subnet:
    return Subnet(str(raw.id), str(raw.name), str(raw.network_id), str(raw.cidr), raw.gateway_ip)


def _router(raw: Any) -> Router:
    gateway = raw.external_gateway_info or {}
    ips = tuple(str(ip["ip_address"]) for ip in gateway.get("external_fixed_ips") or [])
    return Router(str(raw.id), str(raw.name), gateway.get("network_id"), ips)


@translating("Neutron external network")
def ensure_external_network(
    conn: Connection,
    name: str,
    physnet: str,
    cidr: str,
    pools: Sequence[tuple[str, str]],
) -> ExternalNetwork:
    """A shared, external flat network on `physnet` with a subnet that has no gateway:
    routers get addresses on it but no default route, so nothing is routed off the box.
    Neutron allocates only from `pools` (first, last): the rest is the host's."""
    net = conn.network.find_network(name, ignore_missing=True)
    if net is None:
        net = conn.network.create_network(
            name=name,
            is_router_external=True,
            is_shared=False,
            provider_network_type="flat",
            provider_physical_network=physnet,
        )
    wanted = [{"start": first, "end": last} for first, last in pools]
    subnet_name = f"{name}-subnet"
    subnet = conn.network.find_subnet(subnet_name, network_id=net.id, ignore_missing=True)
    if subnet is not None and subnet.cidr != cidr:
        # Moved to another range: possible while nothing (no router) uses the old one.
        if any(True for _ in conn.network.ports(network_id=net.id)):
            raise PermanentError(
                f"external network {name} is on {subnet.cidr}, not {cidr}, and routers "
                "still use it: delete the tenants (or the devbox) first"
            )
        conn.network.delete_subnet(subnet)
        subnet = None
    if subnet is None:
        subnet = conn.network.create_subnet(
            name=subnet_name,
            network_id=net.id,
            ip_version=4,
            cidr=cidr,
            gateway_ip=None,
            is_dhcp_enabled=False,
            allocation_pools=wanted,
        )
    elif list(subnet.allocation_pools or []) != wanted:
        conn.network.update_subnet(subnet, allocation_pools=wanted)
    return ExternalNetwork(str(net.id), str(subnet.id))


# ---- networks ---------------------------------------------------------------------------
@translating("Neutron network lookup")
def get_network(conn: Connection, network_id: str) -> Network | None:
    raw = conn.network.find_network(network_id, ignore_missing=True)
    return None if raw is None else _network(raw)


@translating("Neutron network lookup")
def find_networks(conn: Connection, name: str, project_id: str) -> list[Network]:
    """Every network of this project with this name (Neutron allows duplicates)."""
    return [_network(n) for n in conn.network.networks(name=name, project_id=project_id)]


@translating("Neutron network create")
def create_network(conn: Connection, name: str, project_id: str, description: str) -> Network:
    raw = conn.network.create_network(name=name, project_id=project_id, description=description)
    return _network(raw)


@translating("Neutron network delete")
def delete_network(conn: Connection, network_id: str) -> None:
    conn.network.delete_network(network_id, ignore_missing=True)


# ---- subnets ----------------------------------------------------------------------------
@translating("Neutron subnet lookup")
def subnets_of(conn: Connection, network_id: str) -> list[Subnet]:
    return [_subnet(s) for s in conn.network.subnets(network_id=network_id)]


@translating("Neutron subnet create")
def create_subnet(
    conn: Connection,
    name: str,
    network_id: str,
    project_id: str,
    *,
    cidr: str,
    gateway_ip: str | None,
) -> Subnet:
    """A subnet without DHCP; `gateway_ip` None: Neutron's default, the range's first
    address (sending null would make a subnet with no gateway, which no router joins)."""
    version = 6 if ":" in cidr else 4
    gateway: dict[str, str] = {"gateway_ip": gateway_ip} if gateway_ip else {}
    raw = conn.network.create_subnet(
        name=name,
        network_id=network_id,
        project_id=project_id,
        ip_version=version,
        cidr=cidr,
        # Pods get their addresses from the CNI daemon, not DHCP: no dnsmasq per tenant.
        is_dhcp_enabled=False,
        **gateway,
    )
    return _subnet(raw)


@translating("Neutron subnet delete")
def delete_subnet(conn: Connection, subnet_id: str) -> None:
    conn.network.delete_subnet(subnet_id, ignore_missing=True)


# ---- routers ----------------------------------------------------------------------------
@translating("Neutron router lookup")
def find_routers(conn: Connection, name: str, project_id: str) -> list[Router]:
    return [_router(r) for r in conn.network.routers(name=name, project_id=project_id)]


@translating("Neutron router lookup")
def get_router(conn: Connection, router_id: str) -> Router | None:
    raw = conn.network.find_router(router_id, ignore_missing=True)
    return None if raw is None else _router(raw)


@translating("Neutron router create")
def create_router(
    conn: Connection, name: str, project_id: str, external_network_id: str | None
) -> Router:
    gateway = {"network_id": external_network_id} if external_network_id else None
    raw = conn.network.create_router(
        name=name, project_id=project_id, external_gateway_info=gateway
    )
    return _router(raw)


@translating("Neutron router gateway")
def set_router_gateway(conn: Connection, router_id: str, external_network_id: str) -> None:
    conn.network.update_router(router_id, external_gateway_info={"network_id": external_network_id})


def _interface_ports(conn: Connection, router_id: str) -> list[Any]:
    return [
        p
        for p in conn.network.ports(device_id=router_id)
        if p.device_owner == "network:router_interface"
    ]


@translating("Neutron router interfaces")
def router_interface_subnets(conn: Connection, router_id: str) -> set[str]:
    return {ip["subnet_id"] for p in _interface_ports(conn, router_id) for ip in p.fixed_ips}


@translating("Neutron router interfaces")
def router_interface_ports(conn: Connection, router_id: str) -> list[str]:
    """Ids of the router's interface ports, with or without an address (a port left
    without one by a removal that raced an add still holds the router)."""
    return [p.id for p in _interface_ports(conn, router_id)]


@translating("Neutron router interface remove")
def remove_router_interface_port(conn: Connection, router_id: str, port_id: str) -> None:
    try:
        conn.network.remove_interface_from_router(router_id, port=port_id)
    except sdk.NotFoundException:
        return


@translating("Neutron router interface add")
def add_router_interface(conn: Connection, router_id: str, subnet_id: str) -> None:
    conn.network.add_interface_to_router(router_id, subnet=subnet_id)


@translating("Neutron router delete")
def delete_router(conn: Connection, router_id: str) -> None:
    conn.network.delete_router(router_id, ignore_missing=True)


# ---- ports ------------------------------------------------------------------------------
@translating("Neutron port lookup")
def ports_on(conn: Connection, network_id: str) -> list[Port]:
    return [_port(p) for p in conn.network.ports(network_id=network_id)]


@translating("Neutron router interfaces")
def router_ports(conn: Connection, router_id: str, network_id: str) -> list[Port]:
    """The router's ports on this network (its interfaces there)."""
    return [_port(p) for p in conn.network.ports(device_id=router_id, network_id=network_id)]


@translating("Neutron port delete")
def delete_port(conn: Connection, port_id: str) -> None:
    conn.network.delete_port(port_id, ignore_missing=True)


# ---- pod ports (the CNI daemon) ---------------------------------------------------------
@translating("Neutron subnet lookup")
def get_subnet(conn: Connection, subnet_id: str) -> Subnet | None:
    raw = conn.network.find_subnet(subnet_id, ignore_missing=True)
    return None if raw is None else _subnet(raw)


@translating("Neutron port create")
def create_pod_port(
    conn: Connection,
    *,
    network_id: str,
    project_id: str,
    name: str,
    device_id: str,
    device_owner: str,
    host: str,
    description: str = "",
    mac: str | None = None,
    fixed_ip: tuple[str, str] | None = None,
) -> Port:
    """A port bound to `host` (the node's agent wires it); the project's default
    security group applies. `mac` and `fixed_ip` ((subnet id, address)) ask for a
    given MAC and address (admin only; a repair re-creates a deleted pod port with
    them); Neutron answers 409 when another port holds either."""
    extra: dict[str, Any] = {}
    if mac is not None:
        extra["mac_address"] = mac
    if fixed_ip is not None:
        extra["fixed_ips"] = [{"subnet_id": fixed_ip[0], "ip_address": fixed_ip[1]}]
    raw = conn.network.create_port(
        network_id=network_id,
        project_id=project_id,
        name=name,
        device_id=device_id,
        device_owner=device_owner,
        binding_host_id=host,
        description=description,
        **extra,
    )
    return _port(raw)


@translating("Neutron port update")
def rebind_port(conn: Connection, port_id: str, host: str) -> Port:
    """Bind the port to `host` again (someone unbound or moved it)."""
    return _port(conn.network.update_port(port_id, binding_host_id=host))


@translating("Neutron port update")
def rename_port(conn: Connection, port_id: str, *, name: str, device_id: str) -> Port:
    return _port(conn.network.update_port(port_id, name=name, device_id=device_id))


@translating("Neutron port lookup")
def get_pod_port(conn: Connection, port_id: str) -> Port | None:
    try:
        return _port(conn.network.get_port(port_id))
    except sdk.NotFoundException:
        return None


@translating("Neutron port lookup")
def pod_ports(
    conn: Connection,
    *,
    device_owner: str,
    host: str | None = None,
    device_id: str | None = None,
    network_id: str | None = None,
) -> list[Port]:
    filters: dict[str, str] = {"device_owner": device_owner}
    if host is not None:
        filters["binding:host_id"] = host
    if device_id is not None:
        filters["device_id"] = device_id
    if network_id is not None:
        filters["network_id"] = network_id
    return [_port(p) for p in conn.network.ports(**filters)]


# ---- security groups --------------------------------------------------------------------
@translating("Neutron security group rule")
def allow_ingress_from(
    conn: Connection, project_id: str, remote_prefix: str, description: str
) -> bool:
    """An ingress rule (any protocol) from `remote_prefix` in the project's default
    security group; True if it had to be added. Listing the project's groups by
    tenant_id makes Neutron create its default group if it does not exist yet."""
    groups = list(conn.network.security_groups(tenant_id=project_id, name="default"))
    if not groups:
        raise sdk.ResourceNotFound(f"project {project_id} has no default security group")
    group = groups[0]
    for rule in conn.network.security_group_rules(security_group_id=group.id):
        if rule.direction == "ingress" and rule.remote_ip_prefix == remote_prefix:
            return False
    try:
        conn.network.create_security_group_rule(
            security_group_id=group.id,
            direction="ingress",
            ethertype="IPv6" if ":" in remote_prefix else "IPv4",
            remote_ip_prefix=remote_prefix,
            description=description,
        )
    except sdk.ConflictException:
        return False
    return True


@translating("Neutron security group delete")
def delete_security_groups(conn: Connection, project_id: str) -> int:
    """Every security group of a project (Neutron keeps them after the project is gone).
    A group still used by a port is a conflict: retried by the caller."""
    deleted = 0
    # Filtered by project (not every project's groups, a list that grows with the cloud):
    # Neutron then makes the project's default group if it has none, and lists it too,
    # so it goes with the rest. A later listing filtered by this project would make it
    # again: nothing in a Tenant's deletion lists them after this.
    groups = list(conn.network.security_groups(project_id=project_id))
    for group in groups:
        conn.network.delete_security_group(group.id, ignore_missing=True)
        deleted += 1
    return deleted


@dataclass(frozen=True)
class FloatingIP:
    id: str
    address: str
    project_id: str
    network_id: str
    description: str


def _floating_ip(raw: Any) -> FloatingIP:
    return FloatingIP(
        str(raw.id),
        str(raw.floating_ip_address),
        str(raw.project_id or ""),
        str(raw.floating_network_id),
        str(raw.description or ""),
    )


@translating("Neutron floating IP lookup")
def get_floating_ip(conn: Connection, floating_ip_id: str) -> FloatingIP | None:
    raw = conn.network.find_ip(floating_ip_id, ignore_missing=True)
    return None if raw is None else _floating_ip(raw)


@translating("Neutron floating IP lookup")
def find_floating_ips(conn: Connection, project_id: str, description: str) -> list[FloatingIP]:
    """The project's floating IPs with exactly this description."""
    return [
        _floating_ip(raw)
        for raw in conn.network.ips(project_id=project_id, description=description)
        if raw.description == description
    ]


@translating("Neutron floating IP create")
def create_floating_ip(
    conn: Connection,
    external_network_id: str,
    project_id: str,
    description: str,
    address: str | None = None,
) -> FloatingIP:
    """An unassociated floating IP on the external network, in `project_id` (its quota
    and accounting); `address` asks for that address (Neutron refuses it if taken)."""
    fields: dict[str, Any] = {
        "floating_network_id": external_network_id,
        "project_id": project_id,
        "description": description,
    }
    if address:
        fields["floating_ip_address"] = address
    return _floating_ip(conn.network.create_ip(**fields))


@translating("Neutron floating IP delete")
def delete_floating_ip(conn: Connection, floating_ip_id: str) -> None:
    conn.network.delete_ip(floating_ip_id, ignore_missing=True)


@translating("Neutron floating IP delete")
def delete_floating_ips(conn: Connection, project_id: str, description_prefix: str) -> list[str]:
    """Deletes the project's floating IPs whose description starts with the prefix;
    returns their addresses."""
    released = []
    for raw in conn.network.ips(project_id=project_id):
        if str(raw.description or "").startswith(description_prefix):
            conn.network.delete_ip(raw.id, ignore_missing=True)
            released.append(str(raw.floating_ip_address))
    return released
