"""stackube-proxy's pure parts: Services -> tenant ports -> iptables-restore text."""

from typing import Any

import pytest

from stackube.host.portrelay import Backend, Frontend
from stackube.netpol.view import SYSTEM_SCOPE
from stackube.proxy.model import Endpoint, TenantServices, service_ports
from stackube.proxy.nodeports import NodePortService, addresses_in, node_port_relays
from stackube.proxy.render import (
    JUMPS,
    NODE_PORTS,
    POSTROUTING,
    REJECT,
    SERVICES,
    affinity_list,
    bucket_chain,
    desired_tables,
    load_balancer_ips,
    restore_input,
    svc_chain,
    udp_endpoints_removed,
)
from stackube.proxy.sync import NodePorts, ProxyEngine
from stackube.proxy.tenants import (
    ProxySettings,
    router_of,
    scope_of,
    tenant_services,
)
from tests.unit.proxy_doubles import RecordingTables, port

pytestmark = pytest.mark.unit


def service(name: str, ip: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "test", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": ports, **spec},
    }


def endpoint_slice(
    owner: str, ips: list[str], port: int, name: str = "", **extra: Any
) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "test",
            "name": f"{owner}-x",
            "labels": {"kubernetes.io/service-name": owner},
        },
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": extra.get("protocol", "TCP")}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": ip not in extra.get("unready", [])}}
            for ip in ips
        ],
    }


NGINX = service("nginx", "10.96.0.20", [{"port": 80, "protocol": "TCP", "targetPort": 8080}])
NGINX_SLICE = endpoint_slice(
    "nginx", ["10.244.0.5", "10.244.0.6", "10.244.0.9"], 8080, unready=["10.244.0.9"]
)


# ---- model ---------------------------------------------------------------------------------
def test_only_ready_endpoints_of_the_named_port_count() -> None:
    (found,) = service_ports(NGINX, [NGINX_SLICE])
    assert found.endpoints == (Endpoint("10.244.0.5", 8080), Endpoint("10.244.0.6", 8080))
    assert found.key == "test/nginx:80/TCP" and found.affinity_seconds is None


def test_headless_external_name_and_sctp_are_not_served() -> None:
    assert service_ports(service("h", "None", [{"port": 80}]), []) == []
    assert service_ports(service("e", "", [{"port": 80}], type="ExternalName"), []) == []
    assert service_ports(service("s", "10.96.0.3", [{"port": 9, "protocol": "SCTP"}]), []) == []


def test_client_ip_affinity_defaults_to_three_hours() -> None:
    (found,) = service_ports(
        service("a", "10.96.0.4", [{"port": 80}], sessionAffinity="ClientIP"), []
    )
    assert found.affinity_seconds == 10800


def in_dns_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "metadata": {**obj["metadata"], "namespace": "stackube-dns"}}


def test_the_cluster_dns_ip_goes_to_the_tenants_own_dns_server() -> None:
    # Each tenant's DNS Service is in stackube-dns, named after the tenant's namespace.
    def dns(tenant: str, ip: str, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        svc = service(tenant, ip, [{"name": "dns", "port": 53, "protocol": "UDP"}])
        slice_ = endpoint_slice(tenant, [endpoint], 1053, "dns", protocol="UDP")
        return in_dns_namespace(svc), in_dns_namespace(slice_)

    mine, others = dns("test", "10.96.0.53", "10.244.0.2"), dns("other", "10.96.0.54", "10.9.0.2")
    tenant = tenant_services(
        "test",
        "r1",
        [NGINX],
        [NGINX_SLICE],
        ProxySettings(cluster_dns_ip="10.96.0.10"),
        dns_services=[mine[0], others[0]],
        dns_slices=[mine[1], others[1]],
    )
    dns_ports = [p for p in tenant.ports if p.port == 53]
    # Only the redirect: the DNS Service's own ClusterIP is not the tenant's to reach.
    assert [(p.cluster_ip, p.protocol, p.endpoints) for p in dns_ports] == [
        ("10.96.0.10", "UDP", (Endpoint("10.244.0.2", 1053),))
    ]
    assert {p.service for p in tenant.ports} == {"nginx", "test"}


def namespace_object(name: str, tenant: bool) -> dict[str, Any]:
    labels = {"stackube.kubernetes.io/tenant": name} if tenant else {}
    return {"metadata": {"name": name, "labels": labels}}


def test_a_change_to_a_tenants_dns_service_resyncs_that_tenant_only() -> None:
    engine = ProxyEngine(ProxySettings(), tables=None)  # type: ignore[arg-type]
    for name in ("team-a", "team-b"):
        engine.on_change("namespaces", None, namespace_object(name, tenant=True))
    engine._dirty.clear()
    svc = in_dns_namespace(service("team-a", "10.96.0.53", [{"port": 53}]))
    engine.on_change("services", None, svc)
    engine.on_change("endpointslices", None, in_dns_namespace(endpoint_slice("team-b", [], 53)))
    assert engine._dirty == {"team-a", "team-b"}


def test_namespaces_no_tenant_owns_are_served_by_the_system_router() -> None:
    engine = ProxyEngine(ProxySettings(), tables=None)  # type: ignore[arg-type]
    engine.on_change("namespaces", None, namespace_object("team-a", tenant=True))
    for name in ("default", "kube-system", "made-by-an-admin"):
        engine.on_change("namespaces", None, namespace_object(name, tenant=False))
    # A namespace the watch has not shown yet is nobody's: not the system's.
    engine.on_change("services", None, {**NGINX, "metadata": {"namespace": "new", "name": "x"}})
    system = {
        "metadata": {"namespace": "kube-system", "name": "system"},
        "status": {"routerID": "sys-router"},
    }
    engine.on_change("networks", None, system)
    engine._dirty.clear()
    for namespace in ("default", "kube-system", "made-by-an-admin"):
        engine.on_change(
            "services", None, {**NGINX, "metadata": {"namespace": namespace, "name": "x"}}
        )
    assert engine._dirty == {SYSTEM_SCOPE}
    engine.on_change("services", None, {**NGINX, "metadata": {"namespace": "team-a", "name": "x"}})
    assert engine._dirty == {SYSTEM_SCOPE, "team-a"}
    # A Tenant's namespace never joins the system's scope, even before its Network exists;
    # nor does the DNS namespace (its Services are tenants').
    assert scope_of("team-a", [], {"team-a"}, ProxySettings()) == "team-a"
    assert scope_of("stackube-dns", [], set(), ProxySettings()) == "stackube-dns"
    # kube-system's system Network is not a Network of its own.
    assert scope_of("kube-system", [system], set(), ProxySettings()) == SYSTEM_SCOPE
    own = {"metadata": {"namespace": "lab", "name": "lab"}, "status": {"routerID": "r"}}
    assert scope_of("lab", [own], set(), ProxySettings()) == "lab"
    with engine._changed:
        networks, services, _ = engine._snapshot(SYSTEM_SCOPE, whole=True)
    assert [n["status"]["routerID"] for n in networks] == ["sys-router"]
    assert sorted(s["metadata"]["namespace"] for s in services) == [
        "default",
        "kube-system",
        "made-by-an-admin",
    ]
    engine.on_change("namespaces", None, namespace_object("new", tenant=False))
    with engine._changed:
        assert "new" in {
            s["metadata"]["namespace"] for s in engine._snapshot(SYSTEM_SCOPE, whole=True)[1]
        }


def test_services_of_one_name_in_two_namespaces_keep_their_own_endpoints() -> None:
    def pair(namespace: str, ip: str, endpoint: str) -> tuple[dict[str, Any], dict[str, Any]]:
        svc = service("web", ip, [{"port": 80}])
        svc["metadata"]["namespace"] = namespace
        slice_ = endpoint_slice("web", [endpoint], 80)
        slice_["metadata"]["namespace"] = namespace
        return svc, slice_

    a, b = pair("default", "10.96.0.20", "10.244.0.5"), pair("admin-ns", "10.96.0.21", "10.244.0.6")
    served = tenant_services("*system*", "r", [a[0], b[0]], [a[1], b[1]], ProxySettings())
    assert {(p.namespace, p.cluster_ip, p.endpoints) for p in served.ports} == {
        ("default", "10.96.0.20", (Endpoint("10.244.0.5", 80),)),
        ("admin-ns", "10.96.0.21", (Endpoint("10.244.0.6", 80),)),
    }


def test_the_router_is_that_of_the_network_named_like_the_namespace() -> None:
    def net(name: str, router: str, **meta: Any) -> dict[str, Any]:
        return {
            "metadata": {"namespace": "t", "name": name, **meta},
            "status": {"routerID": router},
        }

    assert router_of("t", [net("x", "r2"), net("t", "r1")]) == "r1"
    assert router_of("t", [net("x", "r2")]) == "r2"
    assert router_of("t", [net("x", "r2"), net("y", "r3")]) is None
    assert router_of("t", [net("t", "r1", deletionTimestamp="now")]) is None
    assert router_of("t", []) is None


# ---- rendering ---------------------------------------------------------------------------
def test_endpoints_are_chosen_with_equal_probability_then_dnat() -> None:
    p = port(
        endpoints=(
            Endpoint("10.244.0.5", 8080),
            Endpoint("10.244.0.6", 8080),
            Endpoint("10.244.0.7", 8080),
        )
    )
    nat = desired_tables(TenantServices("r", (p,)))["nat"]
    svc = nat[svc_chain(p)]
    assert svc[0].endswith("-j MARK --set-xmark 0x2/0xffff")  # Neutron's SNAT skips it
    assert "--probability 0.3333333333" in svc[1] and "--probability 0.5000000000" in svc[2]
    assert "statistic" not in svc[3]
    assert [rule.split("-j DNAT --to-destination ")[1] for rule in svc[1:]] == [
        "10.244.0.5:8080",
        "10.244.0.6:8080",
        "10.244.0.7:8080",
    ]
    dispatch = nat[bucket_chain("10.96.0.20")]
    assert dispatch == (
        "-d 10.96.0.20/32 -p tcp -m tcp --dport 80 "
        f'-m comment --comment "test/nginx:80/TCP" -j {svc_chain(p)}',
    )
    assert nat[SERVICES] == (f"-d 10.96.0.0/24 -j {bucket_chain('10.96.0.20')}",)


def test_affinity_sets_and_checks_the_clients_recent_list() -> None:
    p = port(endpoints=(Endpoint("10.244.0.5", 80),), affinity_seconds=60)
    nat = desired_tables(TenantServices("r", (p,)))["nat"]
    name = affinity_list(p, "10.244.0.5", 80)
    check, pick = nat[svc_chain(p)][1:]
    assert f"--name {name}" in check and "--rcheck --seconds 60 --reap" in check
    assert f"--name {name}" in pick and "--set" in pick
    assert check.endswith("DNAT --to-destination 10.244.0.5:80") and pick.endswith(":80")


def test_a_port_without_endpoints_is_rejected_not_dnatted() -> None:
    p = port()
    tables = desired_tables(TenantServices("r", (p,)))
    assert svc_chain(p) not in tables["nat"]
    rule, *catch_all = tables["filter"][REJECT]
    assert rule.startswith("-d 10.96.0.20/32 -p tcp -m tcp --dport 80")
    assert rule.endswith("--reject-with tcp-reset")
    assert [r.startswith("-d 10.96.0.0/12") for r in catch_all] == [True, True]


def test_udp_ports_match_udp() -> None:
    p = port(protocol="UDP", port=53, endpoints=(Endpoint("10.244.0.2", 53),))
    nat = desired_tables(TenantServices("r", (p,)))["nat"]
    assert "-p udp -m udp --dport 53" in nat[bucket_chain(p.cluster_ip)][0]


def test_first_sync_writes_everything_and_removes_stale_chains_only_of_ours() -> None:
    desired = desired_tables(TenantServices("r", (port(endpoints=(Endpoint("10.244.0.5", 80),)),)))
    existing = {
        "nat": {"STKB-SVC-OLD", "neutron-l3-agent-PREROUTING", "PREROUTING"},
        "filter": set(),
    }
    restore = restore_input(desired, None, existing)
    assert restore.changed_chains == len(desired["nat"]) + len(desired["filter"])
    assert restore.deleted_chains == 1 and "-X STKB-SVC-OLD" in restore.text
    assert "neutron" not in restore.text and "PREROUTING -" not in restore.text
    assert restore.text.count("COMMIT") == 2


def test_a_change_rewrites_only_the_chains_it_touches() -> None:
    many = tuple(
        port(
            ip=f"10.96.{i // 200}.{i % 200 + 1}",
            service=f"s{i}",
            endpoints=(Endpoint(f"10.244.1.{i % 250}", 80),),
        )
        for i in range(1000)
    )
    before = desired_tables(TenantServices("r", many))
    moved = (
        *many[:500],
        port(ip=many[500].cluster_ip, service="s500", endpoints=(Endpoint("10.244.9.9", 80),)),
        *many[501:],
    )
    after = desired_tables(TenantServices("r", moved))
    restore = restore_input(after, before, {})
    # only the service's own chain
    assert restore.changed_chains == 1 and restore.deleted_chains == 0
    assert len(restore.text.splitlines()) < 12
    assert restore_input(after, after, {}).empty


def test_removed_udp_endpoints_are_listed_for_conntrack() -> None:
    old = TenantServices(
        "r",
        (port(protocol="UDP", endpoints=(Endpoint("10.244.0.5", 53), Endpoint("10.244.0.6", 53))),),
    )
    new = TenantServices("r", (port(protocol="UDP", endpoints=(Endpoint("10.244.0.6", 53),)),))
    assert udp_endpoints_removed(old, new) == [("10.96.0.20", 80, "10.244.0.5")]
    assert udp_endpoints_removed(None, new) == []


def test_service_connections_are_masqueraded_by_their_original_destination() -> None:
    (rule,) = desired_tables(TenantServices("r", ()), "10.96.0.0/12")["nat"]["STKB-POSTROUTING"]
    assert rule.startswith("-m conntrack --ctstate DNAT --ctorigdst 10.96.0.0/12")
    assert rule.endswith("-j MASQUERADE") and "mark" not in rule


def test_hooks_are_the_router_builtin_chains() -> None:
    assert {(t, c) for t, c, _ in JUMPS} == {
        ("nat", "PREROUTING"),
        ("nat", "POSTROUTING"),
        ("filter", "INPUT"),
        ("filter", "FORWARD"),  # NetworkPolicy, after DNAT (decision 0013)
    }


def test_the_dns_namespace_is_grouped_by_the_tenant_each_object_serves() -> None:
    from stackube.proxy.tenants import dns_by_tenant  # noqa: PLC0415

    svc = in_dns_namespace(service("team-a", "10.96.0.53", [{"port": 53}]))
    own, stray = endpoint_slice("team-a", [], 53), endpoint_slice("team-b", [], 53)
    grouped = dns_by_tenant([svc], [in_dns_namespace(own), in_dns_namespace(stray)])
    assert grouped["team-a"] == ([svc], [in_dns_namespace(own)])
    assert grouped["team-b"] == ([], [in_dns_namespace(stray)])


# ---- NodePort ------------------------------------------------------------------------------
def test_a_node_port_enters_at_the_routers_external_address_into_the_same_chain() -> None:
    p = port(endpoints=(Endpoint("10.244.0.5", 8080),), node_port=30080)
    nat = desired_tables(TenantServices("r", (p,), external_ip="198.51.100.7"))["nat"]
    assert "-d 198.51.100.7/32 -j STKB-NODEPORTS" in nat[SERVICES]
    (rule,) = nat[NODE_PORTS]
    assert rule.startswith("-d 198.51.100.7/32 -p tcp -m tcp --dport 30080")
    assert rule.endswith(f"-j {svc_chain(p)}")
    # Replies come back through the router (and pass the endpoint's security group).
    assert any("--ctorigdst 198.51.100.7/32" in r and "MASQUERADE" in r for r in nat[POSTROUTING])
    # Without the external address (not known yet) no NodePort rule, and the ClusterIP
    # still works.
    unknown = desired_tables(TenantServices("r", (p,)))["nat"]
    assert unknown[NODE_PORTS] == () and not any("ctorigdst 198" in r for r in unknown[POSTROUTING])
    assert svc_chain(p) in unknown


def test_a_node_port_without_endpoints_is_refused_at_the_router() -> None:
    p = port(node_port=30080, protocol="UDP")
    tables = desired_tables(TenantServices("r", (p,), external_ip="198.51.100.7"))
    assert tables["nat"][NODE_PORTS] == ()
    refused = [r for r in tables["filter"][REJECT] if "--dport 30080" in r]
    assert refused and refused[0].startswith("-d 198.51.100.7/32 -p udp")
    assert refused[0].endswith("icmp-port-unreachable")


def test_only_node_port_and_load_balancer_services_have_node_ports() -> None:
    ports = [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]
    assert (
        service_ports(service("a", "10.96.0.20", ports, type="NodePort"), [])[0].node_port == 30080
    )
    lb = service("a", "10.96.0.20", ports, type="LoadBalancer")
    assert service_ports(lb, [])[0].node_port == 30080
    # A nodePort left over in a ClusterIP Service's spec serves nothing.
    assert service_ports(service("a", "10.96.0.20", ports), [])[0].node_port is None


def node_port_service(
    policy: str = "Cluster", nodes: tuple[str, ...] = ("node-1",), external_ip: str = "198.51.100.7"
) -> NodePortService:
    svc = service(
        "web",
        "10.96.0.20",
        [
            {"port": 80, "nodePort": 30080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "nodePort": 30053, "protocol": "UDP"},
            {"name": "sctp", "port": 9, "nodePort": 30009, "protocol": "SCTP"},
        ],
        type="NodePort",
        externalTrafficPolicy=policy,
    )
    slice_ = endpoint_slice("web", ["10.244.0.5"], 8080)
    slice_["endpoints"] = [
        {"addresses": [f"10.244.0.{i}"], "nodeName": node, "conditions": {"ready": True}}
        for i, node in enumerate(nodes)
    ]
    return NodePortService(svc, [slice_], external_ip)


def test_every_node_address_relays_the_node_port_to_the_router() -> None:
    relays = node_port_relays([node_port_service()], ["198.51.100.254", "192.0.2.9"], "node-1")
    assert relays == {
        Frontend("TCP", "198.51.100.254", 30080): Backend("198.51.100.7", 30080),
        Frontend("TCP", "192.0.2.9", 30080): Backend("198.51.100.7", 30080),
        Frontend("UDP", "198.51.100.254", 30053): Backend("198.51.100.7", 30053),
        Frontend("UDP", "192.0.2.9", 30053): Backend("198.51.100.7", 30053),
    }
    # The router's address not known yet: nothing to relay to.
    assert node_port_relays([node_port_service(external_ip="")], ["198.51.100.254"], "n") == {}


def test_local_traffic_policy_is_served_only_by_nodes_with_a_ready_endpoint() -> None:
    local = node_port_service("Local", nodes=("node-2",))
    assert node_port_relays([local], ["198.51.100.254"], "node-1") == {}
    assert len(node_port_relays([local], ["198.51.100.254"], "node-2")) == 2
    # Positive control: Cluster is served everywhere.
    assert (
        len(node_port_relays([node_port_service(nodes=("node-2",))], ["10.0.0.1"], "node-1")) == 2
    )


def test_node_port_addresses_are_the_nodes_own_in_the_cidrs_never_loopback() -> None:
    local = ["127.0.0.1", "192.0.2.2", "198.51.100.254", "10.244.0.3"]
    assert addresses_in(["0.0.0.0/0"], local) == ["10.244.0.3", "192.0.2.2", "198.51.100.254"]
    assert addresses_in(["198.51.100.254/32"], local) == ["198.51.100.254"]
    assert addresses_in(["127.0.0.0/8"], local) == []


def test_the_engine_relays_node_ports_of_tenant_and_system_namespaces() -> None:
    class Relays:
        def __init__(self) -> None:
            self.applied: dict[Frontend, Backend] = {}

        def apply(self, wanted: Any) -> dict[Frontend, str]:
            self.applied = dict(wanted)
            return {}

    relays = Relays()
    engine = ProxyEngine(
        ProxySettings(),
        tables=None,  # type: ignore[arg-type]
        node_ports=NodePorts(relays, "node-1", ("0.0.0.0/0",), lambda: ["198.51.100.254"]),
    )
    engine.on_change("namespaces", None, namespace_object("team-a", tenant=True))
    engine.on_change("namespaces", None, namespace_object("default", tenant=False))
    engine.on_change(
        "networks",
        None,
        {
            "metadata": {"namespace": "team-a", "name": "team-a"},
            "status": {"routerID": "ra", "routerExternalIP": "198.51.100.10"},
        },
    )
    engine.on_change(
        "networks",
        None,
        {
            "metadata": {"namespace": "kube-system", "name": "system"},
            "status": {"routerID": "rs", "routerExternalIP": "198.51.100.20"},
        },
    )
    for namespace, number in (("team-a", 30001), ("default", 30002)):
        svc = service("web", "10.96.0.20", [{"port": 80, "nodePort": number}], type="NodePort")
        engine.on_change(
            "services", None, {**svc, "metadata": {"namespace": namespace, "name": "web"}}
        )
    engine.sync_node_ports()
    assert relays.applied == {
        Frontend("TCP", "198.51.100.254", 30001): Backend("198.51.100.10", 30001),
        Frontend("TCP", "198.51.100.254", 30002): Backend("198.51.100.20", 30002),
    }


# ---- LoadBalancer --------------------------------------------------------------------------
def test_a_load_balancer_address_dispatches_to_the_same_chain_from_allowed_sources() -> None:
    p = port(
        endpoints=(Endpoint("10.244.0.5", 8080),),
        load_balancer_ips=("198.51.100.40",),
        source_ranges=("192.0.2.0/24", "198.51.100.0/25"),
    )
    tables = desired_tables(TenantServices("r", (p,)))
    nat = tables["nat"]
    lb_bucket = nat[bucket_chain("198.51.100.40")]
    assert [r.split(" -d ")[0] for r in lb_bucket] == ["-s 192.0.2.0/24", "-s 198.51.100.0/25"]
    assert all("-d 198.51.100.40/32 -p tcp -m tcp --dport 80" in r for r in lb_bucket)
    assert all(r.endswith(f"-j {svc_chain(p)}") for r in lb_bucket)
    assert "-d 198.51.100.0/24 -j " + bucket_chain("198.51.100.40") in nat[SERVICES]
    assert any("--ctorigdst 198.51.100.40/32" in r for r in nat[POSTROUTING])
    # Everything else that reaches the address (routed to the router) is dropped.
    assert tables["filter"][REJECT][-1].startswith("-d 198.51.100.40/32")
    assert tables["filter"][REJECT][-1].endswith("-j DROP")
    assert load_balancer_ips(TenantServices("r", (p,))) == ["198.51.100.40"]


def test_load_balancer_addresses_come_from_the_status_of_load_balancer_services_only() -> None:
    ports = [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]
    lb = service(
        "a", "10.96.0.20", ports, type="LoadBalancer", loadBalancerSourceRanges=["192.0.2.0/24"]
    )
    lb["status"] = {"loadBalancer": {"ingress": [{"ip": "198.51.100.40"}, {"hostname": "x"}]}}
    # Someone else's status (the conformance suite writes one): not served.
    assert service_ports(lb, [])[0].load_balancer_ips == ()
    lb["metadata"]["annotations"] = {"stackube.kubernetes.io/floating-ip-id": "fip-1"}
    (served,) = service_ports(lb, [])
    assert served.load_balancer_ips == ("198.51.100.40",)
    assert served.source_ranges == ("192.0.2.0/24",)
    # A status left over after the type changed serves nothing.
    cluster_ip = {**lb, "spec": {**lb["spec"], "type": "ClusterIP"}}
    assert service_ports(cluster_ip, [])[0].load_balancer_ips == ()


def test_a_load_balancer_without_endpoints_is_refused_at_its_address() -> None:
    p = port(load_balancer_ips=("198.51.100.40",))
    refused = desired_tables(TenantServices("r", (p,)))["filter"][REJECT]
    assert any(
        r.startswith("-d 198.51.100.40/32 -p tcp -m tcp --dport 80") and "tcp-reset" in r
        for r in refused
    )


def test_external_ips_are_served_only_where_a_cluster_admin_set_them() -> None:
    svc = service("a", "10.96.0.20", [{"port": 80}], externalIPs=["198.51.100.50"])
    assert service_ports(svc, [])[0].external_ips == ()  # a tenant's namespace
    (admins,) = service_ports(svc, [], allow_external_ips=True)
    assert admins.addresses == ("198.51.100.50",)
    p = port(
        endpoints=(Endpoint("10.244.0.5", 80),),
        load_balancer_ips=("198.51.100.40",),
        source_ranges=("192.0.2.0/24",),
        external_ips=("198.51.100.50",),
    )
    nat = desired_tables(TenantServices("r", (p,)))["nat"]
    rules = nat[bucket_chain("198.51.100.40")]
    # loadBalancerSourceRanges limit the load balancer address, not the externalIP.
    assert any(r.startswith("-s 192.0.2.0/24 -d 198.51.100.40/32") for r in rules)
    assert any(r.startswith("-d 198.51.100.50/32") for r in rules)


def pod_object(name: str, ip: str, labels: dict[str, str], namespace: str = "team-a") -> Any:
    return {
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"podIP": ip, "phase": "Running"},
    }


def test_network_policies_reach_the_tenants_router_and_follow_pods() -> None:
    from stackube.netpol.render import ingress_chain  # noqa: PLC0415

    tables = RecordingTables()
    engine = ProxyEngine(ProxySettings(), tables=tables)
    engine.on_change("namespaces", None, namespace_object("team-a", tenant=True))
    network = {"metadata": {"namespace": "team-a", "name": "team-a"}, "status": {"routerID": "ra"}}
    engine.on_change("networks", None, network)
    web = pod_object("web", "10.0.0.10", {"app": "web"})
    client = pod_object("client", "10.0.0.11", {"app": "client"})
    for pod in (web, client):
        engine.on_change("pods", None, pod)
    engine.sync_dirty()
    # Positive control: without a policy nothing isolates the pod.
    assert ingress_chain("10.0.0.10") not in "".join(tables.restored)
    allow = {
        "metadata": {"namespace": "team-a", "name": "web"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "client"}}}]}],
        },
    }
    engine.on_change("networkpolicies", None, allow)
    (result,) = engine.sync_dirty()
    written = tables.restored[-1]
    assert f":{ingress_chain('10.0.0.10')}" in written
    assert "-s 10.0.0.11/32 -j RETURN" in written
    # A status change that policies cannot see syncs nothing.
    ready = {**client, "status": {**client["status"], "conditions": [{"type": "Ready"}]}}
    engine.on_change("pods", client, ready)
    assert engine.sync_dirty() == []
    # The client loses its label: the web pod's chain drops it.
    relabelled = {**ready, "metadata": {**ready["metadata"], "labels": {"app": "other"}}}
    engine.on_change("pods", ready, relabelled)
    engine.sync_dirty()
    assert "-s 10.0.0.11/32" not in tables.restored[-1]
    # The policy goes: so does the chain.
    engine.on_change("networkpolicies", allow, None)
    engine.sync_dirty()
    assert f"-X {ingress_chain('10.0.0.10')}" in tables.restored[-1]
    assert result.router_id == "ra"
