import pytest

from stackube.cni import result

pytestmark = pytest.mark.unit

POD = result.PodAddressing(
    port_id="0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
    mac="fa:16:3e:00:00:01",
    ip="10.244.0.10",
    cidr="10.244.0.0/16",
    gateway="10.244.0.1",
    mtu=1450,
    dns_servers=("10.96.0.10",),
    dns_search=tuple(result.dns_search("test")),
)


def test_names_follow_neutron_and_the_linux_bridge_agent() -> None:
    assert result.port_name("test", "nginx-1") == "kube-test-nginx-1"
    tap = result.host_ifname(POD.port_id)
    assert tap == "tap0a1b2c3d-4e" and len(tap) <= result.LINUX_IFNAME_MAX


def test_a_1_0_result_has_the_interface_address_default_route_and_dns() -> None:
    doc = result.render(POD, "eth0", "/var/run/netns/cni-1", "1.0.0")
    assert doc["interfaces"] == [
        {"name": "eth0", "mac": "fa:16:3e:00:00:01", "sandbox": "/var/run/netns/cni-1"}
    ]
    assert doc["ips"] == [{"address": "10.244.0.10/16", "gateway": "10.244.0.1", "interface": 0}]
    assert doc["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
    assert doc["dns"] == {
        "nameservers": ["10.96.0.10"],
        "search": ["test.svc.cluster.local", "svc.cluster.local", "cluster.local"],
    }


def test_older_results_say_the_ip_version() -> None:
    assert result.render(POD, "eth0", "/ns", "0.4.0")["ips"][0]["version"] == "4"
    assert "version" not in result.render(POD, "eth0", "/ns", "1.0.0")["ips"][0]


def test_ipv6_and_no_gateway() -> None:
    v6 = result.PodAddressing("p", "fa:16:3e:00:00:02", "fd00::5", "fd00::/64", None, 1450)
    doc = result.render(v6, "eth0", "/ns", "1.0.0")
    assert doc["ips"] == [{"address": "fd00::5/64", "interface": 0}]
    assert doc["routes"] == [] and doc["dns"] == {}
