"""NetworkPolicy inside each local pod's network namespace (docs/decisions/
0013-network-policy.md): the traffic a pod exchanges with peers on its own subnet,
which never meets the tenant's router (stackube-proxy enforces the rest there).

Fed by watches of Pods (all namespaces: peers may run on other nodes), NetworkPolicies
and Namespaces; the local pods come from the daemon's journal (their network
namespace, address and network). A pass rewrites a pod's two chains only when what
they should hold changed; a pod whose scope has no policy gets nothing written at all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from stackube.api.objects import ObjectIndex
from stackube.api.types import DNS_NAMESPACE, is_tenant_namespace
from stackube.errors import StackubeError
from stackube.netpol.compiler import Pod, PodRules, PolicyError
from stackube.netpol.render import POD_JUMPS, Chains, pod_chains, restore_text
from stackube.netpol.selectors import SelectorError
from stackube.netpol.view import SYSTEM_SCOPE, pod_changed, pod_of, policy_input

log = logging.getLogger("stackube.cni.netpol")

KINDS = ("pods", "networkpolicies", "namespaces")


class PodTables(Protocol):
    """iptables in a pod's network namespace, by path (stackube.host.iptables)."""

    def chains(self, netns: str, table: str) -> set[str]: ...
    def restore(self, netns: str, text: str) -> None: ...
    def ensure_jump(self, netns: str, table: str, chain: str, target: str) -> bool: ...


@dataclass(frozen=True)
class LocalPod:
    """A pod on this node, as the journal and its network know it."""

    netns: str  # the path of its network namespace
    namespace: str
    name: str
    ip: str
    cidr: str  # its subnet
    gateway: str
    host: str = ""  # this node's address on the pod's network, if any (never policed)


class PodPolicyEngine:
    """Keeps every local pod's NetworkPolicy chains what the policies say."""

    def __init__(
        self,
        tables: PodTables,
        local_pods: Callable[[], list[LocalPod]],
        dns_namespace: str = DNS_NAMESPACE,
    ) -> None:
        self.tables = tables
        self.local_pods = local_pods
        self.dns_namespace = dns_namespace
        self._objects = {kind: ObjectIndex() for kind in KINDS}
        self._labels: dict[str, dict[str, str]] = {}
        self._changed = threading.Condition()
        self._dirty = True
        # One pass at a time; what each pod's namespace holds: netns -> chains.
        self._lock = threading.Lock()
        self._applied: dict[str, Chains] = {}
        self._seen: set[str] = set()  # netns looked at since the start

    # ---- input ---------------------------------------------------------------------------
    def on_change(self, kind: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._changed:
            self._objects[kind].apply(old, new)
            if kind == "namespaces":
                name = str(((new or old or {}).get("metadata") or {}).get("name", ""))
                if new is None:
                    self._labels.pop(name, None)
                else:
                    self._labels[name] = dict((new.get("metadata") or {}).get("labels") or {})
            elif kind == "pods" and not pod_changed(old, new):
                return
            self._dirty = True
            self._changed.notify()

    def _scope(self, namespace: str) -> str:
        """(Under self._changed.) Whose network a namespace's pods are on."""
        return namespace if is_tenant_namespace(self._labels.get(namespace) or {}) else SYSTEM_SCOPE

    def _members(self, scope: str) -> list[str]:
        """(Under self._changed.)"""
        if scope != SYSTEM_SCOPE:
            return [scope]
        every = set(self._labels) | self._objects["pods"].namespaces()
        return sorted(
            ns for ns in every if ns != self.dns_namespace and self._scope(ns) == SYSTEM_SCOPE
        )

    def _rules(self, pods: list[LocalPod]) -> dict[str, PodRules]:
        """{netns: PodRules} for the local pods some policy isolates. A pod's labels
        and named ports come from the Pod watch, its address from the journal (so a
        new pod is covered before its status shows the address)."""
        with self._changed:
            targets: dict[str, list[tuple[LocalPod, Pod]]] = {}
            for local in pods:
                obj = self._objects["pods"].get(local.namespace, local.name)
                target = pod_of(obj, local.ip) if obj is not None else None
                if target is not None and local.namespace != self.dns_namespace:
                    targets.setdefault(self._scope(local.namespace), []).append((local, target))
            inputs = {
                scope: policy_input(
                    self._members(scope),
                    self._objects["networkpolicies"],
                    self._objects["pods"],
                    self._labels,
                )
                for scope in targets
            }
        found = {}
        for scope, scope_input in inputs.items():
            chosen = targets[scope]
            compiled = scope_input.compile([t for _, t in chosen])
            for local, target in chosen:
                if target.ip in compiled:
                    found[local.netns] = compiled[target.ip]
        return found

    # ---- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event, period: float = 10.0) -> None:
        """Sync whenever something changed, and every `period` s (pods that came up
        meanwhile, a netns whose rules were lost); errors are logged, never fatal."""
        while not stop.is_set():
            with self._changed:
                if not self._dirty:
                    self._changed.wait(period)
                self._dirty = False
            if stop.is_set():
                return
            try:
                self.sync()
            except Exception:  # a bug or an odd kernel answer: say so, keep going
                log.exception("NetworkPolicy pass failed; trying again")
                stop.wait(1)

    def sync(self) -> int:
        """One pass over the local pods; returns how many pods' chains were written."""
        with self._lock:
            pods = [p for p in self.local_pods() if p.ip and p.netns]
            try:
                by_netns = self._rules(pods)
            except (PolicyError, SelectorError) as exc:
                log.warning("NetworkPolicy not applied: %s", exc)
                return 0
            written = 0
            for pod in pods:
                rules = by_netns.get(pod.netns)
                had = self._applied.get(pod.netns)
                if had is None and pod.netns not in self._seen:
                    had = self._left_over(pod)
                if rules is None and had is None:
                    continue  # never isolated: nothing written, nothing to undo
                wanted = pod_chains(
                    rules or PodRules(pod.ip, None, None), pod.cidr, pod.gateway, pod.host
                )
                if wanted == had:
                    continue
                try:
                    self._apply(pod, wanted, first=pod.netns not in self._applied)
                except StackubeError as exc:  # the pod may just have gone
                    log.warning(
                        "pod %s/%s: NetworkPolicy not applied: %s", pod.namespace, pod.ip, exc
                    )
                    continue
                self._applied[pod.netns] = wanted
                self._seen.add(pod.netns)
                written += 1
            here = {p.netns for p in pods}
            for netns in set(self._applied) - here:
                del self._applied[netns]
            self._seen &= here
            return written

    def _left_over(self, pod: LocalPod) -> Chains | None:
        """A pod first seen since the start: chains an earlier daemon wrote there (to be
        rewritten, emptied if no policy isolates the pod now), or None."""
        try:
            found = self.tables.chains(pod.netns, "filter")
        except StackubeError:
            return None
        self._seen.add(pod.netns)
        return {c: ("(unknown)",) for c in found if c.startswith("STKB-NETPOL")} or None

    def _apply(self, pod: LocalPod, chains: Chains, *, first: bool) -> None:
        self.tables.restore(pod.netns, restore_text(chains))
        if first:
            for table, chain, target in POD_JUMPS:
                self.tables.ensure_jump(pod.netns, table, chain, target)
        log.info(
            "pod %s in %s: NetworkPolicy chains written (%d rules)",
            pod.ip,
            pod.namespace,
            sum(len(rules) for rules in chains.values()),
        )
