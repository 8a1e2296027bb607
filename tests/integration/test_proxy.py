"""stackube-proxy on the devbox: Services in the apiserver, EndpointSlices naming netns
pods that kubestack put on tenant networks, rules inside the tenants' real Neutron
routers."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client as k8s

from stackube.api.manifests import proxy_rbac
from stackube.api.naming import DNS_SERVICE_ACCOUNT
from stackube.api.types import DNS_NAMESPACE
from stackube.controller import dns as tenant_dns
from stackube.devbox.box import Devbox
from stackube.host import iptables
from stackube.kube import apply
from tests.integration.cni_harness import (
    BASE_PATH,
    CniNode,
    PodIdentity,
    Sandboxes,
    address_of,
    router_id_of,
    wait_for,
)
from tests.integration.controller_harness import (
    devbox_services_paused,
    service_account_kubeconfig,
    stop_processes,
)

pytestmark = pytest.mark.integration

HTTP_SERVER = """
import http.server, sys
name = sys.argv[1].encode()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", str(len(name)))
        self.end_headers(); self.wfile.write(name)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
"""
UDP_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 5353))
while True:
    data, peer = s.recvfrom(512); s.sendto(sys.argv[1].encode(), peer)
"""
HTTP_GET = """
import sys, urllib.request
try:
    url, timeout = f"http://{sys.argv[1]}/", float(sys.argv[2])
    print(urllib.request.urlopen(url, timeout=timeout).read().decode())
except Exception as exc:
    print(f"ERROR {exc}"); sys.exit(1)
"""
# Answers with the address the connection came from (what masquerading made of it).
WHO_SERVER = """
import http.server
class Who(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.client_address[0].encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("0.0.0.0", 8081), Who).serve_forever()
"""
UDP_ASK = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
s.sendto(b"?", (sys.argv[1], int(sys.argv[2])))
try:
    print(s.recv(512).decode())
except OSError as exc:
    print(f"ERROR {exc}"); sys.exit(1)
"""


@dataclass
class Proxy:
    kubeconfig: Path
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def start(self, *extra: str) -> None:
        self.runs += 1
        self.log = self.root / f"proxy-{self.runs}.log"
        argv = [
            sys.executable, "-m", "stackube", "proxy", f"--kubeconfig={self.kubeconfig}",
            "--cluster-dns=10.96.0.10", "--housekeeping-seconds=1", *extra,
        ]  # fmt: skip
        with self.log.open("wb") as out:
            self.procs.append(
                subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env={"PATH": BASE_PATH}
                )
            )
        wait_for(lambda: "full sync" in self.log.read_text(), 30, "the proxy's first list")

    def stop(self) -> None:
        stop_processes(self.procs)


@pytest.fixture(scope="module")
def proxy(
    devbox: Devbox, kube: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Proxy]:
    apply.server_side_apply(kube, proxy_rbac(), "stackube-tests")
    root = tmp_path_factory.mktemp("proxy")
    kubeconfig = service_account_kubeconfig(kube, devbox, root / "kubeconfig", "stackube-proxy")
    running = Proxy(kubeconfig, root)
    with devbox_services_paused(devbox, "stackube-proxy"):
        running.start()
        yield running
        running.stop()


@dataclass
class Workloads:
    """Netns pods on tenant networks, some running servers; all stopped at the end."""

    node: CniNode
    sandboxes: Sandboxes
    servers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    attached: list[tuple[PodIdentity, str]] = field(default_factory=list)
    results: dict[str, dict[str, object]] = field(default_factory=dict)  # netns -> CNI result

    def pod(self, namespace: str) -> tuple[str, str]:
        identity, netns = PodIdentity.new(namespace), self.sandboxes.new()
        run = self.node.invoke("ADD", identity, netns)
        assert run.code == 0, run.output
        self.attached.append((identity, netns))
        self.results[netns] = run.output
        return netns, address_of(run.output)

    def serve(self, netns: str, program: str, name: str) -> None:
        self.run_in(netns, [sys.executable, "-c", program, name])

    def run_in(self, netns: str, argv: list[str], log: Path | None = None) -> None:
        out = log.open("wb") if log else None
        self.servers.append(
            subprocess.Popen(["nsenter", f"--net={netns}", *argv], stdout=out, stderr=out)
        )

    def close(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait()
        for identity, netns in self.attached:
            self.node.invoke("DEL", identity, netns)


@pytest.fixture(scope="module")
def tenant_pods(
    node: CniNode, tenants: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """Tenant A: two web/UDP servers and a client; tenant B: a client."""
    sandboxes = Sandboxes()
    work = Workloads(node, sandboxes)
    a, b = list(tenants)
    servers = {}
    for name in ("web-1", "web-2"):
        netns, ip = work.pod(a)
        work.serve(netns, HTTP_SERVER, name)
        work.serve(netns, UDP_SERVER, name)
        servers[name] = ip
        if name == "web-1":
            work.run_in(netns, [sys.executable, "-c", WHO_SERVER])
    client_a, _ = work.pod(a)
    client_b, _ = work.pod(b)
    yield {
        "a": a,
        "b": b,
        "servers": servers,
        "client_a": client_a,
        "client_b": client_b,
        "work": work,
    }
    work.close()
    sandboxes.remove_all()


def http_get(netns: str, address: str, timeout: float = 2) -> str:
    done = subprocess.run(
        ["nsenter", f"--net={netns}", sys.executable, "-c", HTTP_GET, address, str(timeout)],
        capture_output=True, text=True, timeout=timeout + 10, check=False,
    )  # fmt: skip
    return done.stdout.strip()


def udp_ask(netns: str, ip: str, port: int) -> str:
    done = subprocess.run(
        ["nsenter", f"--net={netns}", sys.executable, "-c", UDP_ASK, ip, str(port)],
        capture_output=True, text=True, timeout=15, check=False,
    )  # fmt: skip
    return done.stdout.strip()


def make_service(
    kube: k8s.ApiClient, namespace: str, name: str, ports: list[dict[str, object]]
) -> str:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": ports},  # no selector: the test owns the EndpointSlice
    }
    created = k8s.CoreV1Api(kube).create_namespaced_service(namespace, body)
    return str(created.spec.cluster_ip)


def set_endpoints(
    kube: k8s.ApiClient,
    namespace: str,
    service: str,
    ips: list[str],
    ports: list[dict[str, object]],
) -> None:
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service}-manual",
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "stackube-tests",
            },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }
    api = k8s.DiscoveryV1Api(kube)
    try:
        api.replace_namespaced_endpoint_slice(f"{service}-manual", namespace, body)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise
        api.create_namespaced_endpoint_slice(namespace, body)


WEB_PORTS = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]
WEB_SLICE_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def test_cluster_ip_follows_endpoint_changes_and_is_private_to_the_tenant(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    a, servers = str(tenant_pods["a"]), tenant_pods["servers"]
    assert isinstance(servers, dict)
    client_a, client_b = str(tenant_pods["client_a"]), str(tenant_pods["client_b"])
    name = f"web-{secrets.token_hex(2)}"
    cluster_ip = make_service(kube, a, name, WEB_PORTS)
    set_endpoints(kube, a, name, [servers["web-1"]], WEB_SLICE_PORTS)
    answers: list[str] = []
    try:
        wait_for(
            lambda: (
                answers.append(http_get(client_a, f"{cluster_ip}:80")) or answers[-1] == "web-1"
            ),
            20,
            "web-1 via the ClusterIP",
        )
    except AssertionError as exc:
        direct = http_get(client_a, servers["web-1"] + ":8080")
        raise AssertionError(f"{exc}: {answers[-3:]}; direct: {direct}") from exc

    # Move the endpoint: live within a second.
    set_endpoints(kube, a, name, [servers["web-2"]], WEB_SLICE_PORTS)
    started = time.monotonic()
    wait_for(
        lambda: http_get(client_a, f"{cluster_ip}:80", 1) == "web-2", 5, "web-2", interval=0.05
    )
    assert time.monotonic() - started <= 1.5  # includes one client process start per try

    # Both: each gets traffic.
    set_endpoints(kube, a, name, [servers["web-1"], servers["web-2"]], WEB_SLICE_PORTS)
    seen: set[str] = set()
    wait_for(
        lambda: seen.add(http_get(client_a, f"{cluster_ip}:80")) or {"web-1", "web-2"} <= seen,
        20,
        "both endpoints",
    )

    # Tenant B: the same ClusterIP leads nowhere.
    assert http_get(client_b, f"{cluster_ip}:80", 2).startswith("ERROR")


def test_udp_through_the_cluster_ip(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    a, servers = str(tenant_pods["a"]), tenant_pods["servers"]
    assert isinstance(servers, dict)
    name = f"echo-{secrets.token_hex(2)}"
    ports = [{"name": "echo", "port": 53, "targetPort": 5353, "protocol": "UDP"}]
    cluster_ip = make_service(kube, a, name, ports)
    set_endpoints(
        kube, a, name, [servers["web-2"]], [{"name": "echo", "port": 5353, "protocol": "UDP"}]
    )
    client = str(tenant_pods["client_a"])
    wait_for(
        lambda: udp_ask(client, cluster_ip, 53) == "web-2", 20, "a UDP answer via the ClusterIP"
    )
    # The endpoint moves: conntrack of the old flow is dropped, the next datagram goes to web-1.
    set_endpoints(
        kube, a, name, [servers["web-1"]], [{"name": "echo", "port": 5353, "protocol": "UDP"}]
    )
    wait_for(lambda: udp_ask(client, cluster_ip, 53) == "web-1", 5, "the new UDP endpoint")


def test_a_service_without_endpoints_is_refused_at_once(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    a = str(tenant_pods["a"])
    cluster_ip = make_service(kube, a, f"empty-{secrets.token_hex(2)}", WEB_PORTS)
    time.sleep(0.5)
    started = time.monotonic()
    answer = http_get(str(tenant_pods["client_a"]), f"{cluster_ip}:80", 5)
    assert answer.startswith("ERROR") and time.monotonic() - started < 3, answer


def test_restart_keeps_traffic_and_drops_rules_of_deleted_services(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    a, servers = str(tenant_pods["a"]), tenant_pods["servers"]
    assert isinstance(servers, dict)
    client = str(tenant_pods["client_a"])
    keep, drop = f"keep-{secrets.token_hex(2)}", f"drop-{secrets.token_hex(2)}"
    keep_ip = make_service(kube, a, keep, WEB_PORTS)
    set_endpoints(kube, a, keep, [servers["web-1"]], WEB_SLICE_PORTS)
    drop_ip = make_service(kube, a, drop, WEB_PORTS)
    set_endpoints(kube, a, drop, [servers["web-2"]], WEB_SLICE_PORTS)
    wait_for(lambda: http_get(client, f"{drop_ip}:80") == "web-2", 20, "the service to drop")
    router = router_id_of(kube, a)
    assert router
    proxy.stop()
    assert http_get(client, f"{keep_ip}:80") == "web-1", "rules stay while the proxy is down"
    k8s.CoreV1Api(kube).delete_namespaced_service(drop, a)
    proxy.start()
    wait_for(
        lambda: not names(drop_ip, router_rules(router)) and names(keep_ip, router_rules(router)),
        10,
        "the deleted service's rules to go",
    )
    assert http_get(client, f"{keep_ip}:80") == "web-1"
    assert http_get(client, f"{drop_ip}:80", 2).startswith("ERROR")


def names(address: str, text: str) -> bool:
    """Whether `text` names `address` (not merely a longer address starting like it)."""
    return re.search(rf"(?<![0-9.]){re.escape(address)}(?![0-9])", text) is not None


def router_rules(router: str) -> str:
    """Everything of ours in the router: its nat table as iptables-save shows it and
    the proxy's nftables table."""
    netns = f"qrouter-{router}"
    saved = iptables.run_in(netns, ["iptables-save", "-t", "nat"]).stdout
    table = iptables.run_in(netns, ["nft", "list", "table", "ip", "stackube"], check=False)
    return saved + table.stdout


def nft_table(router: str) -> str:
    netns = f"qrouter-{router}"
    return iptables.run_in(netns, ["nft", "list", "table", "ip", "stackube"], check=False).stdout


WHO_PORTS = [{"name": "who", "port": 80, "targetPort": 8081, "protocol": "TCP"}]
WHO_SLICE_PORTS = [{"name": "who", "port": 8081, "protocol": "TCP"}]


def test_services_in_nftables_beside_neutrons_chains_are_masqueraded_not_snatted(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    """Neutron's L3 agent keeps its iptables-nft chains in the router; ours is a table of
    its own whose hooks run just before Neutron's (dstnat - 1, srcnat - 1): a service
    connection reaches its endpoint from the router's address on the tenant's subnet
    (our masquerade), not from the router's external address (Neutron's SNAT of DNATed
    connections) nor unchanged (no masquerade: the reply would bypass the router)."""
    a, servers, work = str(tenant_pods["a"]), tenant_pods["servers"], tenant_pods["work"]
    assert isinstance(servers, dict) and isinstance(work, Workloads)
    client = str(tenant_pods["client_a"])
    router = router_id_of(kube, a)
    assert router
    name = f"who-{secrets.token_hex(2)}"
    cluster_ip = make_service(kube, a, name, WHO_PORTS)
    set_endpoints(kube, a, name, [servers["web-1"]], WHO_SLICE_PORTS)
    wait_for(lambda: not http_get(client, f"{cluster_ip}:80").startswith("ERROR"), 20, "who")
    seen = http_get(client, f"{cluster_ip}:80")
    result = work.results[client]
    ips = result["ips"]
    assert isinstance(ips, list)
    gateway, own = str(ips[0]["gateway"]), address_of(result)
    # Positive control: straight to the endpoint, it sees the client's own address.
    assert http_get(client, f"{servers['web-1']}:8081") == own
    assert seen == gateway, (seen, gateway, own)
    # Neutron's chains are there, untouched by us; ours are in our own table.
    nat = iptables.run_in(f"qrouter-{router}", ["iptables-save", "-t", "nat"]).stdout
    assert "neutron-l3-agent-snat" in nat and "STKB-" not in nat
    table = nft_table(router)
    assert "priority dstnat - 1" in table and "priority srcnat - 1" in table
    assert f"{cluster_ip} . tcp . 80" in table


def test_switching_backends_leaves_nothing_of_the_other(
    proxy: Proxy, kube: k8s.ApiClient, tenant_pods: dict[str, object]
) -> None:
    a, servers = str(tenant_pods["a"]), tenant_pods["servers"]
    assert isinstance(servers, dict)
    client = str(tenant_pods["client_a"])
    router = router_id_of(kube, a)
    assert router
    name = f"both-{secrets.token_hex(2)}"
    cluster_ip = make_service(kube, a, name, WEB_PORTS)
    set_endpoints(kube, a, name, [servers["web-2"]], WEB_SLICE_PORTS)
    wait_for(lambda: http_get(client, f"{cluster_ip}:80") == "web-2", 20, "web-2 (nftables)")
    proxy.stop()
    try:
        proxy.start("--backend=iptables")
        wait_for(lambda: "STKB-SERVICES" in router_rules(router), 20, "the iptables chains")
        assert nft_table(router) == ""
        assert http_get(client, f"{cluster_ip}:80") == "web-2"
    finally:
        proxy.stop()
        proxy.start()
    wait_for(lambda: nft_table(router) != "", 20, "the nftables table")
    wait_for(lambda: "STKB-SERVICES" not in router_rules(router), 20, "no iptables chains")
    assert http_get(client, f"{cluster_ip}:80") == "web-2"


DNS_ASK = """
import sys, dns.name, dns.resolver
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = [sys.argv[1]]
resolver.search = [dns.name.from_text(d) for d in sys.argv[3].split(",") if d]
resolver.lifetime = 4
try:
    answer = resolver.resolve(sys.argv[2], "A", search=True, tcp=sys.argv[4] == "tcp")
    print(" ".join(sorted(record.address for record in answer)))
except Exception as exc:
    print(f"ERROR {type(exc).__name__}"); sys.exit(1)
"""


def dns_ask(netns: str, server: str, name: str, search: list[str], transport: str = "udp") -> str:
    argv = [sys.executable, "-c", DNS_ASK, server, name, ",".join(search), transport]
    done = subprocess.run(
        ["nsenter", f"--net={netns}", *argv],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip
    return done.stdout.strip() or done.stderr.strip()[-300:]


def start_tenant_dns(
    devbox: Devbox, kube: k8s.ApiClient, work: Workloads, namespace: str, root: Path
) -> None:
    """Run the tenant's DNS server as its Deployment's pod would (this module keeps the
    devbox's node cordoned): CoreDNS from the devbox, the controller's ConfigMap, a
    token of the DNS servers' ServiceAccount, in a pod on the tenant's network; the
    EndpointSlice of its Service (in the DNS namespace) names that pod."""
    core = k8s.CoreV1Api(kube)
    config_map = wait_for(
        lambda: _config_map_data(core, namespace), 60, "the controller's DNS ConfigMap"
    )
    secrets_dir, config_dir = root / "serviceaccount", root / "coredns"
    secrets_dir.mkdir()
    config_dir.mkdir()
    request = k8s.AuthenticationV1TokenRequest(spec=k8s.V1TokenRequestSpec(audiences=[]))
    token = core.create_namespaced_service_account_token(
        DNS_SERVICE_ACCOUNT, DNS_NAMESPACE, request
    )
    (secrets_dir / "token").write_text(str(token.status.token))
    (secrets_dir / "ca.crt").write_bytes((devbox.settings.pki_dir / "ca.crt").read_bytes())
    for key, text in config_map.items():  # the pod's mount paths -> this test's directory
        local = text.replace(tenant_dns.SERVICE_ACCOUNT_DIR, str(secrets_dir))
        (config_dir / key).write_text(local.replace(tenant_dns.CONFIG_DIR, str(config_dir)))
    netns, address = work.pod(namespace)
    coredns = devbox.settings.coredns_bin_dir / "coredns"
    work.run_in(netns, [str(coredns), "-conf", str(config_dir / "Corefile")], root / "coredns.log")
    listen = tenant_dns.DNS_LISTEN_PORT
    set_endpoints(
        kube, DNS_NAMESPACE, namespace, [address],
        [{"name": "dns", "port": listen, "protocol": "UDP"},
         {"name": "dns-tcp", "port": listen, "protocol": "TCP"}],
    )  # fmt: skip


def _config_map_data(core: k8s.CoreV1Api, namespace: str) -> dict[str, str] | None:
    try:
        return dict(core.read_namespaced_config_map(namespace, DNS_NAMESPACE).data or {})
    except k8s.ApiException:
        return None


def test_names_resolve_through_the_cluster_dns_ip_within_the_tenant_only(
    proxy: Proxy,
    devbox: Devbox,
    kube: k8s.ApiClient,
    tenant_pods: dict[str, object],
    tmp_path: Path,
) -> None:
    a, b, servers = str(tenant_pods["a"]), str(tenant_pods["b"]), tenant_pods["servers"]
    work = tenant_pods["work"]
    assert isinstance(servers, dict) and isinstance(work, Workloads)
    client_a, client_b = str(tenant_pods["client_a"]), str(tenant_pods["client_b"])
    nginx_ip = make_service(kube, a, "nginx", WEB_PORTS)
    set_endpoints(kube, a, "nginx", [servers["web-1"]], WEB_SLICE_PORTS)
    hidden_ip = make_service(kube, b, "hidden", WEB_PORTS)
    start_tenant_dns(devbox, kube, work, a, tmp_path)
    cni_dns = work.results[client_a]["dns"]
    assert isinstance(cni_dns, dict)
    server, search = str(cni_dns["nameservers"][0]), list(cni_dns["search"])
    assert server == "10.96.0.10" and search[0] == f"{a}.svc.cluster.local"

    answers: list[str] = []
    try:
        wait_for(
            lambda: answers.append(dns_ask(client_a, server, "nginx", search)) or
            answers[-1] == nginx_ip,
            60, "nginx to resolve through the cluster DNS IP",
        )  # fmt: skip
    except AssertionError as exc:
        log = (tmp_path / "coredns.log").read_text()[-1500:]
        raise AssertionError(f"{exc}: {answers[-3:]}; CoreDNS: {log}") from exc
    fqdn = f"nginx.{a}.svc.cluster.local"
    assert dns_ask(client_a, server, fqdn, []) == nginx_ip
    assert dns_ask(client_a, server, fqdn, [], transport="tcp") == nginx_ip
    # Tenant B's names are not A's to know, and B's pods do not reach A's DNS.
    assert dns_ask(client_a, server, f"hidden.{b}.svc.cluster.local", []) == "ERROR NXDOMAIN"
    assert hidden_ip not in dns_ask(client_a, server, "hidden", search)
    assert dns_ask(client_b, server, fqdn, []).startswith("ERROR")


TCP_MATRIX = """
import json, socket, sys
from concurrent.futures import ThreadPoolExecutor
def probe(target):
    try:
        socket.create_connection((target[0], target[1]), timeout=3).close()
        return "open"
    except OSError as exc:
        return f"closed {exc}"
targets = json.loads(sys.argv[1])
with ThreadPoolExecutor(16) as pool:
    print(json.dumps(list(pool.map(probe, targets))))
"""


def host_addresses() -> list[str]:
    """This machine's own IPv4 addresses (not loopback: from a pod that is the pod's)."""
    shown = subprocess.run(
        ["ip", "-4", "-json", "addr", "show"], capture_output=True, text=True, check=True
    )
    return sorted(
        a["local"]
        for link in json.loads(shown.stdout)
        for a in link.get("addr_info", [])
        if not a["local"].startswith("127.")
    )


def test_a_tenant_pod_reaches_the_api_relay_on_the_host_and_nothing_else(
    devbox: Devbox, tenant_pods: dict[str, object]
) -> None:
    """TCP from a tenant pod to every service port the node runs, on every address of
    the host: only the API relay answers (on the address pods are told to use)."""
    client = str(tenant_pods["client_a"])
    ports = devbox.settings.ports
    services = {
        "MariaDB": ports.mariadb,
        "RabbitMQ": ports.rabbitmq,
        "Keystone": ports.keystone,
        "Neutron": ports.neutron,
        "etcd": ports.etcd_client,
        "kube-apiserver": ports.kube_apiserver,
        "kubelet": ports.kubelet,
        "kubelet healthz": ports.kubelet_healthz,
        "kube-controller-manager": ports.kube_controller_manager,
        "kube-scheduler": ports.kube_scheduler,
        "registry": ports.registry,
        "stackube-auth": 8443,
        "ssh": 22,
    }
    addresses = host_addresses()
    assert devbox.settings.external_host_address in addresses
    targets = [(address, port) for address in addresses for port in services.values()]
    done = subprocess.run(
        ["nsenter", f"--net={client}", sys.executable, "-c", TCP_MATRIX, json.dumps(targets)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    answers = dict(zip(targets, json.loads(done.stdout), strict=True))
    relay = (devbox.settings.external_host_address, ports.kube_apiserver)
    assert answers.pop(relay) == "open"  # the positive control: the designed path
    names = {port: name for name, port in services.items()}
    reached = [
        f"{names[port]} on {address}" for (address, port), a in answers.items() if a == "open"
    ]
    assert not reached, f"a tenant pod reaches {reached}"
