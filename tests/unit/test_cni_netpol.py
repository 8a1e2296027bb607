"""NetworkPolicy in pods' network namespaces (stackube.cni.netpol): what the CNI daemon
writes there, and when it writes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from stackube.cni.netpol import LocalPod, PodPolicyEngine
from stackube.netpol.render import POD_INPUT_CHAIN, POD_OUTPUT_CHAIN, restore_text

pytestmark = pytest.mark.unit


class Tables:
    def __init__(self, existing: set[str] | None = None) -> None:
        self.existing = existing or set()
        self.restored: dict[str, list[str]] = {}
        self.jumps: list[tuple[str, str, str, str]] = []

    def chains(self, netns: str, table: str) -> set[str]:
        return self.existing

    def restore(self, netns: str, text: str) -> None:
        self.restored.setdefault(netns, []).append(text)

    def ensure_jump(self, netns: str, table: str, chain: str, target: str) -> bool:
        self.jumps.append((netns, table, chain, target))
        return True


WEB = LocalPod("/run/netns/web", "team-a", "web", "10.0.0.10", "10.0.0.0/24", "10.0.0.1")
CLIENT = LocalPod("/run/netns/client", "team-a", "client", "10.0.0.11", "10.0.0.0/24", "10.0.0.1")


def pod(local: LocalPod, labels: dict[str, str], with_ip: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"namespace": local.namespace, "name": local.name, "labels": labels},
        "spec": {"containers": [{"name": "c"}]},
        "status": {"podIP": local.ip if with_ip else None, "phase": "Running"},
    }


DENY_WEB = {
    "metadata": {"namespace": "team-a", "name": "deny-web"},
    "spec": {"podSelector": {"matchLabels": {"app": "web"}}},
}


def engine(tables: Tables) -> PodPolicyEngine:
    made = PodPolicyEngine(tables, lambda: [WEB, CLIENT])
    made.on_change(
        "namespaces",
        None,
        {"metadata": {"name": "team-a", "labels": {"stackube.kubernetes.io/tenant": "team-a"}}},
    )
    # The web pod's status has no address yet: the journal's is used.
    made.on_change("pods", None, pod(WEB, {"app": "web"}, with_ip=False))
    made.on_change("pods", None, pod(CLIENT, {"app": "client"}))
    return made


def test_no_policy_no_rules() -> None:
    tables = Tables()
    assert engine(tables).sync() == 0
    assert tables.restored == {} and tables.jumps == []


def test_a_policy_isolates_the_pods_it_selects_and_its_removal_opens_them() -> None:
    tables = Tables()
    made = engine(tables)
    made.on_change("networkpolicies", None, DENY_WEB)
    assert made.sync() == 1
    (text,) = tables.restored[WEB.netns]
    assert f"-A {POD_INPUT_CHAIN} ! -s 10.0.0.0/24 -j RETURN" in text
    assert text.rstrip().splitlines()[-2].endswith("-j DROP")
    assert {(t, c) for _, t, c, _ in tables.jumps} == {("filter", "INPUT"), ("filter", "OUTPUT")}
    assert CLIENT.netns not in tables.restored  # not selected
    assert made.sync() == 0  # unchanged: nothing rewritten
    made.on_change("networkpolicies", DENY_WEB, None)
    assert made.sync() == 1
    assert tables.restored[WEB.netns][-1] == restore_text(
        {POD_INPUT_CHAIN: (), POD_OUTPUT_CHAIN: ()}
    )


def test_chains_an_earlier_daemon_left_are_emptied_when_no_policy_remains() -> None:
    tables = Tables(existing={POD_INPUT_CHAIN, POD_OUTPUT_CHAIN, "INPUT"})
    assert engine(tables).sync() == 2
    assert tables.restored[WEB.netns] == [restore_text({POD_INPUT_CHAIN: (), POD_OUTPUT_CHAIN: ()})]


def test_the_dns_namespace_pods_are_never_selected() -> None:
    tables = Tables()
    dns = LocalPod(
        "/run/netns/dns", "stackube-dns", "team-a-x", "10.0.0.2", "10.0.0.0/24", "10.0.0.1"
    )
    made = PodPolicyEngine(tables, lambda: [dns])
    made.on_change("pods", None, pod(dns, {"app": "web"}))
    made.on_change(
        "networkpolicies",
        None,
        {**DENY_WEB, "metadata": {"namespace": "stackube-dns", "name": "x"}},
    )
    assert made.sync() == 0 and tables.restored == {}


def test_the_nodes_own_address_on_the_system_network_is_never_policed() -> None:
    from stackube.netpol.compiler import PodRules  # noqa: PLC0415
    from stackube.netpol.render import pod_chains  # noqa: PLC0415

    chains = pod_chains(PodRules("10.0.0.10", (), ()), "10.0.0.0/24", "10.0.0.1", "10.0.0.3")
    assert "-s 10.0.0.3/32 -j RETURN" in chains[POD_INPUT_CHAIN]
    assert "-d 10.0.0.3/32 -j RETURN" in chains[POD_OUTPUT_CHAIN]
    # Positive control: without it, only the gateway passes.
    plain = pod_chains(PodRules("10.0.0.10", (), ()), "10.0.0.0/24", "10.0.0.1")
    assert not [r for r in plain[POD_INPUT_CHAIN] if "10.0.0.3" in r]
