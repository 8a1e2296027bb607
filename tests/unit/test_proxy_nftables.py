"""stackube-proxy's nftables backend, pure parts: a tenant's ports -> table elements and
rules -> `nft -f` transactions; and the engine updating only the Services that changed."""

from typing import Any

import pytest

from stackube.errors import TemporaryError
from stackube.proxy import nftables as nft
from stackube.proxy.model import Endpoint, ServicePort
from stackube.proxy.sync import ProxyEngine
from stackube.proxy.tenants import ProxySettings
from tests.unit.proxy_doubles import RecordingTables
from tests.unit.proxy_doubles import port as a_port

pytestmark = pytest.mark.unit

CIDR = "10.96.0.0/12"
A = Endpoint("10.244.0.5", 8080)
B = Endpoint("10.244.0.6", 8080)


def port(
    ip: str = "10.96.0.20", endpoints: tuple[Endpoint, ...] = (A, B), **kw: Any
) -> ServicePort:
    """A port of test/nginx, with two endpoints unless told otherwise."""
    return a_port(ip, endpoints, **kw)


def elements(rules: nft.PortRules) -> dict[nft.Element, str]:
    return dict(rules.elements)


def state_of(*ports: ServicePort, external_ip: str = "") -> nft.TableState:
    wanted: dict[nft.ServiceKey, dict[nft.PortKey, nft.PortRules]] = {}
    for p in ports:
        wanted.setdefault((p.namespace, p.service), {})[nft.port_key(p)] = nft.port_rules(
            p, external_ip
        )
    state = nft.TableState(CIDR)
    nft.change(state, wanted, nft.router_elements(external_ip), complete=True)
    return state


def change_to(state: nft.TableState, *ports: ServicePort, service: str = "nginx") -> str:
    """The script that makes Service test/<service> have exactly `ports`."""
    wanted = {("test", service): {nft.port_key(p): nft.port_rules(p, "") for p in ports}}
    return nft.change(state, wanted, {}, complete=False)


# ---- one port's elements --------------------------------------------------------------------
def test_endpoints_are_numbered_in_the_map_of_their_count() -> None:
    found = elements(nft.port_rules(port(), ""))
    assert found == {
        ("services", "10.96.0.20 . tcp . 80"): "goto dispatch-2",
        ("endpoints-2", "10.96.0.20 . tcp . 80 . 0"): "10.244.0.5 . 8080",
        ("endpoints-2", "10.96.0.20 . tcp . 80 . 1"): "10.244.0.6 . 8080",
    }
    chains = nft.base_chains({2}, CIDR)
    assert chains[nft.PREROUTING][-1] == f"{nft.DESTINATION} vmap @services"
    # The dispatch of count 2 picks one of the two numbers with equal chance, after the
    # mark that keeps Neutron's SNAT off; no chain for a count nobody uses.
    (dispatch,) = chains["dispatch-2"]
    assert "numgen random mod 2 map @endpoints-2" in dispatch
    assert dispatch.index(nft.NEUTRON_MARK) < dispatch.index("dnat to")
    assert "dispatch-3" not in chains


def test_a_node_port_and_a_load_balancer_address_lead_to_the_same_endpoints() -> None:
    lb = port(node_port=30080, load_balancer_ips=("172.24.4.50",), source_ranges=("10.0.0.0/8",))
    found = elements(nft.port_rules(lb, "172.24.4.10"))
    for destination in (
        "10.96.0.20 . tcp . 80",
        "172.24.4.10 . tcp . 30080",
        "172.24.4.50 . tcp . 80",
    ):
        assert found[("services", destination)] == "goto dispatch-2"
        assert found[("endpoints-2", f"{destination} . 1")] == "10.244.0.6 . 8080"
    # Only the load balancer address is limited to its source ranges.
    assert found[("restricted", "172.24.4.50 . tcp . 80")] == ""
    assert found[("allowed", "172.24.4.50 . tcp . 80 . 10.0.0.0/8")] == ""
    assert not any(name == "restricted" and "30080" in key for name, key in found)
    # The router answers for it: masqueraded when DNATed, dropped when not.
    assert {("load-balancers", "172.24.4.50"), ("masqueraded", "172.24.4.50")} <= found.keys()
    # Without the router's external address, no NodePort element.
    assert not any("30080" in key for (_, key), _ in nft.port_rules(lb, "").elements)


def test_a_port_without_endpoints_is_refused_not_dispatched() -> None:
    found = elements(nft.port_rules(port(endpoints=(), node_port=30080), "172.24.4.10"))
    assert found == {
        ("no-endpoints", "10.96.0.20 . tcp . 80"): "",
        ("no-endpoints", "172.24.4.10 . tcp . 30080"): "",
    }
    rules = nft.base_chains(set(), CIDR)[nft.INPUT]
    assert rules[0].startswith("meta l4proto tcp") and rules[0].endswith("reject with tcp reset")


def test_client_ip_affinity_remembers_each_endpoints_clients_for_the_timeout() -> None:
    sticky = port(affinity_seconds=600, protocol="UDP")
    rules = nft.port_rules(sticky, "")
    chain = nft.affinity_chain(sticky)
    first, second = nft.affinity_set(sticky, A), nft.affinity_set(sticky, B)
    assert elements(rules) == {("services", "10.96.0.20 . udp . 80"): f"goto {chain}"}
    chains = dict(rules.chains)
    # Known clients first, then a random endpoint that remembers the client.
    assert chains[chain][1] == f"ip saddr @{first} meta l4proto udp dnat to 10.244.0.5:8080"
    assert chains[chain][-1] == (
        f"numgen random mod 2 vmap {{ 0 : goto {first}, 1 : goto {second} }}"
    )
    assert chains[second] == (
        f"update @{second} {{ ip saddr }} meta l4proto udp dnat to 10.244.0.6:8080",
    )
    assert dict(rules.sets)[first].endswith("timeout 600s;")


def test_an_endpoint_that_stays_keeps_its_clients_when_another_goes() -> None:
    state = state_of(port(affinity_seconds=600))
    kept = nft.affinity_set(port(affinity_seconds=600), A)
    lines = change_to(state, port(affinity_seconds=600, endpoints=(A,))).splitlines()
    chain = nft.affinity_chain(port())
    # The port's chain is rewritten; the staying endpoint's set is not touched; the
    # leaving one's chain is emptied before it is deleted, then its set goes.
    assert f"flush chain ip stackube {chain}" in lines
    assert not any(kept in line for line in lines if "delete" in line or "add set" in line)
    gone = nft.affinity_set(port(affinity_seconds=600), B)
    assert lines.index(f"flush chain ip stackube {gone}") < lines.index(
        f"delete chain ip stackube {gone}"
    )
    assert lines[-1] == f"delete set ip stackube {gone}"
    # Positive control: another timeout is another set (the declaration differs).
    assert nft.affinity_set(port(affinity_seconds=60), A) != kept


def test_load_balancer_source_ranges_are_merged_ipv4_intervals() -> None:
    assert nft.allowed_sources(["10.0.0.0/8", "10.1.0.0/16", "::/0", "bad", "192.168.1.7/24"]) == [
        "10.0.0.0/8",
        "192.168.1.0/24",
    ]
    lb = port(load_balancer_ips=("172.24.4.50",), source_ranges=("0.0.0.0/0", "192.168.0.0/16"))
    allowed = [key for (name, key), _ in nft.port_rules(lb, "").elements if name == "allowed"]
    assert allowed == ["172.24.4.50 . tcp . 80 . 0.0.0.0/0"]


# ---- transactions ---------------------------------------------------------------------------
def test_the_full_script_replaces_the_table_in_one_transaction() -> None:
    script = nft.full_script(state_of(port(), external_ip="172.24.4.10"))
    lines = script.splitlines()
    assert lines[:3] == [
        "add table ip stackube",
        "delete table ip stackube",
        "add table ip stackube",
    ]
    assert "add element ip stackube masqueraded { 172.24.4.10 }" in lines
    assert any(line.startswith("add map ip stackube endpoints-2 ") for line in lines)
    # Sets before the rules that name them; regular chains before the base chains.
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("add rule"))
    assert (
        max(i for i, line in enumerate(lines) if line.startswith(("add set", "add map")))
        < first_rule
    )


def test_an_endpoint_change_is_element_updates_only() -> None:
    state = state_of(port(), port("10.96.0.21", service="other"))
    other = state.ports[nft.port_key(port("10.96.0.21", service="other"))]
    script = change_to(state, port(endpoints=(A, Endpoint("10.244.0.7", 8080))))
    assert script.splitlines() == [
        "delete element ip stackube endpoints-2 { 10.96.0.20 . tcp . 80 . 1 }",
        "add element ip stackube endpoints-2 { 10.96.0.20 . tcp . 80 . 1 : 10.244.0.7 . 8080 }",
    ]
    # The other Service was not looked at; the same change again writes nothing.
    assert state.ports[nft.port_key(port("10.96.0.21", service="other"))] is other
    assert state.value(("endpoints-2", "10.96.0.20 . tcp . 80 . 1")) == "10.244.0.7 . 8080"
    assert change_to(state, port(endpoints=(A, Endpoint("10.244.0.7", 8080)))) == ""


def test_a_new_endpoint_count_adds_its_maps_and_rule_and_the_last_user_removes_them() -> None:
    state = state_of(port())
    lines = change_to(state, port(endpoints=(A,))).splitlines()
    # The count-1 map and its chain, made in one transaction; no base chain edited.
    assert lines[0].startswith("add map ip stackube endpoints-1 ")
    assert lines[1:3] == [
        "add chain ip stackube dispatch-1",
        f"add rule ip stackube dispatch-1 {nft.count_chain(1)[0]}",
    ]
    assert not {f"flush chain ip stackube {base}" for base in nft.BASE_CHAINS} & set(lines)
    assert "add element ip stackube services { 10.96.0.20 . tcp . 80 : goto dispatch-1 }" in lines
    # The count-2 chain and map go last, after the elements leading there.
    assert lines[-3:] == [
        "flush chain ip stackube dispatch-2",
        "delete chain ip stackube dispatch-2",
        "delete map ip stackube endpoints-2",
    ]
    assert "dispatch-2" not in state.chains()


def test_an_element_two_services_want_stays_until_neither_does() -> None:
    shared = ("172.24.4.50",)
    first = port(external_ips=shared)
    second = port("10.96.0.21", service="other", external_ips=shared)
    state = state_of(first, second)
    assert "load-balancers" not in change_to(state)
    assert state.value(("load-balancers", "172.24.4.50")) == ""
    assert nft.port_key(first) not in state.ports
    script = change_to(state, service="other")
    assert state.value(("load-balancers", "172.24.4.50")) is None
    assert "delete element ip stackube load-balancers { 172.24.4.50 }" in script


def test_a_complete_update_removes_services_no_longer_there() -> None:
    state = state_of(port(), port("10.96.0.21", service="other"))
    script = nft.change(state, {}, {}, complete=True)
    assert state.ports == {} and state.owners == {}
    assert "10.96.0.21 . tcp . 80" in script and "delete map ip stackube endpoints-2" in script


# ---- the engine -----------------------------------------------------------------------------
class RecordingNft:
    def __init__(self) -> None:
        self.scripts: list[str] = []
        self.deleted: list[str] = []
        self.present = True
        self.failures = 0  # how many of the next applies fail

    def apply(self, netns: str, script: str) -> None:
        if self.failures:
            self.failures -= 1
            raise TemporaryError("nft -f - in the router: refused")
        self.scripts.append(script)

    def delete_table(self, netns: str, family: str, table: str) -> bool:
        self.deleted.append(netns)
        return True

    def table_exists(self, netns: str, family: str, table: str) -> bool:
        return self.present


def svc(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 80}]},
    }


def eps(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {
            "namespace": "team-a",
            "name": f"{name}-x",
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip]}],
    }


def engine_with_tenant(
    backend: str = "nftables",
) -> tuple[ProxyEngine, RecordingTables, RecordingNft]:
    tables, nftables = RecordingTables(existing={"nat": {"STKB-SERVICES"}}), RecordingNft()
    engine = ProxyEngine(ProxySettings(), tables, nft=nftables, backend=backend)
    engine.on_change(
        "namespaces",
        None,
        {"metadata": {"name": "team-a", "labels": {"stackube.kubernetes.io/tenant": "team-a"}}},
    )
    network = {"metadata": {"namespace": "team-a", "name": "team-a"}, "status": {"routerID": "ra"}}
    engine.on_change("networks", None, network)
    for name, ip in (("web", "10.96.0.30"), ("db", "10.96.0.31")):
        engine.on_change("services", None, svc(name, ip))
        engine.on_change("endpointslices", None, eps(name, "10.244.0.5"))
    return engine, tables, nftables


def test_the_engine_writes_the_whole_table_first_then_only_what_changed() -> None:
    engine, tables, nftables = engine_with_tenant()
    engine.sync_dirty()
    (first,) = nftables.scripts
    assert first.startswith("add table ip stackube\ndelete table ip stackube\n")
    assert "10.96.0.30 . tcp . 80" in first and "10.96.0.31 . tcp . 80" in first
    # The iptables backend's service hooks go before its chains are deleted.
    assert "STKB-SERVICES" in tables.jumps_removed
    assert "-X STKB-SERVICES" in tables.restored[0]
    engine.on_change("endpointslices", eps("web", "10.244.0.5"), eps("web", "10.244.0.9"))
    assert engine._dirty_services == {"team-a": {("team-a", "web")}}
    engine.sync_dirty()
    change = nftables.scripts[-1]
    assert "10.244.0.9 . 8080" in change and "10.96.0.31" not in change
    assert len(tables.restored) == 1  # NetworkPolicy's iptables chains were not touched
    # A deleted Service's elements go.
    engine.on_change("services", svc("db", "10.96.0.31"), None)
    engine.sync_dirty()
    assert "delete element ip stackube services { 10.96.0.31 . tcp . 80 }" in nftables.scripts[-1]


def test_a_network_change_syncs_the_tenant_whole() -> None:
    engine, _, nftables = engine_with_tenant()
    engine.sync_dirty()
    network = {
        "metadata": {"namespace": "team-a", "name": "team-a"},
        "status": {"routerID": "ra", "routerExternalIP": "172.24.4.10"},
    }
    engine.on_change("services", None, svc("api", "10.96.0.32"))
    engine.on_change("networks", None, network)
    assert "team-a" not in engine._dirty_services  # whole, not just the new Service
    engine.sync_dirty()
    assert "add element ip stackube masqueraded { 172.24.4.10 }" in nftables.scripts[-1]


def test_the_iptables_backend_removes_the_nftables_table_and_writes_chains() -> None:
    engine, tables, nftables = engine_with_tenant("iptables")
    engine.sync_dirty()
    assert nftables.deleted == ["qrouter-ra"] and nftables.scripts == []
    assert "STKB-SVC-" in tables.restored[0]


def test_the_nftables_backend_needs_nft() -> None:
    with pytest.raises(ValueError, match="needs nft"):
        ProxyEngine(ProxySettings(), RecordingTables(), backend="nftables")
    with pytest.raises(ValueError, match="one of"):
        ProxyEngine(ProxySettings(), RecordingTables(), backend="ipvs")


def test_housekeeping_writes_a_lost_table_again_whole() -> None:
    engine, _, nftables = engine_with_tenant()
    engine.sync_dirty()
    engine.housekeeping()
    assert not engine._dirty  # positive control: the table is there, nothing to do
    nftables.present = False  # e.g. `nft flush ruleset` in the router
    engine.housekeeping()
    assert engine._dirty == {"team-a"} and "team-a" not in engine._dirty_services
    nftables.present = True
    engine.sync_dirty()
    assert nftables.scripts[-1].startswith("add table ip stackube\ndelete table ip stackube\n")


def udp_svc(name: str, ip: str) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": name},
        "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": [{"port": 53, "protocol": "UDP"}]},
    }


def udp_eps(name: str, ip: str) -> dict[str, Any]:
    return {**eps(name, ip), "ports": [{"name": "", "port": 5353, "protocol": "UDP"}]}


def test_a_gone_udp_endpoints_flows_are_forgotten_even_after_a_failed_sync() -> None:
    engine, tables, nftables = engine_with_tenant()
    engine.on_change("services", None, udp_svc("dns", "10.96.0.53"))
    engine.on_change("endpointslices", None, udp_eps("dns", "10.244.0.5"))
    engine.sync_dirty()
    engine.on_change("endpointslices", udp_eps("dns", "10.244.0.5"), udp_eps("dns", "10.244.0.6"))
    nftables.failures = 1
    assert engine.sync_dirty() == []  # refused: retried by housekeeping, whole
    assert tables.flows_forgotten == []
    engine.housekeeping()
    engine.sync_dirty()
    assert tables.flows_forgotten == [("10.96.0.53", 53, "10.244.0.5")]
    assert "10.244.0.6 . 5353" in nftables.scripts[-1]
    # Positive control: a change that keeps the endpoint forgets nothing more.
    engine.on_change("services", None, svc("api", "10.96.0.60"))
    engine.sync_dirty()
    assert tables.flows_forgotten == [("10.96.0.53", 53, "10.244.0.5")]
