"""kubestack + stackube-cni-daemon on the devbox's real Neutron (Linux bridge agent),
with network namespaces as pods and the plugin invoked as containerd invokes it."""

from __future__ import annotations

import ipaddress
import json
import secrets
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from kubernetes import client as k8s
from openstack.connection import Connection

from stackube.api.naming import POD_PORT_DEVICE_OWNER
from stackube.cni import spec
from stackube.cni.daemon import CHECK_FAILED
from stackube.cni.drivers import parked_ifname
from stackube.cni.pool import POOL_DEVICE_ID
from stackube.cni.result import host_ifname
from stackube.faults import CRASH_EXIT_CODE
from stackube.host import netlink
from tests.integration.cni_harness import (
    CniNode,
    PodIdentity,
    Sandboxes,
    address_of,
    create_tenant,
    delete_tenant,
    in_netns,
    network_id_of,
    our_ports,
    pool_ports,
    reaches,
    wait_for,
)
from tests.integration.conftest import Attach

pytestmark = pytest.mark.integration

GROUP, VERSION = "stackube.kubernetes.io", "v1"


def assert_released(os_admin: Connection, node: CniNode, port_id: str) -> None:
    assert os_admin.network.find_port(port_id, ignore_missing=True) is None
    links = set(netlink.link_names())
    assert host_ifname(port_id) not in links and parked_ifname(port_id) not in links
    assert not [a for a in node.store.all() if a.port_id == port_id]


def port_of(node: CniNode, pod: PodIdentity) -> str:
    found = node.store.get(pod.container_id, "eth0")
    assert found is not None and found.port_id
    return found.port_id


# ---- tests ---------------------------------------------------------------------------------
def test_pods_get_tenant_addresses_reach_gateway_and_each_other(
    node: CniNode, tenants: dict[str, str], attach: Attach, os_admin: Connection
) -> None:
    tenant = next(iter(tenants))
    first, first_ns, first_result = attach(tenant)
    _, second_ns, second_result = attach(tenant)
    subnet = ipaddress.ip_network("10.245.0.0/16")
    for result in (first_result, second_result):
        assert ipaddress.ip_address(address_of(result)) in subnet
        assert result["cniVersion"] == "1.0.0"
        assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.245.0.1"}]
        assert result["dns"] == {
            "nameservers": ["10.96.0.10"],
            "search": [f"{tenant}.svc.cluster.local", "svc.cluster.local", "cluster.local"],
        }
    assert reaches(first_ns, "10.245.0.1"), "tenant gateway (its Neutron router)"
    assert reaches(first_ns, address_of(second_result))
    assert reaches(second_ns, address_of(first_result))
    # (not /sys/class/net: nsenter --net keeps the host's sysfs mount)
    link = in_netns(first_ns, "ip", "-o", "link", "show", "eth0").stdout
    assert f" mtu {os_admin.network.get_network(tenants[tenant]).mtu} " in link
    check = node.invoke("CHECK", first, first_ns, prev_result=first_result)
    assert check.code == 0, check.output


def test_tenants_are_isolated_even_with_the_same_cidr(
    node: CniNode, tenants: dict[str, str], attach: Attach
) -> None:
    a, b = list(tenants)
    pods = {name: [attach(name) for _ in range(2)] for name in (a, b)}
    ips = {name: [address_of(r) for _, _, r in group] for name, group in pods.items()}
    assert not set(ips[a]) & set(ips[b]), "same address in both tenants: rerun"
    matrix = {}
    for source in (a, b):
        _, netns, _ = pods[source][0]
        for target in (a, b):
            matrix[(source, target)] = reaches(
                netns, ips[target][1], tries=1 if source != target else 3
            )
    assert matrix == {(a, a): True, (b, b): True, (a, b): False, (b, a): False}


def test_double_del_and_nothing_left_behind(
    node: CniNode, tenants: dict[str, str], os_admin: Connection, sandboxes: Sandboxes
) -> None:
    tenant = next(iter(tenants))
    pod, netns = PodIdentity.new(tenant), sandboxes.new()
    added = node.invoke("ADD", pod, netns)
    assert added.code == 0, added.output
    port_id = port_of(node, pod)
    assert node.invoke("DEL", pod, netns, prev_result=added.output).code == 0
    # The runtime's second DEL: the sandbox may be gone, CNI_NETNS empty.
    assert node.invoke("DEL", pod, "").code == 0
    netlink.delete_namespace(Path(netns).name)
    assert node.invoke("DEL", pod, netns).code == 0  # netns missing
    assert_released(os_admin, node, port_id)


def test_del_succeeds_when_someone_deleted_the_port(
    node: CniNode, tenants: dict[str, str], os_admin: Connection, sandboxes: Sandboxes
) -> None:
    pod, netns = PodIdentity.new(next(iter(tenants))), sandboxes.new()
    assert node.invoke("ADD", pod, netns).code == 0
    port_id = port_of(node, pod)
    os_admin.network.delete_port(port_id)
    assert node.invoke("DEL", pod, netns).code == 0
    assert_released(os_admin, node, port_id)


def test_twenty_concurrent_adds(
    node: CniNode, tenants: dict[str, str], os_admin: Connection, sandboxes: Sandboxes
) -> None:
    """Twenty ADDs at once all succeed, each with its own address; one that Neutron's
    single API worker answers too late is retried once, as the runtime would (the
    daemon says "try again" then, and the retry must finish the same sandbox). Every
    pod is DELeted whatever happens, so a failure here leaves nothing to later tests."""
    tenant = next(iter(tenants))
    pods = [(PodIdentity.new(tenant), sandboxes.new()) for _ in range(20)]
    try:
        with ThreadPoolExecutor(20) as pool:
            runs = list(pool.map(lambda p: node.invoke("ADD", *p), pods))
        runs = [
            run if run.code == 0 else node.invoke("ADD", *pod)
            for run, pod in zip(runs, pods, strict=True)
        ]
        assert [r.code for r in runs] == [0] * 20, [r.output for r in runs if r.code]
        addresses = [address_of(r.output) for r in runs]
        assert len(set(addresses)) == 20
        port_ids = [port_of(node, pod) for pod, _ in pods]
    finally:
        with ThreadPoolExecutor(20) as pool:
            dels = list(pool.map(lambda p: node.invoke("DEL", *p), pods))
    assert [r.code for r in dels] == [0] * 20
    for port_id in port_ids:
        assert_released(os_admin, node, port_id)


def test_check_reports_a_tampered_interface(
    node: CniNode, tenants: dict[str, str], attach: Attach
) -> None:
    pod, netns, result = attach(next(iter(tenants)))
    in_netns(netns, "ip", "addr", "flush", "dev", "eth0")
    check = node.invoke("CHECK", pod, netns, prev_result=result)
    assert check.code != 0
    assert check.output["code"] == CHECK_FAILED
    assert "lacks address" in check.output["msg"]


def test_gc_releases_attachments_the_runtime_no_longer_has(
    node: CniNode, tenants: dict[str, str], os_admin: Connection, sandboxes: Sandboxes
) -> None:
    tenant = next(iter(tenants))
    kept, dropped = (
        (PodIdentity.new(tenant), sandboxes.new()),
        (PodIdentity.new(tenant), sandboxes.new()),
    )
    for pod, netns in (kept, dropped):
        assert node.invoke("ADD", pod, netns).code == 0
    dropped_port = port_of(node, dropped[0])
    others = [
        a
        for a in node.store.all()
        if a.container_id not in (kept[0].container_id, dropped[0].container_id)
    ]
    config = json.loads(node.plugin_stdin())
    config["cniVersion"] = "1.1.0"
    config["cni.dev/valid-attachments"] = [
        {"containerID": a.container_id, "ifname": a.ifname} for a in [*others]
    ] + [{"containerID": kept[0].container_id, "ifname": "eth0"}]
    gc = node.invoke("GC", None, stdin=json.dumps(config).encode())
    assert gc.code == 0, gc.output
    assert_released(os_admin, node, dropped_port)
    assert node.store.get(kept[0].container_id, "eth0") is not None
    assert node.invoke("DEL", *kept).code == 0


@pytest.mark.parametrize(
    ("stdin", "env", "code"),
    [
        (b"{not json", {}, spec.DECODE_FAILURE),
        (
            b'{"cniVersion": "9.9.9", "name": "stackube", "type": "kubestack"}',
            {},
            spec.INCOMPATIBLE_VERSION,
        ),
        (None, {"CNI_CONTAINERID": ""}, spec.INVALID_ENVIRONMENT),
        (None, {"CNI_NETNS": ""}, spec.INVALID_ENVIRONMENT),
        (None, {"CNI_ARGS": "K8S_POD_NAMESPACE"}, spec.INVALID_ENVIRONMENT),
        (None, {"CNI_COMMAND": "FROB"}, spec.INVALID_ENVIRONMENT),
    ],
    ids=[
        "malformed-json",
        "unknown-version",
        "no-container",
        "no-netns",
        "bad-args",
        "bad-command",
    ],
)
def test_bad_input_gets_a_cni_error(
    node: CniNode, sandboxes: Sandboxes, stdin: bytes | None, env: dict[str, str], code: int
) -> None:
    run = node.invoke("ADD", PodIdentity.new("default"), sandboxes.new(), stdin=stdin, env=env)
    assert run.code != 0
    assert run.output["code"] == code and run.output["msg"]
    assert "Traceback" not in run.stderr and "kubestack:" in run.stderr


def test_a_namespace_without_a_network_uses_the_system_network_unless_a_tenant_owns_it(
    node: CniNode, kube: k8s.ApiClient, sandboxes: Sandboxes, attach: Attach
) -> None:
    """A plain namespace's pod joins the system network (user-cidr); a Tenant's
    namespace without its Network yet is told to try again, never given the system
    network; a namespace that does not exist likewise."""
    _, _, result = attach("default")
    assert ipaddress.ip_address(address_of(result)) in ipaddress.ip_network("10.244.0.0/16")
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.0.1"}]
    name = f"cni-waiting-{secrets.token_hex(2)}"
    core = k8s.CoreV1Api(kube)
    core.create_namespace(
        {"metadata": {"name": name, "labels": {"stackube.kubernetes.io/tenant": name}}}
    )
    try:
        for namespace, says in ((name, "has no Network yet"), (f"{name}-x", "does not exist")):
            run = node.invoke("ADD", PodIdentity.new(namespace), sandboxes.new())
            assert run.code != 0, run.output
            assert run.output["code"] == spec.TRY_AGAIN_LATER, run.output
            assert says in run.output["msg"], run.output
            assert "Traceback" not in run.stderr
    finally:
        core.delete_namespace(name)


# ---- crash safety, restarts, pools ---------------------------------------------------------
@pytest.fixture
def fresh_daemon(node: CniNode) -> Iterator[CniNode]:
    """A test that restarts the daemon with its own settings; the module's default
    daemon (no pools) is back afterwards."""
    node.stop()
    yield node
    node.stop()
    node.start()


def test_a_pod_made_with_its_tenant_waits_for_the_network_instead_of_failing(
    fresh_daemon: CniNode, kube: k8s.ApiClient, sandboxes: Sandboxes
) -> None:
    """An ADD for a Tenant created a moment ago (no namespace, no Active Network yet)
    waits for the Network and succeeds, instead of failing "try again later" and leaving
    the kubelet to back off before the next sandbox (the tenant's DNS server is such a
    pod). The control: a daemon that waits only 2 s refuses."""
    node = fresh_daemon
    node.start(network_wait=2)
    name = f"cni-early-{secrets.token_hex(2)}"
    create_tenant(kube, name)
    try:
        refused = node.invoke("ADD", PodIdentity.new(name), sandboxes.new())
        assert refused.code != 0 and refused.output["code"] == spec.TRY_AGAIN_LATER, refused
        assert network_id_of(kube, name) is None, "the Network was Active too soon to tell"
        node.stop()
        node.start(network_wait=90)
        pod, netns = PodIdentity.new(name), sandboxes.new()
        started = time.monotonic()
        added = node.invoke("ADD", pod, netns)
        assert added.code == 0, (added.output, node.logs()[-3000:])
        assert network_id_of(kube, name) is not None
        assert reaches(netns, "10.245.0.1")
        print(f"ADD waited for the Network and finished in {time.monotonic() - started:.1f} s")
        assert node.invoke("DEL", pod, netns).code == 0
    finally:
        delete_tenant(kube, name)


def stray_links(os_admin: Connection) -> list[str]:
    """Parked pod ends (ours alone) whose Neutron port does not exist."""
    ids = [p.id for p in os_admin.network.ports(device_owner=POD_PORT_DEVICE_OWNER)]
    return [
        name
        for name in netlink.link_names()
        if name.startswith("stp") and not any(i.startswith(name[3:]) for i in ids)
    ]


@pytest.mark.parametrize("then", ["ADD", "DEL"])
@pytest.mark.parametrize("point", ["cni-claimed", "cni-port-created", "cni-plugged", "cni-moved"])
def test_daemon_killed_in_the_middle_of_an_add_recovers(
    fresh_daemon: CniNode,
    tenants: dict[str, str],
    os_admin: Connection,
    sandboxes: Sandboxes,
    point: str,
    then: str,
) -> None:
    node = fresh_daemon
    tenant = next(iter(tenants))
    network_id = tenants[tenant]
    before = {p.id for p in our_ports(os_admin, {network_id})}
    pooled = point == "cni-claimed"
    crashing = node.start(pool_size=1 if pooled else 0, pool_eager=pooled, crash_after=point)
    if pooled:
        ready = f"pool for {network_id}: port "
        wait_for(lambda: ready in node.log.read_text(), 90, "a pool port")
    pod, netns = PodIdentity.new(tenant), sandboxes.new()
    run = node.invoke("ADD", pod, netns)
    assert run.code != 0 and "Traceback" not in run.stderr
    assert crashing.wait(10) == CRASH_EXIT_CODE, node.logs()[-2000:]
    node.start()  # the DaemonSet's restart; no pool
    if then == "ADD":
        again = node.invoke("ADD", pod, netns)
        assert again.code == 0, (again.output, node.logs()[-3000:])
        assert reaches(netns, "10.245.0.1")
        mine = [p for p in our_ports(os_admin, {network_id}) if p.id not in before]
        assert [p.id for p in mine] == [port_of(node, pod)], "exactly one port for the pod"
    assert node.invoke("DEL", pod, netns).code == 0
    assert node.invoke("DEL", pod, "").code == 0
    left = [
        p.id
        for p in our_ports(os_admin, {network_id})
        if p.id not in before and p.device_id != POOL_DEVICE_ID
    ]
    assert not left, f"ports leaked: {left}"
    assert not node.store.all()
    assert not stray_links(os_admin)


def test_restart_keeps_pods_and_adopts_the_pool(
    fresh_daemon: CniNode, tenants: dict[str, str], os_admin: Connection, sandboxes: Sandboxes
) -> None:
    node = fresh_daemon
    tenant = next(iter(tenants))
    network_id = tenants[tenant]
    node.start(pool_size=2, pool_eager=True)
    # Ready in the daemon's eyes (ACTIVE in Neutron can come a moment earlier).
    ready = f"pool for {network_id}: port "
    wait_for(lambda: node.log.read_text().count(ready) >= 2, 90, "a pool of 2")
    pod, netns = PodIdentity.new(tenant), sandboxes.new()
    added = node.invoke("ADD", pod, netns)
    assert added.code == 0
    assert "(from the pool)" in node.log.read_text()
    wait_for(lambda: len(_ready_pool(os_admin, network_id)) == 2, 90, "the pool refilled")
    wait_for(lambda: node.log.read_text().count(ready) >= 3, 90, "the refill to be ready")
    pool_before = set(_ready_pool(os_admin, network_id))

    node.stop()
    node.start(pool_size=2, pool_eager=True)
    assert " 1 pod ports kept, 0 ports" in node.log.read_text()
    time.sleep(3)  # a few resync periods: a pool that was not adopted would be refilled
    assert set(_ready_pool(os_admin, network_id)) == pool_before
    assert node.invoke("CHECK", pod, netns, prev_result=added.output).code == 0
    second, second_ns = PodIdentity.new(tenant), sandboxes.new()
    assert node.invoke("ADD", second, second_ns).code == 0
    assert port_of(node, second) in pool_before, "the second pod got an adopted pool port"
    for p, ns in ((pod, netns), (second, second_ns)):
        assert node.invoke("DEL", p, ns).code == 0
    assert not node.store.all()


def _ready_pool(os_admin: Connection, network_id: str) -> list[str]:
    return [p.id for p in pool_ports(os_admin, network_id) if p.status == "ACTIVE"]


def test_the_pool_goes_with_its_network(
    fresh_daemon: CniNode, kube: k8s.ApiClient, os_admin: Connection
) -> None:
    node = fresh_daemon
    node.start(pool_size=2, pool_eager=True)
    name = f"cni-c-{secrets.token_hex(2)}"
    create_tenant(kube, name)
    try:
        network_id = wait_for(lambda: network_id_of(kube, name), 90, f"Network {name} Active")
        pool = wait_for(
            lambda: (
                _ready_pool(os_admin, network_id)
                if len(_ready_pool(os_admin, network_id)) == 2
                else None
            ),
            90,
            "a pool of 2",
        )
        links = set(netlink.link_names())
        assert all(host_ifname(p) in links and parked_ifname(p) in links for p in pool)
    finally:
        delete_tenant(kube, name)
    assert os_admin.network.find_network(network_id, ignore_missing=True) is None
    wait_for(
        lambda: not {host_ifname(p) for p in pool} & set(netlink.link_names()),
        30,
        "the pool's links to go",
    )
    assert "is gone: dropped its pool" in node.logs()
