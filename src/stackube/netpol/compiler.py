"""NetworkPolicies -> what each selected pod may receive and send (pure).

Semantics follow networking.k8s.io/v1 (k8s.io/api/networking/v1/types.go and the
Kubernetes docs "Network Policies"):
- a pod is isolated for ingress (egress) when some policy of its namespace selects it
  and has Ingress (Egress) in `policyTypes` (default: Ingress, plus Egress when the
  policy has an `egress` section); an isolated pod gets only what some rule allows;
- a rule's peers: `podSelector` alone means pods of the policy's namespace,
  `namespaceSelector` alone all pods of the matching namespaces, both the matching pods
  of the matching namespaces, `ipBlock` a CIDR minus its `except`s; no peers means any;
- a rule's ports: `protocol` (default TCP), `port` a number or a container port's name,
  `endPort` a range's end; no ports means every port and protocol. A named port is
  resolved on the pod that owns it: the selected pod for ingress, each peer pod for
  egress (a name no pod has matches nothing, as upstream).

The result is a set of Rules per pod IP: (peer CIDR, protocol, port range) triples that
are allowed; enforcement (stackube.proxy in the router, the CNI daemon in the pod's
network namespace) renders them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackube.netpol.selectors import matches

PROTOCOLS = ("TCP", "UDP", "SCTP")
INGRESS, EGRESS = "Ingress", "Egress"


class PolicyError(ValueError):
    """A policy this compiler cannot honour (an ipBlock that is not an IPv4 CIDR, an
    unknown protocol): the policy is reported, never half-applied."""


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: `named_ports` holds (name, protocol, number) for every
    container port that has a name."""

    namespace: str
    name: str
    ip: str
    labels: Mapping[str, str] = field(default_factory=dict)
    named_ports: tuple[tuple[str, str, int], ...] = ()

    def port_named(self, name: str, protocol: str) -> int | None:
        for port_name, port_protocol, number in self.named_ports:
            if port_name == name and port_protocol == protocol:
                return number
        return None


@dataclass(frozen=True, order=True)
class Rule:
    """Allowed traffic with a peer in `cidr` (None: any address), of `protocol` (None:
    any), to destination ports `first`..`last` (None: every port). For ingress the
    ports are the selected pod's; for egress, the peer's."""

    cidr: str | None
    protocol: str | None = None
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class PodRules:
    """What one pod may receive (`ingress`) and send (`egress`); None: not isolated in
    that direction (everything allowed); an empty tuple: nothing allowed."""

    ip: str
    ingress: tuple[Rule, ...] | None
    egress: tuple[Rule, ...] | None


@dataclass(frozen=True)
class _Port:
    protocol: str
    first: int | None = None  # None: all ports
    last: int | None = None
    name: str | None = None  # a named port, resolved per pod


def policy_types(policy: Mapping[str, Any]) -> set[str]:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes")
    if types:
        return set(types)
    return {INGRESS, EGRESS} if spec.get("egress") else {INGRESS}


def cidr_except(cidr: str, excepted: Sequence[str]) -> list[str]:
    """`cidr` minus every CIDR in `excepted`, as a sorted list of CIDRs.

    Raises PolicyError for a value that is not an IPv4 network.
    """
    try:
        networks = [ipaddress.IPv4Network(cidr, strict=False)]
        for text in excepted:
            hole = ipaddress.IPv4Network(text, strict=False)
            remaining: list[ipaddress.IPv4Network] = []
            for network in networks:
                if hole.subnet_of(network):
                    remaining.extend(network.address_exclude(hole))
                elif not network.subnet_of(hole):
                    remaining.append(network)
            networks = remaining
    except ValueError as exc:  # ipaddress's AddressValueError/NetmaskValueError too
        raise PolicyError(f"ipBlock {cidr} except {list(excepted)}: {exc}") from exc
    return [str(n) for n in sorted(networks)]


def _ports(entries: Iterable[Mapping[str, Any]] | None) -> list[_Port] | None:
    """A rule's `ports`, or None for every port and protocol."""
    entries = list(entries or [])
    if not entries:
        return None
    ports = []
    for entry in entries:
        protocol = entry.get("protocol") or "TCP"
        if protocol not in PROTOCOLS:
            raise PolicyError(f"unknown protocol {protocol!r}")
        port = entry.get("port")
        if port is None:
            ports.append(_Port(protocol))
        elif isinstance(port, str) and not port.isdigit():
            ports.append(_Port(protocol, name=port))
        else:
            first = int(port)
            last = int(entry.get("endPort") or first)
            ports.append(_Port(protocol, first, max(first, last)))
    return ports


class _Cluster:
    """The pods and namespaces policies are evaluated against."""

    def __init__(self, pods: Iterable[Pod], namespaces: Mapping[str, Mapping[str, str]]) -> None:
        self.pods = [p for p in pods if p.ip]
        self.namespaces = namespaces

    def namespace_labels(self, name: str) -> Mapping[str, str]:
        # The API server sets this label on every namespace (since v1.22).
        return {**(self.namespaces.get(name) or {}), "kubernetes.io/metadata.name": name}

    def peer_pods(self, peer: Mapping[str, Any], policy_namespace: str) -> list[Pod]:
        pod_selector = peer.get("podSelector")
        namespace_selector = peer.get("namespaceSelector")
        found = []
        for pod in self.pods:
            if namespace_selector is None:
                in_scope = pod.namespace == policy_namespace
            else:
                in_scope = matches(namespace_selector, self.namespace_labels(pod.namespace))
            if in_scope and (pod_selector is None or matches(pod_selector, pod.labels)):
                found.append(pod)
        return found


def _rules(
    rule: Mapping[str, Any],
    direction: str,
    policy_namespace: str,
    selected: Pod,
    cluster: _Cluster,
) -> set[Rule]:
    """The Rules one ingress or egress rule gives `selected`."""
    port_list = _ports(rule.get("ports"))
    peers = rule.get("from" if direction == INGRESS else "to") or []
    # (cidr, the pod behind it if any): named egress ports resolve on that pod.
    targets: list[tuple[str | None, Pod | None]] = []
    if not peers:
        targets.append((None, None))
        if direction == EGRESS and port_list and any(p.name for p in port_list):
            targets.extend((f"{pod.ip}/32", pod) for pod in cluster.pods)
    for peer in peers:
        block = peer.get("ipBlock")
        if block is not None:
            targets.extend((c, None) for c in cidr_except(block["cidr"], block.get("except") or []))
        else:
            targets.extend(
                (f"{pod.ip}/32", pod) for pod in cluster.peer_pods(peer, policy_namespace)
            )
    found: set[Rule] = set()
    for cidr, peer_pod in targets:
        if port_list is None:
            found.add(Rule(cidr))
            continue
        for port in port_list:
            if port.name is None:
                found.add(Rule(cidr, port.protocol, port.first, port.last))
                continue
            owner = selected if direction == INGRESS else peer_pod
            number = owner.port_named(port.name, port.protocol) if owner else None
            if number is not None:
                found.add(Rule(cidr, port.protocol, number, number))
    return found


def compile_policies(
    policies: Iterable[Mapping[str, Any]],
    pods: Iterable[Pod],
    namespaces: Mapping[str, Mapping[str, str]],
    targets: Iterable[Pod] | None = None,
) -> dict[str, PodRules]:
    """{pod IP: PodRules} for `targets` (default: every pod with an IP), given every
    NetworkPolicy and the pods and namespaces (name -> labels) they may name.

    Raises PolicyError for a policy that cannot be honoured (see PolicyError),
    selectors.SelectorError for a malformed selector.
    """
    cluster = _Cluster(pods, namespaces)
    by_namespace: dict[str, list[Mapping[str, Any]]] = {}
    for policy in policies:
        namespace = (policy.get("metadata") or {}).get("namespace", "")
        by_namespace.setdefault(namespace, []).append(policy)
    compiled = {}
    for pod in cluster.pods if targets is None else [t for t in targets if t.ip]:
        allowed: dict[str, set[Rule] | None] = {INGRESS: None, EGRESS: None}
        for policy in by_namespace.get(pod.namespace, []):
            spec = policy.get("spec") or {}
            if not matches(spec.get("podSelector") or {}, pod.labels):
                continue
            for direction in policy_types(policy):
                rules = allowed[direction]
                if rules is None:
                    rules = allowed[direction] = set()
                key = "ingress" if direction == INGRESS else "egress"
                for rule in spec.get(key) or []:
                    rules |= _rules(rule, direction, pod.namespace, pod, cluster)
        compiled[pod.ip] = PodRules(pod.ip, _sorted(allowed[INGRESS]), _sorted(allowed[EGRESS]))
    return compiled


def _sorted(rules: set[Rule] | None) -> tuple[Rule, ...] | None:
    if rules is None:
        return None
    return tuple(
        sorted(rules, key=lambda r: (r.cidr or "", r.protocol or "", r.first or 0, r.last or 0))
    )
