"""Compiled NetworkPolicies (stackube.netpol.compiler) -> iptables chains (pure), for the
two places that enforce them (docs/decisions/0013-network-policy.md):

- the tenant's router (`router_chains`): `STKB-NETPOL`, jumped to from `filter
  FORWARD`, sees routed traffic after DNAT and before masquerade: the sender's egress
  rules, then the receiver's ingress rules;
- a pod's network namespace (`pod_chains`): `STKB-NETPOL-IN`/`-OUT`, jumped to from
  `INPUT`/`OUTPUT`, check only traffic with a peer on the pod's own subnet (other than
  the gateway): everything else went, or goes, through the router.

Each per-pod chain RETURNs what a Rule allows and drops the rest; established and
related connections pass first (a policy change never cuts a connection it allowed
when it began, like the iptables-based implementations upstream).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping

from stackube.netpol.compiler import PodRules, Rule

ROUTER_CHAIN = "STKB-NETPOL"
POD_INPUT_CHAIN = "STKB-NETPOL-IN"
POD_OUTPUT_CHAIN = "STKB-NETPOL-OUT"
# (table, built-in chain, our chain): the router's, and the pod namespace's.
ROUTER_JUMPS = (("filter", "FORWARD", ROUTER_CHAIN),)
POD_JUMPS = (("filter", "INPUT", POD_INPUT_CHAIN), ("filter", "OUTPUT", POD_OUTPUT_CHAIN))

Chains = dict[str, tuple[str, ...]]
_ESTABLISHED = "-m conntrack --ctstate ESTABLISHED,RELATED -j RETURN"


def chain_hash(text: str) -> str:
    """16 characters naming a chain after `text` (chain names are at most 28 long)."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def comment(text: str) -> str:
    """An iptables comment match."""
    return f'-m comment --comment "{text}"'


def restore_text(chains: Chains, table: str = "filter") -> str:
    """`iptables-restore --noflush` input that makes these chains of `table` exactly
    `chains` (declaring a chain flushes it) and leaves every other chain alone."""
    lines = [f"*{table}", *(f":{name} - [0:0]" for name in sorted(chains))]
    lines += [f"-A {name} {rule}" for name in sorted(chains) for rule in chains[name]]
    return "\n".join([*lines, "COMMIT", ""])


def rule_match(rule: Rule, peer: str) -> str:
    """iptables matches for one Rule; `peer` is "-s" (ingress: the peer sends) or
    "-d" (egress: the peer receives). Ports are destination ports either way."""
    parts = []
    if rule.cidr is not None:
        parts.append(f"{peer} {rule.cidr}")
    if rule.protocol is not None:
        parts.append(f"-p {rule.protocol.lower()}")
        if rule.first is not None:
            last = rule.last if rule.last is not None else rule.first
            ports = str(rule.first) if last == rule.first else f"{rule.first}:{last}"
            parts.append(f"--dport {ports}")
    return " ".join(parts)


def _allow(rules: Iterable[Rule], peer: str, what: str) -> tuple[str, ...]:
    allowed = tuple(f"{rule_match(r, peer)} -j RETURN".strip() for r in rules)
    return (*allowed, f"{comment(what)} -j DROP")


def ingress_chain(ip: str) -> str:
    return f"STKB-NP-I-{chain_hash(ip)}"


def egress_chain(ip: str) -> str:
    return f"STKB-NP-E-{chain_hash(ip)}"


def router_chains(pods: Mapping[str, PodRules]) -> Chains:
    """The router's filter chains for one tenant's pods ({pod IP: PodRules}); with no
    pod isolated, only the (empty) dispatch chain the FORWARD jump needs."""
    if not pods:
        return {ROUTER_CHAIN: ()}
    dispatch = [_ESTABLISHED]
    chains: Chains = {}
    for ip in sorted(pods):
        rules = pods[ip]
        if rules.egress is not None:
            dispatch.append(f"-s {ip}/32 -j {egress_chain(ip)}")
            chains[egress_chain(ip)] = _allow(rules.egress, "-d", f"egress of {ip} not allowed")
    for ip in sorted(pods):
        rules = pods[ip]
        if rules.ingress is not None:
            dispatch.append(f"-d {ip}/32 -j {ingress_chain(ip)}")
            chains[ingress_chain(ip)] = _allow(rules.ingress, "-s", f"ingress to {ip} not allowed")
    return {ROUTER_CHAIN: tuple(dispatch), **chains}


def pod_chains(rules: PodRules, subnet: str, gateway: str, host: str = "") -> Chains:
    """A pod namespace's filter chains: its policy for peers on its own `subnet` (a
    CIDR), other than the `gateway` (the router, which enforces the rest) and the
    node's own `host` address there (the kubelet and the API server, on the system
    network: the local node is never policed, as in kube-proxy based clusters)."""

    def chain(
        direction_rules: tuple[Rule, ...] | None, peer: str, lo: str, what: str
    ) -> tuple[str, ...]:
        if direction_rules is None:
            return ()
        return (
            f"{lo} lo -j RETURN",
            _ESTABLISHED,
            f"! {peer} {subnet} -j RETURN",
            f"{peer} {gateway}/32 -j RETURN",
            *([f"{peer} {host}/32 -j RETURN"] if host else []),
            *_allow(direction_rules, peer, what),
        )

    return {
        POD_INPUT_CHAIN: chain(rules.ingress, "-s", "-i", f"ingress to {rules.ip} not allowed"),
        POD_OUTPUT_CHAIN: chain(rules.egress, "-d", "-o", f"egress of {rules.ip} not allowed"),
    }
