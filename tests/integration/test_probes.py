"""Kubelet probes reach pods on tenant networks (through the CNI daemon's probe relay),
also when two tenants on the node use the same CIDR; the tenants' DNS servers are Ready
only when they answer. Real pods on the devbox's node, its own CNI daemon and kubelet."""

from __future__ import annotations

import datetime
import re
import time
from collections.abc import Iterator
from concurrent.futures import Future
from typing import Any

import pytest

from stackube.api.types import DNS_NAMESPACE
from tests.live_tenant import LiveTenant

pytestmark = pytest.mark.integration

STABLE_SECONDS = 300  # the "stays Available for 5 minutes with 0 restarts"


@pytest.fixture(scope="module", autouse=True)
def devbox_node_cordoned() -> Iterator[None]:
    """Overrides the tier's cordon: this module's pods are real pods on the node."""
    yield


@pytest.fixture
def two_tenants(probe_tenants: Future[list[LiveTenant]]) -> list[LiveTenant]:
    """Two tenants with the default CIDR (the same for both), each with `web`, started
    at the start of the session (tests/conftest.py): by now they have run for a while."""
    return probe_tenants.result(timeout=600)


def since(conditions: list[dict[str, Any]], type_: str) -> float:
    """Seconds the condition has been True (0 when it is not)."""
    found = [c for c in conditions if c["type"] == type_]
    if not found or found[0]["status"] != "True":
        return 0.0
    changed = datetime.datetime.fromisoformat(found[0]["lastTransitionTime"])
    return (datetime.datetime.now(datetime.UTC) - changed).total_seconds()


def stable_for(tenants: list[LiveTenant]) -> float:
    """Seconds every `web` Deployment has been Available with both replicas, and every
    pod Ready, without a restart (asserts the last two)."""
    ages = []
    for tenant in tenants:
        deployment = tenant.kubectl.json("-n", tenant.name, "get", "deployment", "web")
        assert deployment["status"].get("availableReplicas") == 2, deployment["status"]
        ages.append(since(deployment["status"]["conditions"], "Available"))
        pods = web_pods(tenant)
        assert [restarts(p) for p in pods] == [0, 0], [
            (p["status"], tenant.kubectl.events(tenant.name, p["metadata"]["name"])) for p in pods
        ]
        ages += [since(p["status"]["conditions"], "Ready") for p in pods]
    return min(ages)


def web_pods(tenant: LiveTenant) -> list[dict[str, Any]]:
    return list(tenant.kubectl.json("-n", tenant.name, "get", "pods", "-l", "app=web")["items"])


def mentions(text: str, ip: str) -> bool:
    """The address appears as itself (10.0.0.1 is not in 10.0.0.12)."""
    return re.search(rf"(?<![\d.]){re.escape(ip)}(?![\d])", text) is not None


def restarts(pod: dict[str, Any]) -> int:
    return sum(int(c["restartCount"]) for c in pod["status"].get("containerStatuses") or [])


def test_probed_replicas_become_available_and_stay_so(two_tenants: list[LiveTenant]) -> None:
    for tenant in two_tenants:
        tenant.kubectl.run(
            "-n", tenant.name, "rollout", "status", "deployment/web", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
    cidrs = {
        t.kubectl.json("-n", t.name, "get", "network", t.name)["spec"]["cidr"] for t in two_tenants
    }
    assert len(cidrs) == 1, cidrs  # the same CIDR in both tenants
    addresses = [p["status"]["podIP"] for t in two_tenants for p in web_pods(t)]
    assert len(addresses) == 4 and len(set(addresses)) == 4, addresses  # unique per node
    # Available and Ready without a break for STABLE_SECONDS: the conditions' last
    # transitions are that old (waiting out the rest if the session is younger), and
    # nothing restarted. A flap meanwhile makes them younger again: the deadline, set
    # from the first look, then fails the test.
    age = stable_for(two_tenants)
    deadline = time.monotonic() + max(0.0, STABLE_SECONDS - age) + 30
    while age < STABLE_SECONDS:
        assert time.monotonic() < deadline, f"Available/Ready for {age:.0f}s only (a flap?)"
        time.sleep(min(15, STABLE_SECONDS - age))
        age = stable_for(two_tenants)
    for tenant in two_tenants:
        for pod in web_pods(tenant):
            logs = tenant.kubectl.run("-n", tenant.name, "logs", pod["metadata"]["name"]).stdout
            # The relay's mark: the kubelet's requests arrive from the pod's own address
            # (made inside its netns), here and in no other pod.
            own = pod["status"]["podIP"]
            assert mentions(logs, own), logs[-500:]
            assert not [ip for ip in set(addresses) - {own} if mentions(logs, ip)], logs[-500:]


def served(tenant: LiveTenant, pod: dict[str, Any]) -> int:
    """Requests the pod's log shows from anything but itself (the relayed probes come
    from its own address; the Service's traffic from its tenant's router)."""
    logs = tenant.kubectl.run("-n", tenant.name, "logs", pod["metadata"]["name"]).stdout
    own = pod["status"]["podIP"]
    return sum(1 for line in logs.splitlines() if line and not mentions(line, own))


def test_a_named_target_port_reaches_both_replicas(two_tenants: list[LiveTenant]) -> None:
    tenant = two_tenants[0]
    pods = web_pods(tenant)
    before = [served(tenant, pod) for pod in pods]
    for _ in range(30):
        got = tenant.kubectl.run(
            "-n", tenant.name, "exec", "client", "--", "timeout", "5", "wget", "-q", "-O-",
            "web", check=False,
        )  # fmt: skip
        assert "Welcome to nginx" in got.stdout, got.stderr
    after = [served(tenant, pod) for pod in pods]
    assert sum(after) - sum(before) >= 30, (before, after)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)


def test_the_tenant_dns_is_ready_only_when_it_answers(two_tenants: list[LiveTenant]) -> None:
    tenant = two_tenants[1]
    dns = tenant.kubectl.json(
        "-n", DNS_NAMESPACE, "get", "pods", "-l", f"stackube.kubernetes.io/tenant={tenant.name}"
    )["items"]
    assert len(dns) == 1
    container = dns[0]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    ready = [c for c in dns[0]["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"
    # Ready, so it answers at once: no retry loop.
    assert tenant.answers() == []
    # Rolled again, it is not Ready before it answers: `rollout status` then a lookup.
    tenant.kubectl.run("-n", DNS_NAMESPACE, "rollout", "restart", f"deployment/{tenant.name}")
    tenant.kubectl.run(
        "-n", DNS_NAMESPACE, "rollout", "status", f"deployment/{tenant.name}", "--timeout=120s",
        timeout=130,
    )  # fmt: skip
    # (a few seconds' grace for the Service's endpoints to move to the new server)
    deadline = time.monotonic() + 10
    while (failed := tenant.answers()) and time.monotonic() < deadline:
        time.sleep(1)
    assert failed == []
