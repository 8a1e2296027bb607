"""Kubernetes objects (as the watches give them) -> the compiler's input, for one
router's scope (pure).

A scope is the set of namespaces one Neutron router serves: a Tenant's namespace, or
every namespace on the system network. Pods of other scopes are never peers: their
addresses are on other Neutron networks (they may even overlap with this scope's),
and what reaches this scope from them comes through the external network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from stackube.api.objects import ObjectIndex
from stackube.netpol.compiler import Pod, PodRules, compile_policies

TERMINAL_PHASES = ("Succeeded", "Failed")
# The scope of every namespace on the system network (decision 0010): not a namespace
# name (those are DNS labels); one router serves them all.
SYSTEM_SCOPE = "*system*"


def pod_of(obj: Mapping[str, Any], ip: str | None = None) -> Pod | None:
    """A pod as policies see it, or None if it has no address of its own on a pod
    network (no IP yet, host network, finished). `ip` overrides status.podIP (the node
    knows a new pod's address before its status says it)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ip = ip or status.get("podIP")
    if not ip or spec.get("hostNetwork") or status.get("phase") in TERMINAL_PHASES:
        return None
    named = tuple(
        (str(port["name"]), str(port.get("protocol") or "TCP"), int(port["containerPort"]))
        for container in spec.get("containers") or []
        for port in container.get("ports") or []
        if port.get("name") and port.get("containerPort")
    )
    return Pod(
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        str(ip),
        dict(meta.get("labels") or {}),
        named,
    )


def pod_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    """Whether a Pod event changed anything a policy can see (address, labels, named
    ports, being on a pod network at all)."""
    return (pod_of(old) if old else None) != (pod_of(new) if new else None)


@dataclass(frozen=True)
class PolicyInput:
    """What one scope's NetworkPolicies are compiled from, copied from the watches
    (under their lock) so that compiling needs none."""

    members: tuple[str, ...]  # the namespaces the scope's router serves
    policies: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    namespace_labels: dict[str, dict[str, str]]

    def compile(self, targets: Iterable[Pod] | None = None) -> dict[str, PodRules]:
        """compile_scope over this input."""
        return compile_scope(self.members, self.policies, self.pods, self.namespace_labels, targets)


def policy_input(
    members: Sequence[str],
    policies: ObjectIndex,
    pods: ObjectIndex,
    namespace_labels: Mapping[str, Mapping[str, str]],
) -> PolicyInput:
    """A scope's input from the watched objects; its pods are copied only when it has
    policies (without any, nothing is compiled)."""
    own = [o for ns in members for o in policies.in_namespace(ns)]
    return PolicyInput(
        tuple(members),
        own,
        [o for ns in members for o in pods.in_namespace(ns)] if own else [],
        {ns: dict(namespace_labels.get(ns) or {}) for ns in members},
    )


def compile_scope(
    scope: Iterable[str],
    policies: Iterable[Mapping[str, Any]],
    pods: Iterable[Mapping[str, Any]],
    namespace_labels: Mapping[str, Mapping[str, str]],
    targets: Iterable[Pod] | None = None,
) -> dict[str, PodRules]:
    """{pod IP: PodRules} for the pods of the namespaces in `scope` (or for `targets`,
    pods of the scope), with only those pods as peers; policies and pods of other
    namespaces are ignored.

    Raises compiler.PolicyError / selectors.SelectorError (see compile_policies).
    """
    members = set(scope)
    own_policies = [p for p in policies if (p.get("metadata") or {}).get("namespace") in members]
    if not own_policies:
        return {}
    own_pods = [
        pod for pod in (pod_of(o) for o in pods) if pod is not None and pod.namespace in members
    ]
    labels = {name: namespace_labels.get(name) or {} for name in members}
    compiled = compile_policies(own_policies, own_pods, labels, targets)
    # Pods no policy isolates need nothing written.
    return {ip: r for ip, r in compiled.items() if r.ingress is not None or r.egress is not None}
