"""The seed's user guide, replayed with kubectl against the devbox's real node.

Where today's kubectl differs from 2017's (docs/user-guide.md says so): `kubectl run`
makes a bare Pod now, so `kubectl create deployment` stands in for `kubectl run nginx`;
`kubectl run -i -t busybox ... sh` followed by typed commands becomes a non-interactive
`kubectl run busybox -- sh -c '...'` with the same commands, then `kubectl logs`.
"""

from __future__ import annotations

import ipaddress
import json
import platform
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from tests.e2e.kubectl import Kubectl, eventually

pytestmark = pytest.mark.e2e

TENANT = """
apiVersion: stackube.kubernetes.io/v1
kind: Tenant
metadata:
  name: {name}
spec:
  username: "{name}"
  password: "password"
"""
# A "hard" tenant (docs/runtimes.md): every pod in its own gVisor sandbox.
HARD = '  runtimeClassName: "gvisor"\n'

# Tenants' default Networks (tenant-cidr; the seed's user-cidr is the system network's).
POD_CIDR = ipaddress.ip_network("10.245.0.0/16")
# (busybox's nslookup exits 1 when any search-list name is NXDOMAIN, even with an answer:
# scripts read its output instead.)


def network_state(kubectl: Kubectl, namespace: str) -> dict[str, Any] | None:
    done = kubectl.run("-n", namespace, "get", "network", namespace, "-o", "json", check=False)
    if done.returncode != 0:
        return None
    network: dict[str, Any] = json.loads(done.stdout)
    return network if (network.get("status") or {}).get("state") == "Active" else None


def running_pods(kubectl: Kubectl, namespace: str, prefix: str) -> list[dict[str, Any]] | None:
    pods = kubectl.json("-n", namespace, "get", "pods")["items"]
    mine = [p for p in pods if p["metadata"]["name"].startswith(prefix)]
    ready = [
        p
        for p in mine
        if p["status"].get("phase") == "Running"
        and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
    ]
    return ready if mine and len(ready) == len(mine) else None


def tenant_active(kubectl: Kubectl, name: str) -> bool:
    found = kubectl.json("get", "tenant", name)
    return bool((found.get("status") or {}).get("state") == "Active")


def make_tenant(kubectl: Kubectl, name: str, spec: str = "") -> dict[str, Any]:
    """Create a Tenant (`spec`: more lines of its spec) and wait for Active, which
    includes its DNS server answering: the guide's `nslookup` right after needs no retry."""
    kubectl.run("create", "-f", "-", stdin=TENANT.format(name=name) + spec)
    eventually(lambda: tenant_active(kubectl, name), 240, f"Tenant {name} Active")
    dns = [
        c
        for c in kubectl.json("get", "tenant", name)["status"]["conditions"]
        if c["type"] == "DNSReady"
    ]
    assert [c["status"] for c in dns] == ["True"], dns
    network = network_state(kubectl, name)
    assert network is not None, f"Tenant {name} is Active but its Network is not"
    return network


def busybox(kubectl: Kubectl, namespace: str, name: str, script: str) -> str:
    """Run `script` in a busybox pod to completion and return its output. (`kubectl run
    -i --rm` races with a pod that finishes before kubectl attaches: it can print
    nothing; a run, a wait and the logs cannot.)"""
    kubectl.run(
        "-n", namespace, "run", name, "--image=busybox", "--restart=Never",
        "--command", "--", "sh", "-c", script,
    )  # fmt: skip
    try:
        kubectl.run(
            "-n", namespace, "wait", f"pod/{name}", "--timeout=240s",
            "--for=jsonpath={.status.phase}=Succeeded", timeout=300, check=False,
        )  # fmt: skip
        return kubectl.run("-n", namespace, "logs", name).stdout
    finally:
        kubectl.run("-n", namespace, "delete", "pod", name, "--wait=false", check=False)


def gone(kubectl: Kubectl, os_admin: Connection, name: str) -> list[str]:
    left = []
    if kubectl.run("get", "namespace", name, check=False).returncode == 0:
        left.append(f"namespace {name}")
    if list(os_admin.network.networks(name=f"kube-{name}-{name}")):
        left.append(f"network kube-{name}-{name}")
    domain = os_admin.identity.find_domain("stackube")
    if os_admin.identity.find_project(name, domain_id=domain.id, ignore_missing=True):
        left.append(f"project {name}")
    return left


def delete_tenants(kubectl: Kubectl, os_admin: Connection, names: list[str]) -> None:
    """Delete the Tenants (all at once) and wait until each is gone everywhere."""
    for name in names:
        kubectl.run("delete", "tenant", name, "--ignore-not-found", "--wait=false", check=False)
    for name in names:
        eventually(lambda n=name: not gone(kubectl, os_admin, n), 300, f"tenant {name} gone")


@pytest.mark.parametrize("runtime", ["runc", "gvisor"])
def test_the_user_guide(
    devbox: Devbox, kubectl: Kubectl, os_admin: Connection, runtime: str
) -> None:
    """The guide in a soft tenant (runc), then once more in a hard one (gVisor)."""
    try:
        network = make_tenant(kubectl, "test", HARD if runtime == "gvisor" else "")
        # $ kubectl get namespace test / kubectl -n test get network test -o yaml
        phase = kubectl.run("get", "namespace", "test", "-o", "jsonpath={.status.phase}")
        assert phase.stdout == "Active"
        assert network["spec"] == {"cidr": "10.245.0.0/16", "gateway": "10.245.0.1"}
        # $ neutron net-list: kube-test-test in the tenant's project
        project = kubectl.json("get", "tenant", "test")["status"]["projectID"]
        nets = list(os_admin.network.networks(name="kube-test-test"))
        assert [n.project_id for n in nets] == [project]
        # $ kubectl -n test get pods showed the tenant's DNS server in 2017; it now runs in
        # stackube-dns (named after the tenant), out of the tenant's reach.
        eventually(lambda: running_pods(kubectl, "stackube-dns", "test-"), 240, "DNS Running")

        # $ kubectl -n test run nginx --image=nginx (today: create deployment)
        kubectl.run("-n", "test", "create", "deployment", "nginx", "--image=nginx")
        # $ kubectl -n test expose deployment nginx --port=80
        kubectl.run("-n", "test", "expose", "deployment", "nginx", "--port=80")
        pods = eventually(lambda: running_pods(kubectl, "test", "nginx"), 240, "nginx Running")
        # $ kubectl -n test get pods -o wide: addresses from the tenant network
        every = kubectl.json("-n", "test", "get", "pods")["items"]
        assert all(ipaddress.ip_address(p["status"]["podIP"]) in POD_CIDR for p in every)
        assert pods[0]["spec"]["nodeName"] == devbox.settings.node_name
        cluster_ip = kubectl.json("-n", "test", "get", "service", "nginx")["spec"]["clusterIP"]
        # The runtime the pods got: the tenant's, unasked (docs/runtimes.md).
        nginx = pods[0]["metadata"]["name"]
        kernel = kubectl.run("-n", "test", "exec", nginx, "--", "uname", "-r").stdout
        if runtime == "gvisor":
            assert all(p["spec"].get("runtimeClassName") == "gvisor" for p in every), every
            assert "gvisor" in kernel, kernel
        else:
            assert all("runtimeClassName" not in p["spec"] for p in every), every
            assert kernel.strip() == platform.release(), kernel

        # $ kubectl -n test run -i -t busybox --image=busybox sh; nslookup nginx; wget -O- nginx
        out = busybox(kubectl, "test", "busybox", "nslookup nginx; wget -O- nginx")
        assert "10.96.0.10" in out, out  # Server: the cluster DNS IP
        assert "nginx.test.svc.cluster.local" in out and cluster_ip in out, out
        assert "Welcome to nginx!" in out, out

        # Another tenant's pod gets nothing from test's Service, by name or by address,
        # while its own DNS answers it (so the misses are isolation, not a broken pod).
        make_tenant(kubectl, "other")
        kubectl.run("-n", "other", "create", "service", "clusterip", "own", "--tcp=80:80")
        script = (
            "nslookup own | grep -q '^Name:' && echo OWN-DNS; "
            f"wget -T 5 -O- http://{cluster_ip}/ && echo FETCHED; "
            "nslookup nginx.test.svc.cluster.local. | grep -q '^Name:' && echo RESOLVED; "
            "echo DONE"
        )
        out = busybox(kubectl, "other", "probe", script)
        assert "DONE" in out and "OWN-DNS" in out, out
        assert "FETCHED" not in out and "Welcome to nginx!" not in out, out
        assert "RESOLVED" not in out, out
    finally:
        # $ kubectl delete tenant test
        for name in ("test", "other"):
            kubectl.run("delete", "tenant", name, "--ignore-not-found", "--wait=false")
    for name in ("test", "other"):
        eventually(lambda n=name: not gone(kubectl, os_admin, n), 240, f"tenant {name} gone")
