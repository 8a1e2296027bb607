"""Sandboxed pods (docs/runtimes.md): gVisor beside runc on the devbox's node, and a
Tenant's runtime policy, exercised by the tenants' own Keystone users.

Two Tenants for the module: `rt-hard` (spec.runtimeClassName gvisor, Enforce) and
`rt-soft` (nothing: runc), made at once.
"""

from __future__ import annotations

import contextlib
import functools
import json
import platform
import re
import select
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from stackube.devbox.node import NodePaths
from tests.e2e.kubectl import Kubectl, eventually, idle, side_by_side
from tests.e2e.test_network_policy import TenantUser
from tests.e2e.test_user_guide import HARD, delete_tenants, make_tenant

pytestmark = pytest.mark.e2e

HARD_TENANT, SOFT_TENANT = "rt-hard", "rt-soft"
GVISOR_OVERHEAD_MEMORY = 64 * 1024 * 1024  # api/manifests/runtime-classes.yaml


@pytest.fixture(scope="module")
def tenants(kubectl: Kubectl, os_admin: Connection) -> Iterator[None]:
    try:
        side_by_side(
            lambda args: make_tenant(kubectl, *args), [(HARD_TENANT, HARD), (SOFT_TENANT, "")]
        )
        yield
    finally:
        delete_tenants(kubectl, os_admin, [HARD_TENANT, SOFT_TENANT])


def pod(name: str, runtime: str | None = None, **container: Any) -> str:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "busybox", "command": idle(600), **container}],
    }
    if runtime is not None:
        spec["runtimeClassName"] = runtime
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def running(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any] | None:
    found = kubectl.json("-n", namespace, "get", "pod", name)
    return found if found["status"].get("phase") == "Running" else None


def sh(kubectl: Kubectl, namespace: str, name: str, script: str, container: str = "") -> str:
    where = ["-c", container] if container else []
    done = kubectl.run(
        "-n", namespace, "exec", name, *where, "--", "sh", "-c", script, check=False
    )  # fmt: skip
    return done.stdout + done.stderr


def test_a_gvisor_pod_runs_on_gvisors_kernel_and_a_runc_pod_on_the_hosts(
    kubectl: Kubectl, tenants: None
) -> None:
    """The sandbox, shown from inside: kernel, kernel log, and a system call the host
    allows but gVisor does not implement (adjtimex: reading the clock's tuning needs no
    privilege on Linux; gVisor has no adjtimex)."""
    ns = SOFT_TENANT
    for name, runtime in (("sandboxed", "gvisor"), ("plain", None)):
        kubectl.run("-n", ns, "create", "-f", "-", stdin=pod(name, runtime))
    for name in ("sandboxed", "plain"):
        eventually(functools.partial(running, kubectl, ns, name), 120, f"{name} Running")
    probe = "uname -r; dmesg 2>&1 | head -1; busybox adjtimex >/dev/null 2>&1 && echo ADJTIMEX-OK"
    sandboxed, plain = sh(kubectl, ns, "sandboxed", probe), sh(kubectl, ns, "plain", probe)
    host = platform.release()
    # Positive control: runc shows the host's kernel, refuses its log, allows adjtimex.
    assert plain.splitlines()[0] == host, plain
    assert "Starting gVisor" not in plain and "ADJTIMEX-OK" in plain, plain
    assert "gvisor" in sandboxed.splitlines()[0] and host not in sandboxed, sandboxed
    assert "Starting gVisor" in sandboxed, sandboxed
    assert "ADJTIMEX-OK" not in sandboxed, sandboxed


def test_a_hard_tenants_pods_run_sandboxed_and_nothing_else(
    devbox: Devbox, kubectl: Kubectl, tenants: None, tmp_path: Path
) -> None:
    hard, soft = (
        TenantUser(devbox, HARD_TENANT, tmp_path),
        TenantUser(devbox, SOFT_TENANT, tmp_path),
    )
    # A pod naming no RuntimeClass gets the tenant's, with that class's overhead.
    made = hard.kubectl("-n", HARD_TENANT, "create", "-f", "-", stdin=pod("defaulted"))
    assert made.returncode == 0, made.stderr
    got = kubectl.json("-n", HARD_TENANT, "get", "pod", "defaulted")["spec"]
    assert got["runtimeClassName"] == "gvisor", got
    assert got["overhead"] == {"cpu": "50m", "memory": "64Mi"}, got
    eventually(lambda: running(kubectl, HARD_TENANT, "defaulted"), 120, "defaulted Running")
    assert "gvisor" in sh(kubectl, HARD_TENANT, "defaulted", "uname -r")

    # Asking for runc, as a Pod or in a workload template, is refused with the reason.
    refused = hard.kubectl("-n", HARD_TENANT, "create", "-f", "-", stdin=pod("mine", "runc"))
    assert refused.returncode != 0, refused.stdout
    assert "only with runtimeClassName gvisor" in refused.stderr, refused.stderr
    assert "runc is refused" in refused.stderr, refused.stderr
    deployment = hard.kubectl(
        "-n", HARD_TENANT, "create", "deployment", "web", "--image=nginx", "--dry-run=client",
        "-o", "json",
    )  # fmt: skip
    body = json.loads(deployment.stdout)
    body["spec"]["template"]["spec"]["runtimeClassName"] = "runc"
    refused = hard.kubectl("-n", HARD_TENANT, "create", "-f", "-", stdin=json.dumps(body))
    assert refused.returncode != 0 and "stackube-tenant-runtime" in refused.stderr, refused
    # ... and the tenant cannot lift the policy: the namespace's labels and the Tenant
    # are not its to write.
    relabel = hard.kubectl(
        "label", "namespace", HARD_TENANT, "stackube.kubernetes.io/runtime-class-", "--overwrite"
    )
    assert relabel.returncode != 0 and "forbidden" in relabel.stderr.lower(), relabel
    patch = hard.kubectl(
        "patch", "tenant", HARD_TENANT, "--type=merge", "-p",
        '{"spec":{"runtimeClassPolicy":"Default"}}',
    )  # fmt: skip
    assert patch.returncode != 0 and "forbidden" in patch.stderr.lower(), patch

    # Positive control: the soft tenant's user runs runc, by default and by name.
    for name, runtime in (("soft-default", None), ("soft-runc", "runc")):
        made = soft.kubectl("-n", SOFT_TENANT, "create", "-f", "-", stdin=pod(name, runtime))
        assert made.returncode == 0, made.stderr
        eventually(functools.partial(running, kubectl, SOFT_TENANT, name), 120, f"{name} Running")
        assert sh(kubectl, SOFT_TENANT, name, "uname -r").strip() == platform.release()


def test_a_sandboxed_pod_has_logs_exec_and_its_limits_on_the_node(
    devbox: Devbox, kubectl: Kubectl, tenants: None
) -> None:
    """kubectl logs and exec reach the sandbox; the pod's memory limit plus the declared
    overhead is the limit of the pod's cgroup on the node, which holds the sandbox."""
    ns, limit = HARD_TENANT, 96 * 1024 * 1024
    container: dict[str, Any] = {
        "command": [
            "sh",
            "-c",
            "echo started-in-the-sandbox; trap 'exit 0' TERM; sleep 600 & wait",
        ],
        "resources": {"limits": {"memory": "96Mi", "cpu": "250m"}},
    }
    kubectl.run("-n", ns, "create", "-f", "-", stdin=pod("limited", None, **container))
    found = eventually(lambda: running(kubectl, ns, "limited"), 120, "limited Running")
    logs = eventually(
        lambda: kubectl.run("-n", ns, "logs", "limited").stdout or None, 30, "the pod's log"
    )
    assert "started-in-the-sandbox" in logs
    assert sh(kubectl, ns, "limited", "echo $((6 * 7))").strip() == "42"
    uid = found["metadata"]["uid"]
    cgroups = list(Path("/sys/fs/cgroup/memory/kubepods").glob(f"*/pod{uid}"))
    cgroups += list(Path("/sys/fs/cgroup/memory/kubepods").glob(f"pod{uid}"))
    assert len(cgroups) == 1, cgroups
    pod_cgroup = cgroups[0]
    assert int((pod_cgroup / "memory.limit_in_bytes").read_text()) == limit + GVISOR_OVERHEAD_MEMORY
    # The sandbox's processes (its Sentry among them) are charged to that cgroup.
    members = {
        pid for procs in pod_cgroup.rglob("cgroup.procs") for pid in procs.read_text().split()
    }
    commands = set()
    for pid in members:
        with contextlib.suppress(OSError):
            commands.add(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode())
    assert "runsc-sandbox" in commands, commands


TOOLS = {"name": "tools", "image": "busybox", "command": ["sleep", "3600"]}


def web(name: str, readiness_port: int | str, *, tools: bool = False, **extra: Any) -> str:
    """A one-replica Deployment of the guide's nginx with an httpGet readiness probe on
    `readiness_port` and a tcpSocket liveness probe on its port, probed every 2 s (and,
    with `tools`, a busybox container "tools" beside it: nginx's image has no nc)."""
    container: dict[str, Any] = {
        "name": "web",
        "image": "nginx",
        "ports": [{"name": "http", "containerPort": 80}],
        "readinessProbe": {"httpGet": {"path": "/", "port": readiness_port}, "periodSeconds": 2},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 2},
        **extra,
    }
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [container, *([TOOLS] if tools else [])],
                    },
                },
            },
        }
    )


def web_status(pod: dict[str, Any]) -> dict[str, Any]:
    """The web container's status (the kubelet lists them by name: "tools" first)."""
    found = [c for c in pod["status"].get("containerStatuses") or [] if c["name"] == "web"]
    return found[0] if found else {}


def pod_of(kubectl: Kubectl, namespace: str, app: str) -> dict[str, Any] | None:
    items = kubectl.json("-n", namespace, "get", "pods", "-l", f"app={app}")["items"]
    return items[0] if len(items) == 1 and items[0]["status"].get("podIP") else None


def pod_netns(devbox: Devbox, namespace: str, name: str) -> str:
    """The pod's (kernel) network namespace, from the node's CNI journal."""
    journal = NodePaths(devbox.settings.node_dir).cni_state / "attachments"
    for entry in journal.glob("*.json"):
        doc = json.loads(entry.read_text())
        if (doc.get("namespace"), doc.get("pod")) == (namespace, name) and doc.get("netns"):
            return str(doc["netns"])
    raise AssertionError(f"{namespace}/{name} is not in the CNI journal {journal}")


def test_a_sandboxed_pod_is_probed_and_port_forwarded_and_its_tenant_reaches_no_relay(
    devbox: Devbox, kubectl: Kubectl, tenants: None, tmp_path: Path
) -> None:
    """The kubelet's httpGet and tcpSocket probes, and `kubectl port-forward` by the
    tenant's own user, reach a gVisor pod (inside its sandbox, through runsc); the
    node's listener in the pod's kernel netns is out of reach of the pod's processes."""
    ns, user = HARD_TENANT, TenantUser(devbox, HARD_TENANT, tmp_path)
    for name, port in (("probed", "http"), ("unready", 81)):
        made = user.kubectl("-n", ns, "create", "-f", "-", stdin=web(name, port, tools=True))
        assert made.returncode == 0, made.stderr
    ready = eventually(
        lambda: (p := pod_of(kubectl, ns, "probed")) and web_status(p).get("ready") and p,
        120,
        "the probed gVisor pod Ready",
    )
    assert ready["spec"]["runtimeClassName"] == "gvisor"
    # Positive control: a readiness probe on a port nobody listens on fails, inside the
    # sandbox too; the tcpSocket liveness probe on the served port keeps both alive (no
    # restarts; its failing case is the next test's).
    unready = eventually(lambda: pod_of(kubectl, ns, "unready"), 120, "the unready pod")
    eventually(lambda: running(kubectl, ns, unready["metadata"]["name"]), 120, "unready Running")
    time.sleep(20)
    for app, want_ready in (("probed", True), ("unready", False)):
        found = pod_of(kubectl, ns, app)
        assert found is not None, app
        status = web_status(found)
        assert status["ready"] is want_ready and status["restartCount"] == 0, (
            app, status, kubectl.events(ns, found["metadata"]["name"])
        )  # fmt: skip

    # kubectl port-forward, as the tenant's user.
    name = ready["metadata"]["name"]
    forward = subprocess.Popen(
        ["kubectl", "-n", ns, "port-forward", f"pod/{name}", ":80"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=user.env,
    )  # fmt: skip
    try:
        assert forward.stdout is not None
        # "Forwarding from 127.0.0.1:<port> -> 80", within 30 s
        ready_to_read, _, _ = select.select([forward.stdout], [], [], 30)
        line = forward.stdout.readline() if ready_to_read else "(nothing in 30 s)"
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        with urllib.request.urlopen(f"http://127.0.0.1:{match[1]}/", timeout=10) as answer:
            assert answer.status == 200 and b"nginx" in answer.read().lower()
    finally:
        forward.terminate()
        forward.wait(10)

    # The node's listener is in the pod's kernel netns (positive control: reachable
    # there) but not from the pod's processes, whose loopback is the sandbox's own.
    netns = pod_netns(devbox, ns, name)
    node_side = subprocess.run(
        ["nsenter", f"--net={netns}", "python3", "-c",
         "import socket; socket.create_connection(('127.0.0.1', 65535), 5).close()"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert node_side.returncode == 0, node_side.stderr
    inside = sh(
        kubectl, ns, name,
        "for p in 80 65535; do if timeout 5 nc 127.0.0.1 $p </dev/null; then echo open-$p; "
        "else echo closed-$p; fi; done",
        "tools",
    )  # fmt: skip
    assert "open-80" in inside and "closed-65535" in inside, inside


@pytest.mark.parametrize("namespace", [HARD_TENANT, SOFT_TENANT])
def test_a_tcp_socket_probe_through_the_relay_fails_when_nothing_listens(
    kubectl: Kubectl, tenants: None, namespace: str
) -> None:
    """The kubelet's tcpSocket probe only connects: the relay must not answer it when
    the pod does not listen (gVisor pods in the hard tenant, runc in the soft one)."""
    dead = {"tcpSocket": {"port": 81}, "periodSeconds": 2, "failureThreshold": 1}
    alive = {"tcpSocket": {"port": "http"}, "periodSeconds": 2}
    kubectl.run(
        "-n", namespace, "create", "-f", "-", stdin=web("tcp-dead", "http", livenessProbe=dead)
    )
    kubectl.run(
        "-n", namespace, "create", "-f", "-", stdin=web("tcp-open", "http", readinessProbe=alive)
    )
    # Positive control: a tcpSocket probe on the served port passes.
    eventually(
        lambda: (p := pod_of(kubectl, namespace, "tcp-open")) and web_status(p).get("ready"),
        120,
        "the pod with an open tcpSocket readiness port Ready",
    )
    restarted = eventually(
        lambda: (
            (p := pod_of(kubectl, namespace, "tcp-dead"))
            and web_status(p).get("restartCount", 0) > 0
            and p
        ),
        120,
        "the pod whose tcpSocket liveness port is closed restarted",
    )
    events = kubectl.run(
        "-n", namespace, "get", "events", "--field-selector",
        f"involvedObject.name={restarted['metadata']['name']},reason=Unhealthy",
        "-o", "jsonpath={.items[*].message}",
    ).stdout  # fmt: skip
    assert "Liveness probe failed" in events, events
