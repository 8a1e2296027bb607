"""Traffic into tenants (docs/services.md): NodePort and LoadBalancer Services reached
from a client outside the cluster, each tenant's through its own router; floating IPs
in the tenant's project, released with the Service; loadBalancerSourceRanges;
externalIPs refused to a tenant's own Keystone user; and a ClusterIP that keeps
answering while Stackube's components roll to a new image."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox import images
from stackube.devbox.box import Devbox
from stackube.devbox.components import COMPONENTS, NAMESPACE, PodComponents
from tests.e2e.external_client import ExternalClient, external_client
from tests.e2e.kubectl import Kubectl, eventually, side_by_side
from tests.e2e.test_user_guide import delete_tenants, make_tenant, running_pods
from tests.integration.tenant_users import login_files, tenant_env

pytestmark = pytest.mark.e2e

# A web server that says whose it is (busybox httpd, on 8080: no root port needed),
# under a shell that stops at SIGTERM (PID 1 without a handler ignores it, and every
# delete would wait out the 30 s grace period).
WEB = (
    "mkdir -p /www && echo {name} > /www/index.html && "
    "trap 'exit 0' TERM; httpd -f -p 8080 -h /www & wait"
)


def web_deployment(kubectl: Kubectl, namespace: str) -> None:
    kubectl.run(
        "-n", namespace, "create", "deployment", "web", "--image=busybox",
        "--", "sh", "-c", WEB.format(name=namespace),
    )  # fmt: skip
    eventually(lambda: running_pods(kubectl, namespace, "web"), 180, f"{namespace}/web Running")


def expose(kubectl: Kubectl, namespace: str, name: str, kind: str, *extra: str) -> dict[str, Any]:
    kubectl.run(
        "-n", namespace, "expose", "deployment", "web", f"--name={name}", "--port=80",
        "--target-port=8080", f"--type={kind}", *extra,
    )  # fmt: skip
    return kubectl.json("-n", namespace, "get", "service", name)


def ingress_ip(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    service = kubectl.json("-n", namespace, "get", "service", name)
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress else None


def floating_ips(os_admin: Connection, address: str) -> list[Any]:
    return list(os_admin.network.ips(floating_ip_address=address))


@pytest.fixture(scope="module")
def tenants(kubectl: Kubectl, os_admin: Connection) -> Iterator[dict[str, str]]:
    """Two tenants, each with a `web` Deployment answering its own name: name -> the
    Keystone project id."""
    suffix = secrets.token_hex(3)
    names = [f"svc-a-{suffix}", f"svc-b-{suffix}"]

    def prepare(name: str) -> None:
        make_tenant(kubectl, name)
        web_deployment(kubectl, name)

    try:
        side_by_side(prepare, names)
        yield {
            name: str(kubectl.json("get", "tenant", name)["status"]["projectID"]) for name in names
        }
    finally:
        delete_tenants(kubectl, os_admin, names)


@pytest.fixture(scope="module")
def client(devbox: Devbox, os_admin: Connection) -> Iterator[ExternalClient]:
    with external_client(devbox, os_admin) as made:
        yield made


def test_a_node_port_reaches_each_tenants_own_pods_from_outside(
    devbox: Devbox, kubectl: Kubectl, tenants: dict[str, str], client: ExternalClient
) -> None:
    node = devbox.settings.external_host_address
    for name in tenants:
        node_port = expose(kubectl, name, "np", "NodePort")["spec"]["ports"][0]["nodePort"]
        # The router of a tenant made a moment ago may still be being plumbed by
        # Neutron's L3 agent: stackube-proxy picks it up at its next housekeeping (10 s).
        body = eventually(
            lambda p=node_port: client.fetch(f"http://{node}:{p}/"), 60, f"{name}'s NodePort"
        )
        assert body.strip() == name
    # Positive control for the check above: a port nobody serves does not answer.
    assert client.fetch(f"http://{node}:30999/", timeout=3) is None


def test_load_balancers_on_floating_ips_of_each_tenant(
    kubectl: Kubectl, os_admin: Connection, tenants: dict[str, str], client: ExternalClient
) -> None:
    addresses = {}
    for name in tenants:
        expose(kubectl, name, "lb", "LoadBalancer")
        addresses[name] = eventually(
            lambda n=name: ingress_ip(kubectl, n, "lb"), 60, f"{name}'s load balancer address"
        )
    # Two tenants, the same port, each its own address, in its own project's quota.
    assert len(set(addresses.values())) == 2, addresses
    for name, address in addresses.items():
        (fip,) = floating_ips(os_admin, address)
        assert fip.project_id == tenants[name], fip
        body = eventually(lambda a=address: client.fetch(f"http://{a}/"), 30, f"{name}'s LB")
        assert body.strip() == name
    # Deleting the Service releases its floating IP; the other tenant's stays served.
    first, second = list(tenants)
    kubectl.run("-n", first, "delete", "service", "lb", "--timeout=60s")
    eventually(lambda: not floating_ips(os_admin, addresses[first]), 60, "the floating IP released")
    # stackube-proxy drops the address once it sees the Service gone (within seconds).
    eventually(
        lambda: client.fetch(f"http://{addresses[first]}/", timeout=2) is None,
        20,
        "the released address no longer served",
    )
    assert (client.fetch(f"http://{addresses[second]}/") or "").strip() == second


def test_load_balancer_source_ranges_are_enforced(
    kubectl: Kubectl, tenants: dict[str, str], client: ExternalClient
) -> None:
    name = list(tenants)[1]
    expose(kubectl, name, "ranged", "LoadBalancer")
    address = eventually(lambda: ingress_ip(kubectl, name, "ranged"), 60, "the address")
    # Positive control: from anywhere, the client gets in.
    assert eventually(lambda: client.fetch(f"http://{address}/"), 30, "served").strip() == name

    def ranges(*cidrs: str) -> None:
        patch = json.dumps({"spec": {"loadBalancerSourceRanges": list(cidrs)}})
        kubectl.run("-n", name, "patch", "service", "ranged", "-p", patch)

    ranges("192.0.2.0/24")
    eventually(
        lambda: client.fetch(f"http://{address}/", timeout=2) is None, 20, "the client kept out"
    )
    ranges("192.0.2.0/24", f"{client.address}/32")
    assert eventually(lambda: client.fetch(f"http://{address}/"), 20, "let in").strip() == name


def test_a_tenant_cannot_claim_external_ips(
    devbox: Devbox, kubectl: Kubectl, tenants: dict[str, str], tmp_path: Path
) -> None:
    name = next(iter(tenants))
    kubeconfig, home = login_files(devbox, name, name, tmp_path)
    as_tenant = tenant_env(kubeconfig, home, "password")

    def create(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "-n", name, "create", "service", "clusterip", f"grab{len(extra)}",
             "--tcp=80:8080", "--dry-run=server", "-o", "yaml", *extra],
            capture_output=True, text=True, env=as_tenant, timeout=120, check=False,
        )  # fmt: skip

    # Positive control: the tenant's user may create Services in its namespace.
    allowed = create()
    assert allowed.returncode == 0, allowed
    hijack = subprocess.run(
        ["kubectl", "-n", name, "apply", "--dry-run=server", "-f", "-"],
        input=(
            "apiVersion: v1\nkind: Service\nmetadata: {name: grab}\n"
            "spec: {ports: [{port: 80}], externalIPs: [198.51.100.254]}\n"
        ),
        capture_output=True, text=True, env=as_tenant, timeout=120, check=False,
    )  # fmt: skip
    assert hijack.returncode != 0, hijack
    assert "externalIPs is not allowed in tenant namespaces" in hijack.stderr, hijack.stderr


# ---- Stackube's own rollout, with a tenant's Service in use ------------------------------
INTERVAL = 0.1  # seconds between the client's requests
# One request per line: "ok" or "fail", each given at most a second (`timeout`: the
# devbox busybox's `wget -T` crashes).
CLIENT = (
    "trap 'exit 0' TERM; while true; do "
    "if timeout 1 wget -q -O /dev/null http://{ip}/; then echo ok; else echo fail; fi; "
    "sleep {interval}; done"
)


class LeaseWatch:
    """Every holder the controller's Lease names, polled every 100 ms in a thread."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.holders: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            lease = self.kubectl.run(
                "-n", NAMESPACE, "get", "lease", "stackube-controller",
                "-o", "jsonpath={.spec.holderIdentity}", check=False,
            ).stdout.strip()  # fmt: skip
            if not self.holders or self.holders[-1] != lease:
                self.holders.append(lease)
            time.sleep(0.1)

    def finish(self) -> list[str]:
        self.stop.set()
        self.thread.join(timeout=30)
        return self.holders


def images_of(kubectl: Kubectl, selector: str) -> set[str]:
    pods = kubectl.json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"]
    return {c["image"] for p in pods for c in p["spec"]["containers"]}


def test_a_new_image_rolls_to_every_component_and_a_service_keeps_answering(
    devbox: Devbox, kubectl: Kubectl, tenants: dict[str, str]
) -> None:
    """Upgrading Stackube as an operator does (issue 15): a new image in the overlay,
    `kubectl apply -k`, every component rolls to it, while a tenant's client asks a
    ClusterIP every 100 ms, and the controller's Lease passes from the old pod to the new."""
    if not devbox.pods_mode:
        pytest.skip("Stackube runs as host processes here (STACKUBE_DEVBOX_COMPONENTS=host)")
    tenant = next(iter(tenants))
    components = PodComponents(devbox.settings)
    original = components.image()
    name, _, digest = original.partition("@")
    repository = name.split("/", 1)[1]
    variant = f"{name}@" + images.relabel(
        devbox.settings.registry_url, repository, digest, {"stackube.test/rollout": tenant}
    )
    assert variant != original
    service = expose(kubectl, tenant, "roll", "ClusterIP")
    ip = service["spec"]["clusterIP"]
    kubectl.run(
        "-n", tenant, "run", "client", "--image=busybox", "--restart=Never",
        "--", "sh", "-c", CLIENT.format(ip=ip, interval=INTERVAL),
    )  # fmt: skip
    eventually(lambda: running_pods(kubectl, tenant, "client"), 120, "client Running")

    def answers() -> list[str]:
        return kubectl.run("-n", tenant, "logs", "client").stdout.split()

    eventually(lambda: "ok" in answers(), 60, "the Service answering the client")
    before = len(answers())
    watch = LeaseWatch(kubectl)
    started = time.monotonic()
    try:
        components.apply(variant)
        rolled = time.monotonic() - started
        time.sleep(5)  # the last pods settle with the client still asking
    finally:
        holders = watch.finish()
    during = answers()[before:]
    try:
        for item in COMPONENTS:
            assert images_of(kubectl, item.selector) == {variant}, item.ref
        failed = during.count("fail")
        worst, run = 0, 0
        for answer in during:
            run = run + 1 if answer == "fail" else 0
            worst = max(worst, run)
        print(
            f"rollout of {len(COMPONENTS)} components in {rolled:.1f} s: {failed} of "
            f"{len(during)} requests failed (longest run {worst}); lease holders {holders}"
        )
        assert len(during) >= rolled / 2, "the client was not asking throughout"
        # A failed request costs at most its 1 s timeout + 0.1 s: at most ~2 s of loss.
        assert failed <= 2, during
        # The old leader, then the new one, each once (with one replica and maxSurge 0
        # a second pod cannot even start before the first is gone: this shows the
        # handover, which the Lease alone could not show doubled).
        named = [h for h in holders if h]
        assert len(named) <= 2 and len(set(named)) == len(named), holders
    finally:
        components.apply(original)
    assert images_of(kubectl, COMPONENTS[0].selector) == {original}
