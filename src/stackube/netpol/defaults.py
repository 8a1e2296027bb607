"""The per-Tenant default NetworkPolicy (Tenant spec.defaultNetworkPolicy), as the
controller applies it into the tenant's namespace (pure).

The two shapes are the Kubernetes documentation's "default deny all ingress traffic"
and "default deny all ingress and all egress traffic", the latter keeping DNS (port 53,
UDP and TCP, to any address): without it no name resolves, which is never what a
tenant asking for isolation means. The tenant's own policies add what they allow.
"""

from __future__ import annotations

from typing import Any

DEFAULT_POLICY_NAME = "stackube-default-deny"
NETWORKING_API = "networking.k8s.io/v1"
DNS_PORTS = [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]


def default_policy_reference(namespace: str) -> dict[str, Any]:
    """The object by kind and name (enough to delete it)."""
    return {
        "apiVersion": NETWORKING_API,
        "kind": "NetworkPolicy",
        "metadata": {"name": DEFAULT_POLICY_NAME, "namespace": namespace},
    }


def default_policy(namespace: str, mode: str, labels: dict[str, str]) -> dict[str, Any] | None:
    """The NetworkPolicy for `mode` ("None", "DenyIngress", "DenyAll"; None: no policy).

    Raises ValueError for another mode (the CRD's enum keeps them out).
    """
    if mode == "None":
        return None
    if mode == "DenyIngress":
        spec: dict[str, Any] = {"podSelector": {}, "policyTypes": ["Ingress"]}
    elif mode == "DenyAll":
        spec = {
            "podSelector": {},
            "policyTypes": ["Ingress", "Egress"],
            "egress": [{"ports": DNS_PORTS}],
        }
    else:
        raise ValueError(f"unknown default NetworkPolicy {mode!r}")
    body = default_policy_reference(namespace)
    body["metadata"]["labels"] = labels
    body["spec"] = spec
    return body
