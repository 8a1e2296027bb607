"""The CNI daemon's pure decisions: which network, pool bookkeeping, recovery, CHECK."""

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import pytest

from stackube.cni import spec, tenancy
from stackube.cni.attachments import Attachment, Phase
from stackube.cni.attachments import _decode as decode_attachment
from stackube.cni.drivers import linux_bridge_name, ovs_external_ids, parked_ifname
from stackube.cni.hostports import (
    ANY_ADDRESS,
    LOOPBACK_JUMPS,
    PortMapping,
    host_port_relays,
    input_chain,
    parse_port_mappings,
    render_loopback_accepts,
)
from stackube.cni.install import conflist
from stackube.cni.pool import POOL_DEVICE_ID, PortPools, ReadyPort, refill_count
from stackube.cni.probe_gate import CLOSED_EVERY, LENIENT_CLOSE_SECONDS, OPEN_EVERY, PortGate
from stackube.cni.probe_relay import Upstream
from stackube.cni.probes import (
    chain_name,
    liveness_only_tcp_ports,
    original_destination,
    probe_ports,
    render_chain,
)
from stackube.cni.recovery import (
    HostPort,
    SandboxInterface,
    in_scope,
    node_marker,
    plan_recovery,
    plan_repairs,
    split_to_size,
)
from stackube.cni.result import host_ifname
from stackube.cni.tenancy import (
    ExpectedInterface,
    check_problems,
    choose_network,
    dns_pod_tenant,
    live_network_refs,
    present_network_ids,
    system_network_for,
)
from stackube.host.cri import netns_from_info
from stackube.host.netlink import PodInterface
from stackube.host.ovs import add_port_commands, del_port_commands
from stackube.host.portrelay import Backend, Frontend

pytestmark = pytest.mark.unit

NET = "0a1b2c3d-0000-4000-8000-000000000001"


def network(
    namespace: str, name: str, state: str = "Active", net: str = NET, deleting: bool = False
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": namespace, "name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-26T00:00:00Z"
    return {"metadata": meta, "status": {"state": state, "networkID": net, "subnetID": "s1"}}


# ---- which network -------------------------------------------------------------------------
def test_the_tenants_network_is_the_one_named_like_the_namespace() -> None:
    items = [network("test", "other", net="n2"), network("test", "test")]
    assert choose_network("test", items).network_id == NET


def test_a_single_network_of_any_name_is_used() -> None:
    assert choose_network("test", [network("test", "mine")]).name == "mine"


@pytest.mark.parametrize(
    ("items", "code", "text"),
    [
        ([], spec.NO_TENANT_NETWORK, "has no Network"),
        ([network("t", "a"), network("t", "b")], spec.NO_TENANT_NETWORK, "several Networks"),
        ([network("t", "t", state="Pending")], spec.TRY_AGAIN_LATER, "not Active"),
        ([network("t", "t", net="")], spec.TRY_AGAIN_LATER, "not Active"),
        ([network("t", "t", deleting=True)], spec.NO_TENANT_NETWORK, "being deleted"),
    ],
)
def test_no_usable_network_is_a_cni_error(
    items: list[dict[str, Any]], code: int, text: str
) -> None:
    with pytest.raises(spec.CniError) as raised:
        choose_network("t", items)
    assert raised.value.code == code and text in raised.value.msg


def test_pools_are_kept_only_for_active_networks_not_being_deleted() -> None:
    items = [
        network("a", "a", net="n1"),
        network("b", "b", net="n2", state="Pending"),
        network("c", "c", net="n3", deleting=True),
        network("d", "d", net=""),
    ]
    assert set(live_network_refs(items)) == {"n1"}
    # A pool of a Network being deleted (n3) or gone is left to its finalizer in Neutron;
    # one of a Network that is only not Active (n2) the node deletes itself.
    assert present_network_ids(items) == {"n1", "n2"}


# ---- pools ---------------------------------------------------------------------------------
def test_refill_counts_what_is_ready_and_what_is_being_made() -> None:
    assert refill_count(3, 0, 0) == 3
    assert refill_count(3, 1, 1) == 1
    assert refill_count(3, 2, 2) == 0
    assert refill_count(0, 0, 0) == 0


def test_a_pool_hands_out_each_port_once_and_reserves_refills() -> None:
    pools = PortPools(size=2)
    assert pools.want(NET) == 0  # untracked networks get no pool
    pools.track(NET)
    assert pools.want(NET) == 2
    assert pools.want(NET) == 0  # already being made
    port = ReadyPort("p1", NET, "fa:16:3e:00:00:01", "10.0.0.5")
    assert pools.filled(port, NET) and pools.filled(None, NET)  # one made, one failed
    assert pools.want(NET) == 1
    assert pools.take(NET) == port
    assert pools.take(NET) is None


def test_a_dropped_pool_returns_its_ports_and_refuses_late_ones() -> None:
    pools = PortPools(size=1)
    pools.track(NET)
    pools.want(NET)
    pools.adopt(ReadyPort("p0", NET, "m", "ip"))
    assert [p.id for p in pools.drop(NET)] == ["p0"]
    assert not pools.filled(ReadyPort("late", NET, "m", "ip"), NET)  # caller deletes it


def host_port(
    port_id: str,
    device_id: str = POOL_DEVICE_ID,
    net: str = NET,
    active: bool = True,
    mac: str = "fa:16:3e:00:00:01",
) -> HostPort:
    return HostPort(port_id, net, device_id, mac, "10.0.0.9", active)


def journal(container: str, port_id: str, uid: str, phase: Phase = Phase.RECORDED) -> Attachment:
    return Attachment(container, "eth0", "/var/run/netns/x", "t", "p", uid, NET, port_id, phase)


def live(sandbox: str, mac: str, uid: str = "uid-live") -> SandboxInterface:
    return SandboxInterface(sandbox, "t", "web", uid, f"/var/run/netns/{sandbox}", "eth0", mac)


def test_recovery_keeps_pods_adopts_intact_pool_ports_and_deletes_the_rest() -> None:
    ports = [
        host_port("pod-port", device_id="uid-1"),  # journaled by id
        host_port("early", device_id="uid-2"),  # made before its id was journaled
        host_port("pool-ok"),
        host_port("pool-unplugged"),
        host_port("pool-down", active=False),
        host_port("pool-dead-net", net="gone"),
        host_port("orphan", device_id="uid-9"),  # nobody's
    ]
    attachments = [journal("c1", "pod-port", "uid-1"), journal("c2", "", "uid-2", Phase.NEW)]
    plugged = ["pool-ok", "pool-down", "pool-dead-net", "pod-port"]
    plan = plan_recovery(
        ports,
        attachments=attachments,
        plugged=plugged,
        live_networks=[NET],
        interfaces=[],
        node_pod_uids=[],
    )
    assert [p.id for p in plan.pool] == ["pool-ok"]
    assert dict(plan.owned) == {"pod-port": "c1-eth0", "early": "c2-eth0"}
    assert {p.id for p in plan.delete} == {"pool-unplugged", "pool-down", "pool-dead-net", "orphan"}
    assert plan.rebuilt == () and plan.kept == ()


def test_a_lost_journal_is_rebuilt_from_live_sandboxes_and_nothing_alive_is_deleted() -> None:
    ports = [
        host_port("named", device_id="uid-live", mac="fa:16:3e:00:00:0a"),
        # taken from the pool by a pod, not yet renamed when the journal was lost
        host_port("claimed", mac="FA:16:3E:00:00:0B"),
        # a pod bound to this node between two sandboxes
        host_port("between", device_id="uid-node", mac="fa:16:3e:00:00:0c"),
        host_port("orphan", device_id="uid-gone", mac="fa:16:3e:00:00:0d"),
    ]
    plan = plan_recovery(
        ports,
        attachments=[],
        plugged=[],
        live_networks=[NET],
        interfaces=[
            live("sb1", "fa:16:3e:00:00:0a"),
            live("sb2", "fa:16:3e:00:00:0b", uid="uid-other"),
            live("sb9", "fa:16:3e:99:99:99"),  # a pod of another network plugin, or none
        ],
        node_pod_uids=["uid-live", "uid-other", "uid-node"],
    )
    assert [p.id for p in plan.delete] == ["orphan"]
    assert [p.id for p in plan.kept] == ["between"]
    rebuilt = {a.port_id: a for a in plan.rebuilt}
    assert set(rebuilt) == {"named", "claimed"}
    assert rebuilt["named"].phase == Phase.RECORDED  # Neutron already names it
    assert rebuilt["claimed"].phase == Phase.PLUGGED  # a rename is due
    assert (rebuilt["claimed"].container_id, rebuilt["claimed"].netns) == (
        "sb2",
        "/var/run/netns/sb2",
    )
    assert rebuilt["named"].mac == "fa:16:3e:00:00:0a" and rebuilt["named"].ip == "10.0.0.9"


def test_a_journaled_sandbox_is_not_rebuilt_twice() -> None:
    ports = [host_port("p1", device_id="uid-live", mac="fa:16:3e:00:00:0a")]
    plan = plan_recovery(
        ports,
        attachments=[journal("sb1", "p1", "uid-live")],
        plugged=[],
        live_networks=[NET],
        interfaces=[live("sb1", "fa:16:3e:00:00:0a")],
        node_pod_uids=[],
    )
    assert dict(plan.owned) == {"p1": "sb1-eth0"} and plan.rebuilt == ()


def test_ports_are_scoped_to_the_daemons_node_identity() -> None:
    assert in_scope(node_marker("n1"), "n1", "host-a")
    assert not in_scope(node_marker("cnitest-1"), "n1", "host-a")  # a test daemon's
    assert in_scope("", "host-a", "host-a")  # made before ports were marked
    assert not in_scope("", "cnitest-1", "host-a")  # not a test daemon's to recover


def test_repairs_name_what_is_broken_for_plugged_pods_only() -> None:
    ok = journal("ok", "port-ok-000000", "u1")
    gone = journal("gone", "port-gone-000", "u2")
    moved = journal("moved", "port-moved-00", "u3")
    no_tap = journal("notap", "port-notap-00", "u4")
    detached = journal("det", "port-det-0000", "u5")
    adding = journal("adding", "port-add-0000", "u6", Phase.CLAIMED)  # an ADD owns it
    ports = {
        ok.port_id: "host-a",
        moved.port_id: "",
        no_tap.port_id: "host-a",
        detached.port_id: "host-a",
        adding.port_id: "host-a",
    }
    links = [host_ifname(a.port_id) for a in (ok, gone, moved, detached, adding)]
    repairs = plan_repairs(
        [ok, gone, moved, no_tap, detached, adding],
        ports,
        "host-a",
        host_links=links,
        attached=[ok.port_id, moved.port_id, adding.port_id],
        live_networks=[NET],
    )
    assert [(r.attachment.container_id, r.problem) for r in repairs] == [
        ("gone", "port-gone"),
        ("moved", "port-unbound"),
        ("notap", "host-link-gone"),
        ("det", "host-link-detached"),
    ]
    # A Network being deleted takes its ports first: its pods are not mended.
    assert (
        plan_repairs([gone], ports, "host-a", host_links=links, attached=[], live_networks=[]) == []
    )


def test_a_pool_port_can_be_taken_back_by_id_unless_a_pod_has_it() -> None:
    pools = PortPools(size=2)
    pools.adopt(ReadyPort("p1", NET, "m", "10.0.0.5"))
    assert pools.discard("p1") and pools.ready(NET) == 0
    assert not pools.discard("p1")


def test_recovered_pools_are_trimmed_to_size_per_network() -> None:
    ports = [host_port("a1"), host_port("a2"), host_port("a3"), host_port("b1", net="other")]
    keep, extra = split_to_size(ports, 2)
    assert [p.id for p in keep] == ["a1", "a2", "b1"] and [p.id for p in extra] == ["a3"]
    assert split_to_size(ports, 0)[0] == []


# ---- CHECK ---------------------------------------------------------------------------------
EXPECTED = ExpectedInterface("eth0", "fa:16:3e:aa:bb:cc", "10.244.0.5/16", 1450, "10.244.0.1")


def found(**changes: Any) -> PodInterface:
    base: dict[str, Any] = {
        "ifname": "eth0",
        "mac": "FA:16:3E:AA:BB:CC",
        "mtu": 1450,
        "up": True,
        "addresses": ("10.244.0.5/16",),
        "default_gateway": "10.244.0.1",
    }
    return PodInterface(**(base | changes))


def test_check_passes_when_everything_is_as_add_left_it() -> None:
    assert check_problems(EXPECTED, found(), "ACTIVE", plugged=True) == []


@pytest.mark.parametrize(
    ("interface", "status", "plugged", "text"),
    [
        (None, "ACTIVE", True, "missing"),
        (found(mac="fa:16:3e:00:00:00"), "ACTIVE", True, "MAC"),
        (found(addresses=()), "ACTIVE", True, "lacks address"),
        (found(mtu=1500), "ACTIVE", True, "MTU"),
        (found(up=False), "ACTIVE", True, "down"),
        (found(default_gateway=None), "ACTIVE", True, "default route"),
        (found(), None, True, "port is gone"),
        (found(), "DOWN", True, "port is DOWN"),
        (found(), "ACTIVE", False, "not attached"),
    ],
)
def test_check_names_what_is_wrong(
    interface: PodInterface | None, status: str | None, plugged: bool, text: str
) -> None:
    problems = check_problems(EXPECTED, interface, status, plugged)
    assert len(problems) == 1 and text in problems[0]


# ---- names, drivers, install ----------------------------------------------------------------
def test_link_names_fit_linux_and_match_what_neutron_agents_expect() -> None:
    port = "e17c3b2a-d2f2-4ece-9dde-eeef71719728"
    assert host_ifname(port) == "tape17c3b2a-d2"
    assert parked_ifname(port) == "stpe17c3b2a-d2"
    assert linux_bridge_name(NET) == "brq0a1b2c3d-00"
    assert all(
        len(n) <= 15 for n in (host_ifname(port), parked_ifname(port), linux_bridge_name(NET))
    )


def test_ovs_plug_is_one_transaction_with_os_vif_external_ids() -> None:
    ids = ovs_external_ids("port-1", "fa:16:3e:00:00:01", "uid-1")
    args = add_port_commands("br-int", "tapport-1", ids)
    assert args[:4] == ["--may-exist", "add-port", "br-int", "tapport-1"]
    assert "external-ids:iface-id=port-1" in args and "external-ids:iface-status=active" in args
    assert "external-ids:attached-mac=fa:16:3e:00:00:01" in args
    assert "external-ids:vm-uuid=uid-1" in args
    assert del_port_commands("br-int", "tapx") == ["--if-exists", "del-port", "br-int", "tapx"]


def test_the_conflist_names_the_plugin_and_its_socket() -> None:
    doc = conflist("/run/stackube/cni.sock")
    assert doc["cniVersion"] == "1.0.0" and doc["name"] == "stackube"
    # CNI 1.1 runtimes pick 1.1.0 (GC, STATUS) from cniVersions; containerd 1.6 reads 1.0.0
    assert doc["cniVersions"] == ["1.0.0", "1.1.0"]
    assert doc["plugins"] == [
        {
            "type": "kubestack",
            "socket": "/run/stackube/cni.sock",
            "capabilities": {"portMappings": True},
        }
    ]


def test_port_mappings_come_from_the_runtime_config_and_bad_ones_are_refused() -> None:
    config = {
        "runtimeConfig": {
            "portMappings": [
                {
                    "hostPort": 54323,
                    "containerPort": 8080,
                    "protocol": "tcp",
                    "hostIP": "127.0.0.1",
                },
                # containerd's spelling (go-cni's struct has no JSON tags)
                {"HostPort": 54323, "ContainerPort": 8080, "Protocol": "udp", "HostIP": ""},
                {"hostPort": 80, "containerPort": 80, "protocol": "tcp", "hostIP": ANY_ADDRESS},
            ]
        }
    }
    assert parse_port_mappings(config) == (
        PortMapping("TCP", "", 80, 80),
        PortMapping("TCP", "127.0.0.1", 54323, 8080),
        PortMapping("UDP", "", 54323, 8080),
    )
    assert parse_port_mappings({}) == ()
    for bad, message in (
        ({"hostPort": 0, "containerPort": 80}, "hostPort 0 is not a port number"),
        ({"hostPort": 80, "containerPort": "80"}, "containerPort '80' is not a port number"),
        ({"hostPort": 80, "containerPort": 80, "protocol": "sctp"}, "only TCP and UDP"),
        ({"hostPort": 80, "containerPort": 80, "hostIP": "::1"}, "IPv6 is not served"),
    ):
        with pytest.raises(spec.CniError, match=message) as err:
            parse_port_mappings({"runtimeConfig": {"portMappings": [bad]}})
        assert err.value.code == spec.INVALID_NETWORK_CONFIG


def test_host_port_relays_bind_the_host_ip_or_every_address() -> None:
    relays = host_port_relays(
        [
            ("10.244.0.7", (PortMapping("TCP", "127.0.0.1", 54323, 8080),)),
            ("10.244.0.8", (PortMapping("TCP", "198.51.100.254", 54323, 8080),)),
            ("10.244.0.9", (PortMapping("UDP", "", 54323, 8081),)),
        ]
    )
    assert relays == {
        Frontend("TCP", "127.0.0.1", 54323): Backend("10.244.0.7", 8080),
        Frontend("TCP", "198.51.100.254", 54323): Backend("10.244.0.8", 8080),
        Frontend("UDP", ANY_ADDRESS, 54323): Backend("10.244.0.9", 8081),
    }


def test_port_mappings_survive_the_journals_json() -> None:
    mapping = PortMapping("UDP", "", 53, 1053)
    attachment = Attachment("c1", "eth0", "/n", "ns", "p", "uid", port_mappings=(mapping,))
    assert decode_attachment(json.loads(json.dumps(asdict(attachment)))) == attachment
    # Entries written before hostPorts existed read as having none.
    old = {k: v for k, v in asdict(attachment).items() if k != "port_mappings"}
    assert decode_attachment(old).port_mappings == ()


def test_a_dns_server_pod_joins_the_network_of_the_tenant_its_label_names() -> None:
    labels = {"stackube.kubernetes.io/tenant": "team-a", "app.kubernetes.io/name": "x"}
    assert dns_pod_tenant("stackube-dns", "team-a-1", labels) == "team-a"
    with pytest.raises(spec.CniError, match=r"no stackube\.kubernetes\.io/tenant label") as err:
        dns_pod_tenant("stackube-dns", "stray", {})
    assert err.value.code == spec.NO_TENANT_NETWORK
    with pytest.raises(spec.CniError, match="not in the API") as err:
        dns_pod_tenant("stackube-dns", "gone", None)
    assert err.value.code == spec.TRY_AGAIN_LATER


# ---- the runtime's sandboxes ------------------------------------------------------------------
def test_the_netns_path_comes_from_the_sandboxs_runtime_spec() -> None:
    info = {
        "info": json.dumps(
            {
                "pid": 42,
                "runtimeSpec": {
                    "linux": {
                        "namespaces": [
                            {"type": "pid"},
                            {"type": "network", "path": "/var/run/netns/cni-1234"},
                        ]
                    }
                },
            }
        )
    }
    assert netns_from_info(info) == "/var/run/netns/cni-1234"
    assert netns_from_info({"info": json.dumps({"runtimeSpec": {"linux": {}}})}) == ""
    assert netns_from_info({"info": "not json"}) == ""
    assert netns_from_info({}) == ""


# ---- probes ---------------------------------------------------------------------------------
def test_probe_ports_are_the_tcp_ports_the_kubelet_connects_to() -> None:
    pod = {
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "ports": [{"name": "http", "containerPort": 8080}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                    "livenessProbe": {"tcpSocket": {"port": 8081}},
                    "startupProbe": {"grpc": {"port": 9090}},
                },
                {
                    "name": "side",
                    "livenessProbe": {"exec": {"command": ["true"]}},  # runs inside
                    "readinessProbe": {"httpGet": {"host": "example.org", "port": 80}},
                },
            ],
            "initContainers": [
                {"name": "sidecar", "readinessProbe": {"tcpSocket": {"port": "7000"}}}
            ],
        }
    }
    assert probe_ports(pod) == {8080, 8081, 9090, 7000}
    # the ports whose probes only connect (the relay must not answer those itself)
    assert probe_ports(pod, ("tcpSocket",)) == {8081, 7000}
    # 8081: only a liveness probe connects there (7000 is a readiness probe's)
    assert liveness_only_tcp_ports(pod) == {8081}
    shared = {"spec": {"containers": [{
        "livenessProbe": {"tcpSocket": {"port": 80}}, "readinessProbe": {"httpGet": {"port": 80}}
    }]}}  # fmt: skip
    assert liveness_only_tcp_ports(shared) == set()
    elsewhere = {
        "spec": {"containers": [{"livenessProbe": {"tcpSocket": {"port": 1, "host": "h"}}}]}
    }
    assert probe_ports(elsewhere) == set()
    # a named port the container does not declare names nothing (the kubelet fails it)
    unnamed = {"spec": {"containers": [{"livenessProbe": {"tcpSocket": {"port": "nope"}}}]}}
    assert probe_ports(unnamed) == set()
    assert probe_ports({"spec": {"containers": [{"name": "x"}]}}) == set()


def test_the_gate_opens_a_tcp_socket_target_only_while_the_pod_listens() -> None:
    listening: set[str] = set()
    checked: list[str] = []

    def check(upstream: Upstream) -> bool:
        checked.append(upstream.description)
        return upstream.description in listening

    def target(name: str) -> Upstream:
        return Upstream(socket.socket, name)

    gate = PortGate(check)
    a, b = ("10.0.0.5", 8081), ("10.0.0.6", 7000)
    gate.set_targets({a: target("a"), b: target("b")})
    assert gate.open_targets() == set()  # closed until checked
    listening.add("a")
    assert gate.check_due(now=100.0) is True
    assert gate.open_targets() == {a}
    # Closed ones are looked at again after CLOSED_EVERY, open ones after OPEN_EVERY.
    checked.clear()
    assert gate.check_due(now=100.0 + CLOSED_EVERY) is False
    assert checked == ["b"]
    listening.discard("a")
    assert gate.check_due(now=100.0 + OPEN_EVERY - 0.1) is False  # a is not due yet
    assert gate.check_due(now=100.0 + OPEN_EVERY) is True
    assert gate.open_targets() == set()
    # A target that is no longer wanted is forgotten.
    listening.add("a")
    gate.check_due(now=200.0)
    gate.set_targets({b: target("b")})
    assert gate.open_targets() == set()


def test_a_gate_check_without_an_answer_keeps_the_state_and_a_slow_one_holds_no_other() -> None:
    answers: dict[str, bool | None] = {"a": True, "b": None}
    release = threading.Event()
    kicked = threading.Event()

    def check(upstream: Upstream) -> bool | None:
        if upstream.description == "slow":
            release.wait(10)  # a runsc that takes its time
        return answers.get(upstream.description, True)

    gate = PortGate(check, on_change=kicked.set)
    a, b = ("10.0.0.5", 80), ("10.0.0.6", 80)
    gate.set_targets({a: Upstream(socket.socket, "a"), b: Upstream(socket.socket, "b")})
    assert gate.check_due(now=100.0) is True
    assert gate.open_targets() == {a}
    # No answer (None) says nothing: b stays closed, a stays open, and b is due again at
    # once (it was not counted as checked).
    answers["a"] = None
    assert gate.check_due(now=100.0 + OPEN_EVERY) is False
    assert gate.open_targets() == {a}
    answers["b"] = True
    assert gate.check_due(now=100.0 + OPEN_EVERY) is True
    assert gate.open_targets() == {a, b}
    # In the daemon's loop a new target is checked at once, beside a slow one.
    stopping = threading.Event()
    worker = threading.Thread(target=gate.run, args=(stopping,))
    worker.start()
    try:
        c = ("10.0.0.7", 80)
        gate.set_targets({c: Upstream(socket.socket, "slow")})
        d = ("10.0.0.8", 80)
        gate.set_targets({c: Upstream(socket.socket, "slow"), d: Upstream(socket.socket, "d")})
        assert kicked.wait(5)
        assert gate.open_targets() == {d}  # d's check did not wait for c's
    finally:
        release.set()
        stopping.set()
        worker.join(10)
    assert gate.open_targets() == {c, d}


def test_a_liveness_only_target_starts_open_and_closes_only_when_closed_for_a_while() -> None:
    listening: set[str] = set()
    gate = PortGate(lambda upstream: upstream.description in listening)
    live, ready = ("10.0.0.5", 80), ("10.0.0.6", 80)
    gate.set_targets(
        {live: Upstream(socket.socket, "live"), ready: Upstream(socket.socket, "ready")},
        lenient={live},
    )
    # Control: the readiness target is closed until seen open; the liveness one is open.
    assert gate.open_targets() == {live}
    # Seen closed (a container still starting): it stays open, looked at every second ...
    assert gate.check_due(now=100.0) is False
    assert gate.open_targets() == {live}
    assert gate.check_due(now=100.0 + CLOSED_EVERY) is False
    # ... and closes once closed for LENIENT_CLOSE_SECONDS on end.
    assert gate.check_due(now=100.0 + LENIENT_CLOSE_SECONDS) is True
    assert gate.open_targets() == set()
    # Open again at the next look; a closed spell starts afresh after that.
    listening.add("live")
    assert gate.check_due(now=200.0) is True
    listening.discard("live")
    assert gate.check_due(now=200.0 + OPEN_EVERY) is False
    assert gate.open_targets() == {live}


def test_the_probe_chain_redirects_exactly_the_targets() -> None:
    chain = chain_name("node-1")
    assert chain.startswith("STKB-PROBES-") and len(chain) <= 28
    assert chain != chain_name("cnitest-1")  # a test daemon's rules are its own
    targets = [("10.244.0.5", 80), ("10.244.0.5", 80), ("10.244.1.9", 8080)]
    redirect = "-p tcp -m tcp --dport {} -j REDIRECT --to-ports 41000"
    assert render_chain(targets, 41000, chain).splitlines() == [
        "*nat",
        f":{chain} - [0:0]",
        f"-F {chain}",
        f"-A {chain} -d 10.244.0.5/32 " + redirect.format(80),
        f"-A {chain} -d 10.244.1.9/32 " + redirect.format(8080),
        "COMMIT",
    ]
    assert render_chain([], 41000, chain).splitlines()[-2:] == [f"-F {chain}", "COMMIT"]


def test_the_original_destination_is_decoded_from_sockaddr_in() -> None:
    raw = bytes([2, 0, 0x1F, 0x90, 10, 244, 0, 5]) + bytes(8)
    assert original_destination(raw) == ("10.244.0.5", 8080)


def test_a_namespace_without_a_network_uses_the_system_network_unless_a_tenant_owns_it() -> None:
    system = {
        "metadata": {"namespace": "kube-system", "name": "system"},
        "status": {"state": "Active", "networkID": "sys-net", "subnetID": "sys-sub"},
    }
    ref = system_network_for("default", {}, [system])
    assert (ref.namespace, ref.name, ref.network_id) == ("kube-system", "system", "sys-net")
    # A Tenant's namespace waits for its own Network: never the system one.
    with pytest.raises(spec.CniError, match="Tenant team's and has no Network yet") as caught:
        system_network_for("team", {"stackube.kubernetes.io/tenant": "team"}, [system])
    assert caught.value.code == spec.TRY_AGAIN_LATER
    with pytest.raises(spec.CniError, match="does not exist"):
        system_network_for("gone", None, [system])
    # Only kube-system/system is the system network.
    other = {**system, "metadata": {"namespace": "kube-system", "name": "other"}}
    with pytest.raises(spec.CniError, match="kube-system/system does not exist yet"):
        system_network_for("default", {}, [other])
    pending = {**system, "status": {"state": "Pending"}}
    with pytest.raises(spec.CniError, match="not Active yet"):
        system_network_for("default", {}, [pending])


def test_loopback_host_ports_are_let_past_the_kubelets_localnet_guard_for_local_senders() -> None:
    text = render_loopback_accepts(
        [
            PortMapping("TCP", "127.0.0.1", 54323, 8080),
            PortMapping("UDP", "", 53, 1053),
            PortMapping("TCP", "198.51.100.254", 54323, 8080),  # not loopback: not here
        ],
        "STKB-HOSTPORTS-x",
    )
    rules = [line for line in text.splitlines() if line.startswith("-A ")]
    assert rules == [
        "-A STKB-HOSTPORTS-x -d 127.0.0.1/32 -p tcp -m tcp --dport 54323 -j ACCEPT",
        "-A STKB-HOSTPORTS-x -d 127.0.0.0/8 -p udp -m udp --dport 53 -j ACCEPT",
    ]
    # Jumped to for loopback traffic only (packets made on this node).
    assert LOOPBACK_JUMPS == (("INPUT", ("-i", "lo")), ("OUTPUT", ("-o", "lo")))
    assert text.startswith("*filter\n") and text.endswith("COMMIT\n")
    assert input_chain("node-a") != input_chain("node-b") and len(input_chain("n")) <= 28


def test_the_loopback_jump_must_come_before_the_kubelets_firewall() -> None:
    from stackube.host.iptables import jump_position_ok  # noqa: PLC0415

    ours = "-A INPUT -i lo -j STKB-HOSTPORTS-5bce98f73f"
    firewall = "-A INPUT -j KUBE-FIREWALL"
    other = "-A INPUT -i lo -j STKB-HOSTPORTS-0aac8c0510"  # another daemon's: no matter
    assert jump_position_ok(["-P INPUT ACCEPT", other, ours, firewall], ours, "KUBE-FIREWALL")
    # What the conformance run found: ours behind the kubelet's (moved back to the top).
    assert not jump_position_ok([other, firewall, ours], ours, "KUBE-FIREWALL")
    assert not jump_position_ok([other, firewall], ours, "KUBE-FIREWALL")
    assert jump_position_ok([ours], ours, "KUBE-FIREWALL")


def raising(error: Exception) -> Callable[[], str]:
    def resolve() -> str:
        raise error

    return resolve


def test_an_add_waits_for_its_network_and_gives_up_after_its_patience() -> None:
    now = [0.0]
    waits: list[float] = []
    answers = iter([spec.CniError(spec.TRY_AGAIN_LATER, "not Active yet")] * 2 + ["net"])

    def resolve() -> str:
        answer = next(answers)
        if isinstance(answer, spec.CniError):
            raise answer
        return answer

    def wait(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    assert tenancy.resolve_patiently(resolve, wait, 10, lambda: now[0]) == "net"
    assert waits == [tenancy.NETWORK_RECHECK_SECONDS] * 2
    # Past its patience the last error stands; the last wait is cut to what is left.
    waits.clear()
    now[0] = 0.0
    never = spec.CniError(spec.TRY_AGAIN_LATER, "not Active yet")
    with pytest.raises(spec.CniError, match="not Active yet"):
        tenancy.resolve_patiently(raising(never), wait, 2.5, lambda: now[0])
    assert waits == [1.0, 1.0, 0.5]
    # Anything but "try again later" is not waited for.
    waits.clear()
    refused = spec.CniError(spec.NO_TENANT_NETWORK, "has no Network")
    with pytest.raises(spec.CniError, match="has no Network"):
        tenancy.resolve_patiently(raising(refused), wait, 10, lambda: now[0])
    assert waits == []
