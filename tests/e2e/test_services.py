"""Traffic into tenants (docs/services.md): NodePort and LoadBalancer Services reached
from a client outside the cluster, each tenant's through its own router; floating IPs
in the tenant's project, released with the Service; loadBalancerSourceRanges; and
externalIPs refused to a tenant's own Keystone user."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
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
