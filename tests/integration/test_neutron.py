"""Neutron for real: network, subnet, router with the external gateway, a port plugged
into a netns "pod" the way TESTBED.md describes, and a ping to the router."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from stackube.host import netlink
from tests.integration.conftest import Pods, unique

pytestmark = pytest.mark.integration


def wait_port_active(conn: Connection, port_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if conn.network.get_port(port_id).status == "ACTIVE":
            return
        time.sleep(0.5)
    raise AssertionError(f"port {port_id} not ACTIVE within {timeout}s")


@pytest.fixture
def neutron_cleanup(os_admin: Connection) -> Iterator[ExitStack]:
    with ExitStack() as stack:
        yield stack


def test_pod_on_a_neutron_port_pings_its_router(
    devbox: Devbox, os_admin: Connection, pods: Pods, neutron_cleanup: ExitStack
) -> None:
    net_api = os_admin.network
    name = unique("stkb-it")
    ext = net_api.find_network(devbox.settings.external_network_name)
    net = net_api.create_network(name=name)
    neutron_cleanup.callback(net_api.delete_network, net, ignore_missing=True)
    subnet = net_api.create_subnet(
        name=name, network_id=net.id, ip_version=4, cidr="10.244.0.0/24", gateway_ip="10.244.0.1"
    )
    neutron_cleanup.callback(net_api.delete_subnet, subnet, ignore_missing=True)
    router = net_api.create_router(name=name, external_gateway_info={"network_id": ext.id})
    neutron_cleanup.callback(net_api.delete_router, router, ignore_missing=True)
    net_api.add_interface_to_router(router, subnet=subnet.id)
    neutron_cleanup.callback(net_api.remove_interface_from_router, router, subnet=subnet.id)
    port = net_api.create_port(
        name=name,
        network_id=net.id,
        device_owner="stackube:test",
        device_id=name,
        binding_host_id=socket.gethostname(),
    )
    neutron_cleanup.callback(net_api.delete_port, port, ignore_missing=True)
    assert port.binding_vif_type == "bridge"

    ip = port.fixed_ips[0]["ip_address"]
    pod = pods.make(
        f"tap{port.id[:11]}",
        mac=port.mac_address,
        mtu=net.mtu,
        address=f"{ip}/24",
        gateway="10.244.0.1",
    )
    wait_port_active(os_admin, port.id)
    # With a non-compute owner the agent enslaves the tap to the network's bridge itself.
    bridge = f"brq{net.id[:11]}"
    assert bridge in netlink.link_names()

    deadline = time.monotonic() + 30
    result = pod.run("ping", "-c", "1", "-W", "1", "10.244.0.1")
    while result.returncode != 0 and time.monotonic() < deadline:
        result = pod.run("ping", "-c", "1", "-W", "1", "10.244.0.1")
    assert result.returncode == 0, result.stdout + result.stderr

    neutron_cleanup.close()
    for find in (net_api.find_port, net_api.find_router, net_api.find_subnet, net_api.find_network):
        assert find(name, ignore_missing=True) is None
    # The agents remove the router namespace and the bridge once the resources are gone.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if (
            f"qrouter-{router.id}" not in netlink.namespaces()
            and bridge not in netlink.link_names()
        ):
            break
        time.sleep(0.5)
    assert f"qrouter-{router.id}" not in netlink.namespaces()
    assert bridge not in netlink.link_names()
