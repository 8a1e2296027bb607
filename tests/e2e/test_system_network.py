"""The system network (docs/decisions/0010): pods of namespaces no Tenant owns run on
`kube-system/system` (user-cidr), ask the cluster DNS, and are reached by the node and
the API server through the node link; a tenant's pods and its Keystone user get nowhere
near them."""

from __future__ import annotations

import ipaddress
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from tests.e2e.kubectl import Kubectl, eventually, idle
from tests.e2e.test_user_guide import TENANT, gone, running_pods, tenant_active
from tests.integration.tenant_users import login_files, tenant_env

pytestmark = pytest.mark.e2e

SYSTEM_CIDR = ipaddress.ip_network("10.244.0.0/16")  # the devbox's user-cidr
KUBERNETES_SERVICE_IP = "10.96.0.1"
NODE_PORT = 18080  # a listener the test starts on the node's system-network address


def pod_ip(kubectl: Kubectl, namespace: str, name: str) -> str | None:
    pods = running_pods(kubectl, namespace, name)
    return str(pods[0]["status"]["podIP"]) if pods else None


def listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def exec_sh(kubectl: Kubectl, namespace: str, pod: str, script: str) -> str:
    done = kubectl.run("-n", namespace, "exec", pod, "--", "sh", "-c", script, check=False)
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def system_pods(kubectl: Kubectl) -> Iterator[dict[str, str]]:
    """A busybox client and a web server ("nginx": busybox httpd) in `default`, and a
    web server in a namespace a cluster admin made: name -> pod address."""
    suffix = secrets.token_hex(3)
    admin_ns = f"admin-made-{suffix}"
    kubectl.run("create", "namespace", admin_ns)
    made = {
        "client": ("default", f"sys-client-{suffix}", ["busybox", *idle(600)]),
        "web": ("default", f"sys-web-{suffix}", ["nginx"]),
        "admin-web": (admin_ns, f"admin-web-{suffix}", ["nginx"]),
    }
    try:
        for namespace, name, (image, *command) in made.values():
            extra = ["--", *command] if command else []
            kubectl.run("-n", namespace, "run", name, f"--image={image}", *extra)
        yield {
            key: eventually(
                lambda n=namespace, p=name: pod_ip(kubectl, n, p), 180, f"{name} Running"
            )
            for key, (namespace, name, _) in made.items()
        } | {"suffix": suffix, "admin_ns": admin_ns}
    finally:
        for namespace, name, _ in made.values():
            kubectl.run("-n", namespace, "delete", "pod", name, "--wait=false", check=False)
        kubectl.run("delete", "namespace", admin_ns, "--timeout=180s", check=False, timeout=200)


def test_a_pod_in_default_runs_on_the_system_network_and_asks_the_cluster_dns(
    kubectl: Kubectl, system_pods: dict[str, str]
) -> None:
    for key in ("client", "web", "admin-web"):
        assert ipaddress.ip_address(system_pods[key]) in SYSTEM_CIDR, system_pods
    client = f"sys-client-{system_pods['suffix']}"
    out = exec_sh(kubectl, "default", client, "nslookup kubernetes.default.svc.cluster.local")
    assert "10.96.0.10" in out and KUBERNETES_SERVICE_IP in out, out
    # A Service of a namespace a cluster admin made, by name, through the system router.
    admin_ns = system_pods["admin_ns"]
    web = f"admin-web-{system_pods['suffix']}"
    kubectl.run("-n", admin_ns, "expose", "pod", web, "--port=80", "--name=web")
    out = exec_sh(
        kubectl,
        "default",
        client,
        f"nslookup web.{admin_ns}.svc.cluster.local; "
        f"timeout 10 wget -q -O- http://web.{admin_ns}.svc.cluster.local/ && echo FETCHED",
    )
    assert "FETCHED" in out, out
    # The `kubernetes` Service leads to the API server.
    out = exec_sh(
        kubectl, "default", client, f"nc -w 5 {KUBERNETES_SERVICE_IP} 443 </dev/null && echo OPEN"
    )
    assert "OPEN" in out, out


def test_the_host_and_the_api_server_reach_system_pods(
    devbox: Devbox, kubectl: Kubectl, system_pods: dict[str, str]
) -> None:
    web = f"sys-web-{system_pods['suffix']}"
    # The API server's pod proxy (webhooks, aggregated APIs and metrics go the same way).
    raw = kubectl.run("get", "--raw", f"/api/v1/namespaces/default/pods/{web}:80/proxy/")
    assert raw.stdout, raw
    # The node itself, through its link on the system network.
    fetched = subprocess.run(
        ["curl", "-sS", "-m", "10", "-o", "/dev/null", "-w", "%{http_code}",
         f"http://{system_pods['web']}/"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert fetched.stdout == "200", fetched


def test_a_tenant_gets_nowhere_near_the_system_network(
    devbox: Devbox,
    kubectl: Kubectl,
    os_admin: Connection,
    system_pods: dict[str, str],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A tenant's pod cannot reach a system pod or the node's address there, while a
    system pod can (the positive control); the tenant's Keystone user may run pods in
    its namespace but not in `default`."""
    name = f"sysatk-{system_pods['suffix']}"
    link = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", "stackube0"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    node_address = link[link.index("inet") + 1].split("/")[0]
    assert ipaddress.ip_address(node_address) in SYSTEM_CIDR
    # Something listening on the node's address on the system network (nothing of the
    # devbox's does: the kubelet listens on the external segment only).
    listener = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", node_address, str(NODE_PORT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    request.addfinalizer(lambda: (listener.terminate(), listener.wait(10)))
    eventually(lambda: listening(node_address, NODE_PORT), 10, "the test's listener")
    targets = {"web": f"{system_pods['web']}:80", "node": f"{node_address}:{NODE_PORT}"}
    script = "; ".join(
        f"timeout 8 wget -q -O- http://{target}/ >/dev/null 2>&1 && echo REACHED-{key}"
        for key, target in targets.items()
    )
    control = exec_sh(kubectl, "default", f"sys-client-{system_pods['suffix']}", script)
    # The same probes from the system network reach both: the test can fail.
    assert "REACHED-web" in control and "REACHED-node" in control, control
    kubectl.run("create", "-f", "-", stdin=TENANT.format(name=name))
    try:
        eventually(lambda: tenant_active(kubectl, name), 240, f"Tenant {name} Active")
        kubeconfig, home = login_files(devbox, name, name, tmp_path)
        as_tenant = tenant_env(kubeconfig, home, "password")

        def tenant_kubectl(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["kubectl", *args], capture_output=True, text=True, env=as_tenant, timeout=120,
                check=False,
            )  # fmt: skip

        refused = tenant_kubectl("-n", "default", "run", "intruder", "--image=busybox")
        assert refused.returncode != 0 and "forbidden" in refused.stderr.lower(), refused
        allowed = tenant_kubectl(
            "-n", name, "run", "probe", "--image=busybox", "--restart=Never", "--command",
            "--", "sh", "-c", f"{script}; echo DONE",
        )  # fmt: skip
        assert allowed.returncode == 0, allowed
        eventually(
            lambda: (
                kubectl.json("-n", name, "get", "pod", "probe")["status"].get("phase")
                in ("Succeeded", "Failed")
            ),
            240,
            "the tenant's probe pod done",
        )
        out = kubectl.run("-n", name, "logs", "probe").stdout
        pod: dict[str, Any] = kubectl.json("-n", name, "get", "pod", "probe")
        assert ipaddress.ip_address(pod["status"]["podIP"]) not in SYSTEM_CIDR, pod["status"]
        assert "DONE" in out and "REACHED" not in out, out
    finally:
        kubectl.run("delete", "tenant", name, "--ignore-not-found", "--wait=false", check=False)
        # Gone before the next tier starts: its Neutron cleanup would load the next tests.
        eventually(lambda: not gone(kubectl, os_admin, name), 240, f"tenant {name} gone")
