"""NetworkPolicy semantics (stackube.netpol): selectors, isolation, peers, ports."""

from __future__ import annotations

from typing import Any

import pytest

from stackube.netpol.compiler import (
    Pod,
    PodRules,
    PolicyError,
    Rule,
    cidr_except,
    compile_policies,
)
from stackube.netpol.render import (
    POD_INPUT_CHAIN,
    POD_OUTPUT_CHAIN,
    ROUTER_CHAIN,
    egress_chain,
    ingress_chain,
    pod_chains,
    router_chains,
    rule_match,
)
from stackube.netpol.selectors import SelectorError, matches

pytestmark = pytest.mark.unit

WEB = Pod("t1", "web", "10.0.0.10", {"app": "web"}, (("http", "TCP", 8080),))
CLIENT = Pod("t1", "client", "10.0.0.11", {"app": "client"})
OTHER = Pod("t1", "other", "10.0.0.12", {"app": "other"})
DNS = Pod("kube-system", "dns", "10.1.0.2", {"k8s-app": "dns"}, (("dns", "UDP", 53),))
FOREIGN_CLIENT = Pod("t2", "client", "10.0.0.11", {"app": "client"})
PODS = [WEB, CLIENT, OTHER, DNS]
NAMESPACES = {"t1": {"team": "a"}, "t2": {"team": "b"}, "kube-system": {}}


def policy(spec: dict[str, Any], namespace: str = "t1") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": namespace}, "spec": spec}


def rules_for(pod: Pod, *policies: dict[str, Any], pods: list[Pod] = PODS) -> PodRules:
    return compile_policies(policies, pods, NAMESPACES)[pod.ip]


def test_selectors_follow_label_selector_semantics() -> None:
    labels = {"app": "web", "tier": "front"}
    assert matches({}, labels) and not matches(None, labels)
    assert matches({"matchLabels": {"app": "web"}}, labels)
    assert not matches({"matchLabels": {"app": "web", "x": "y"}}, labels)
    expression = {"key": "tier", "operator": "In", "values": ["front", "back"]}
    assert matches({"matchExpressions": [expression]}, labels)
    assert not matches({"matchExpressions": [{**expression, "operator": "NotIn"}]}, labels)
    assert matches({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]}, labels)
    assert not matches({"matchExpressions": [{"key": "x", "operator": "Exists"}]}, labels)
    with pytest.raises(SelectorError, match="unknown selector operator"):
        matches({"matchExpressions": [{"key": "x", "operator": "Near"}]}, labels)


def test_a_pod_no_policy_selects_is_not_isolated() -> None:
    deny = policy({"podSelector": {"matchLabels": {"app": "web"}}})
    assert rules_for(CLIENT, deny) == PodRules(CLIENT.ip, None, None)
    # Positive control: the policy does isolate the pod it selects, for ingress only.
    assert rules_for(WEB, deny) == PodRules(WEB.ip, (), None)


def test_policies_in_another_namespace_do_not_apply() -> None:
    deny = policy({"podSelector": {}}, namespace="t2")
    assert rules_for(WEB, deny) == PodRules(WEB.ip, None, None)


def test_egress_isolation_by_default_when_the_policy_has_egress_rules() -> None:
    spec = {
        "podSelector": {},
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "web"}}}]}],
    }
    rules = rules_for(CLIENT, policy(spec))
    assert rules.ingress == () and rules.egress == (Rule("10.0.0.10/32"),)
    egress_only = rules_for(CLIENT, policy({**spec, "policyTypes": ["Egress"]}))
    assert egress_only.ingress is None and egress_only.egress == (Rule("10.0.0.10/32"),)


def test_a_label_rule_allows_only_the_named_pods_of_the_policy_namespace() -> None:
    allow = policy(
        {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": {"app": "client"}}}],
                    "ports": [{"port": 8080}],
                }
            ],
        }
    )
    rules = rules_for(WEB, allow, pods=[*PODS, FOREIGN_CLIENT])
    # One /32 for the client in t1; t2's pod with the same label and IP adds nothing.
    assert rules.ingress == (Rule("10.0.0.11/32", "TCP", 8080, 8080),)


def test_namespace_selectors_alone_and_with_pod_selectors() -> None:
    everyone_in_team_a = {"namespaceSelector": {"matchLabels": {"team": "a"}}}
    spec = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"from": [everyone_in_team_a]}],
    }
    assert {r.cidr for r in rules_for(WEB, policy(spec)).ingress or ()} == {
        "10.0.0.10/32", "10.0.0.11/32", "10.0.0.12/32"
    }  # fmt: skip
    both = {**everyone_in_team_a, "podSelector": {"matchLabels": {"app": "other"}}}
    spec["ingress"] = [{"from": [both]}]
    assert rules_for(WEB, policy(spec)).ingress == (Rule("10.0.0.12/32"),)
    by_name = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}
    spec["ingress"] = [{"from": [by_name]}]
    assert rules_for(WEB, policy(spec)).ingress == (Rule("10.1.0.2/32"),)


def test_ip_blocks_with_except() -> None:
    assert cidr_except("10.0.0.0/24", ["10.0.0.0/25"]) == ["10.0.0.128/25"]
    assert cidr_except("10.0.0.0/24", ["10.0.0.64/26", "192.0.2.0/24"]) == [
        "10.0.0.0/26", "10.0.0.128/25"
    ]  # fmt: skip
    assert cidr_except("10.0.0.0/24", ["10.0.0.0/16"]) == []
    with pytest.raises(PolicyError, match="not-a-cidr"):
        cidr_except("not-a-cidr", [])
    spec = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}]}],
    }
    egress = rules_for(CLIENT, policy(spec)).egress or ()
    assert "10.0.0.0/8" not in {r.cidr for r in egress} and len(egress) == 8


def test_port_ranges_protocols_and_every_port() -> None:
    spec = {
        "podSelector": {"matchLabels": {"app": "web"}},
        "ingress": [
            {"ports": [{"port": 8000, "endPort": 8100}, {"protocol": "UDP"}]},
        ],
    }
    assert rules_for(WEB, policy(spec)).ingress == (
        Rule(None, "TCP", 8000, 8100),
        Rule(None, "UDP", None, None),
    )
    spec["ingress"] = [{"ports": [{"protocol": "ICMP"}]}]
    with pytest.raises(PolicyError, match="unknown protocol"):
        rules_for(WEB, policy(spec))


def test_named_ports_resolve_on_the_pod_that_owns_them() -> None:
    ingress = {
        "podSelector": {},
        "ingress": [{"ports": [{"port": "http"}]}],
    }
    # Ingress: the selected pod's own port; a pod without that name gets nothing.
    assert rules_for(WEB, policy(ingress)).ingress == (Rule(None, "TCP", 8080, 8080),)
    assert rules_for(CLIENT, policy(ingress)).ingress == ()
    egress = {
        "podSelector": {},
        "policyTypes": ["Egress"],
        "egress": [
            {
                "to": [
                    {"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "dns"}}}
                ],
                "ports": [{"port": "dns", "protocol": "UDP"}],
            }
        ],
    }
    # Egress: each peer's own port.
    assert rules_for(CLIENT, policy(egress)).egress == (Rule("10.1.0.2/32", "UDP", 53, 53),)
    egress["egress"][0]["ports"] = [{"port": "dns"}]  # TCP: no such port
    assert rules_for(CLIENT, policy(egress)).egress == ()


def test_router_chains_check_the_senders_egress_then_the_receivers_ingress() -> None:
    pods = {
        "10.0.0.10": PodRules("10.0.0.10", (Rule("10.0.0.11/32", "TCP", 8080, 8080),), None),
        "10.0.0.11": PodRules("10.0.0.11", None, (Rule(None, "UDP", 53, 53),)),
        "10.0.0.12": PodRules("10.0.0.12", None, None),
    }
    chains = router_chains(pods)
    dispatch = chains[ROUTER_CHAIN]
    assert dispatch[0].startswith("-m conntrack --ctstate ESTABLISHED,RELATED")
    assert dispatch[1:] == (
        f"-s 10.0.0.11/32 -j {egress_chain('10.0.0.11')}",
        f"-d 10.0.0.10/32 -j {ingress_chain('10.0.0.10')}",
    )
    assert chains[ingress_chain("10.0.0.10")][0] == "-s 10.0.0.11/32 -p tcp --dport 8080 -j RETURN"
    assert chains[ingress_chain("10.0.0.10")][-1].endswith("-j DROP")
    assert chains[egress_chain("10.0.0.11")][0] == "-p udp --dport 53 -j RETURN"
    # A pod no policy isolates has no chain: its traffic is not looked at.
    assert not [c for c in chains if "10.0.0.12" in " ".join(chains[c])]


def test_rule_matches() -> None:
    assert rule_match(Rule(None), "-s") == ""
    assert rule_match(Rule("10.0.0.0/24", "SCTP"), "-d") == "-d 10.0.0.0/24 -p sctp"
    assert rule_match(Rule(None, "TCP", 8000, 8100), "-s") == "-p tcp --dport 8000:8100"


def test_pod_chains_check_only_peers_on_the_pods_own_subnet() -> None:
    denied = pod_chains(PodRules("10.0.0.10", (), None), "10.0.0.0/24", "10.0.0.1")
    inbound = denied[POD_INPUT_CHAIN]
    # Loopback (the kubelet's probes arrive from the pod's own address), established
    # flows, the router and other subnets pass; then only what is allowed: nothing.
    assert inbound[:4] == (
        "-i lo -j RETURN",
        "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        "! -s 10.0.0.0/24 -j RETURN",
        "-s 10.0.0.1/32 -j RETURN",
    )
    assert len(inbound) == 5 and inbound[-1].endswith("-j DROP")
    assert denied[POD_OUTPUT_CHAIN] == ()
    allowed = pod_chains(
        PodRules("10.0.0.10", None, (Rule("10.0.0.11/32"),)), "10.0.0.0/24", "10.0.0.1"
    )
    assert allowed[POD_INPUT_CHAIN] == ()
    assert "-d 10.0.0.11/32 -j RETURN" in allowed[POD_OUTPUT_CHAIN]


def test_the_tenants_default_policies() -> None:
    from stackube.netpol.defaults import default_policy  # noqa: PLC0415

    labels = {"app.kubernetes.io/managed-by": "stackube-controller"}
    assert default_policy("t1", "None", labels) is None
    deny_ingress = default_policy("t1", "DenyIngress", labels)
    assert deny_ingress is not None and deny_ingress["metadata"]["namespace"] == "t1"
    deny_all = default_policy("t1", "DenyAll", labels)
    assert deny_all is not None
    # What they do, through the compiler: every pod isolated; DenyAll keeps DNS out.
    ingress_only = compile_policies([deny_ingress], PODS, NAMESPACES)[WEB.ip]
    assert ingress_only == PodRules(WEB.ip, (), None)
    everything = compile_policies([deny_all], PODS, NAMESPACES)[CLIENT.ip]
    assert everything.ingress == ()
    assert everything.egress == (Rule(None, "TCP", 53, 53), Rule(None, "UDP", 53, 53))
    assert compile_policies([deny_all], PODS, NAMESPACES)[DNS.ip] == PodRules(DNS.ip, None, None)
    with pytest.raises(ValueError, match="unknown default NetworkPolicy"):
        default_policy("t1", "AllowAll", labels)


def test_a_tenant_spec_names_a_known_default_policy() -> None:
    from stackube.api.types import SpecError, parse_tenant  # noqa: PLC0415

    body = {"metadata": {"name": "t1"}, "spec": {"username": "u", "password": "p"}}
    assert parse_tenant(body).default_network_policy == "None"
    body["spec"]["defaultNetworkPolicy"] = "DenyAll"
    assert parse_tenant(body).default_network_policy == "DenyAll"
    body["spec"]["defaultNetworkPolicy"] = "Deny"
    with pytest.raises(SpecError, match=r"spec\.defaultNetworkPolicy must be one of"):
        parse_tenant(body)
