"""A tenant that lives through a whole test or benchmark run: its DNS server, an nginx
behind a Service and a client pod, on the devbox's node with the devbox's own CNI
daemon. At the end it must still answer (`nslookup nginx`, `wget nginx` from the client)
and its pods must hold the very Neutron ports they had at the start: a port deleted
(and even one repaired) by anything the run did is a failure.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from openstack.connection import Connection

from stackube.api.naming import POD_PORT_DEVICE_OWNER
from stackube.api.types import DNS_NAMESPACE
from tests.e2e.kubectl import Kubectl, eventually

TENANT_LABEL = "stackube.kubernetes.io/tenant"


def _manifest(name: str) -> str:
    return f"""
apiVersion: stackube.kubernetes.io/v1
kind: Tenant
metadata: {{name: {name}}}
spec: {{username: {name}, password: {secrets.token_urlsafe(12)}}}
"""


def _workloads(name: str) -> str:
    return f"""
apiVersion: apps/v1
kind: Deployment
metadata: {{name: nginx, namespace: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec:
      containers: [{{name: nginx, image: nginx}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nginx, namespace: {name}}}
spec:
  selector: {{app: nginx}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: client, image: busybox, command: [sleep, "86400"]}}]
"""


@dataclass
class LiveTenant:
    kubectl: Kubectl
    admin: Connection
    name: str = field(default_factory=lambda: f"live-{secrets.token_hex(3)}")
    ports: dict[str, str] = field(default_factory=dict)  # pod uid -> Neutron port id

    def start(self, timeout: float = 300) -> LiveTenant:
        """Tenant, DNS, nginx, Service and client all running and answering; their
        ports recorded."""
        # A run that stopped half-way may have left the node cordoned.
        self.kubectl.run("uncordon", self._node(), check=False)
        self.kubectl.run("apply", "-f", "-", stdin=_manifest(self.name))
        self.kubectl.run(
            "wait", "--for=jsonpath={.status.state}=Active", f"tenant/{self.name}",
            f"--timeout={timeout:.0f}s",
        )  # fmt: skip
        self.kubectl.run("apply", "-f", "-", stdin=_workloads(self.name))
        for namespace, what in (
            (DNS_NAMESPACE, f"deployment/{self.name}"),
            (self.name, "deployment/nginx"),
        ):
            self.kubectl.run(
                "-n", namespace, "rollout", "status", what, f"--timeout={timeout:.0f}s",
                timeout=timeout + 10,
            )  # fmt: skip
        self.kubectl.run(
            "-n", self.name, "wait", "--for=condition=Ready", "pod/client",
            f"--timeout={timeout:.0f}s", timeout=timeout + 10,
        )  # fmt: skip
        eventually(lambda: not self.answers(), 60, f"tenant {self.name} answering")
        self.ports = eventually(self._named_ports, 60, "every pod's port named after it")
        return self

    def _node(self) -> str:
        nodes = self.kubectl.json("get", "nodes")["items"]
        return str(nodes[0]["metadata"]["name"])

    def _pod_uids(self) -> list[str]:
        pods = self.kubectl.json("-n", self.name, "get", "pods")["items"]
        dns = self.kubectl.json(
            "-n", DNS_NAMESPACE, "get", "pods", "-l", f"{TENANT_LABEL}={self.name}"
        )
        return [str(p["metadata"]["uid"]) for p in [*pods, *dns["items"]]]

    def _named_ports(self) -> dict[str, str] | None:
        found = {}
        for uid in self._pod_uids():
            ports = list(
                self.admin.network.ports(device_owner=POD_PORT_DEVICE_OWNER, device_id=uid)
            )
            if len(ports) != 1:
                return None
            found[uid] = str(ports[0].id)
        return found if len(found) == 3 else None

    def answers(self) -> list[str]:
        """What the client cannot do: [] when the DNS name resolves and nginx serves."""
        failed = []
        lookup = self.kubectl.run(
            "-n", self.name, "exec", "client", "--", "nslookup", "nginx", check=False, timeout=30
        )
        # busybox's nslookup exits 1 when any search domain says NXDOMAIN: read its answer
        if "Name:" not in lookup.stdout:
            failed.append(f"nslookup nginx: {lookup.stdout.strip()} {lookup.stderr.strip()}")
        fetch = self.kubectl.run(
            # (Debian's busybox wget crashes with -T: `timeout` bounds it instead)
            "-n", self.name, "exec", "client", "--", "timeout", "10", "wget", "-q", "-O-", "nginx",
            check=False, timeout=30,
        )  # fmt: skip
        if "Welcome to nginx" not in fetch.stdout:
            failed.append(f"wget nginx: {fetch.stderr.strip() or fetch.stdout[:200]}")
        return failed

    def problems(self) -> list[str]:
        """Everything wrong with the tenant now ([] when it is as it was)."""
        found = self.answers()
        now = self._named_ports() or {}
        for uid, port in self.ports.items():
            if now.get(uid) != port:
                found.append(
                    f"pod {uid}: its port {port} was replaced by {now.get(uid) or 'nothing'}"
                )
        if set(now) != set(self.ports):
            found.append(f"pods changed: {sorted(self.ports)} -> {sorted(now)}")
        return found

    def delete(self) -> None:
        self.kubectl.run(
            "delete", "tenant", self.name, "--ignore-not-found", "--timeout=300s",
            check=False, timeout=320,
        )  # fmt: skip


def wait_briefly_for_answers(tenant: LiveTenant, seconds: float = 20) -> list[str]:
    """The tenant's problems, allowing a moment for a restarted service to catch up."""
    deadline = time.monotonic() + seconds
    while True:
        found = tenant.problems()
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(2)


@contextmanager
def live_tenant_kept(kubeconfig: Path, admin: Connection) -> Iterator[LiveTenant]:
    """For a benchmark: a live tenant made before it, checked after it (raises
    AssertionError naming what broke), deleted in any case."""
    tenant = LiveTenant(Kubectl(kubeconfig), admin)
    try:
        tenant.start()
        yield tenant
        found = wait_briefly_for_answers(tenant)
        if found:
            raise AssertionError(f"the live tenant {tenant.name} did not come through: {found}")
        print(f"live tenant {tenant.name}: still answering, its ports unchanged")
    finally:
        tenant.delete()


def probed_web(namespace: str) -> str:
    """Two nginx replicas: httpGet readiness on a named port, tcpSocket liveness; a
    Service whose targetPort is the port's name."""
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "web", "namespace": namespace},
                    "spec": {
                        "replicas": 2,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {
                            "metadata": {"labels": {"app": "web"}},
                            "spec": {
                                "containers": [
                                    {
                                        "name": "nginx",
                                        "image": "nginx",
                                        "ports": [{"name": "http", "containerPort": 80}],
                                        "readinessProbe": {
                                            "httpGet": {"path": "/", "port": "http"},
                                            "periodSeconds": 2,
                                        },
                                        # The kubelet's defaults (3 x 10 s): they
                                        # outlast the CNI daemon's restarts that other
                                        # tests make (~10-15 s with a wiped journal;
                                        # decision 0018), 3 x 5 s did not always.
                                        "livenessProbe": {
                                            "tcpSocket": {"port": 80},
                                            "periodSeconds": 10,
                                            "failureThreshold": 3,
                                        },
                                    }
                                ]
                            },
                        },
                    },
                },
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "web", "namespace": namespace},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": "http"}],
                    },
                },
            ],
        }
    )
