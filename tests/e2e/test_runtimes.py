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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
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


def sh(kubectl: Kubectl, namespace: str, name: str, script: str) -> str:
    done = kubectl.run("-n", namespace, "exec", name, "--", "sh", "-c", script, check=False)
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
