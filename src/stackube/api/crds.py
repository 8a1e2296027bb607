"""The CustomResourceDefinitions of Tenant and Network (pure data).

Structural schemas with OpenAPI and CEL validation, so the apiserver itself refuses bad
input with a message naming the field; the status subresource; printer columns.
`deploy/crds/*.yaml` is generated from here (`stackube manifests crds`).
"""

from __future__ import annotations

from typing import Any

from stackube.api.types import (
    DEFAULT_NETWORK_POLICIES,
    DEFAULT_POD_SECURITY,
    GROUP,
    KEEP_ON_UNINSTALL,
    NETWORK_PLURAL,
    POD_SECURITY_LEVELS,
    RESERVED_NAMESPACE_PREFIXES,
    RESERVED_NAMESPACES,
    RUNTIME_CLASS_POLICIES,
    TENANT_PLURAL,
    VERSION,
    State,
)

# *.kubernetes.io groups are protected; we keep the 2017 group name for compatibility.
APPROVAL = {
    "api-approved.kubernetes.io": (
        "unapproved, kept from Stackube 2017 (stackube.kubernetes.io) for compatibility"
    )
}

_NAME_RULE = {
    "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') "
    "&& size(self.metadata.name) <= 63",
    "message": "metadata.name must be a DNS label (a-z, 0-9, '-', at most 63 characters)",
}

_RESERVED_RULE = {
    "rule": "!(self.metadata.name in "
    + repr(sorted(RESERVED_NAMESPACES)).replace('"', "'")
    + ")"
    + "".join(f" && !self.metadata.name.startsWith('{p}')" for p in RESERVED_NAMESPACE_PREFIXES),
    "message": "metadata.name is reserved for the system (default, kube-*, stackube-dns): "
    "a Tenant owns the namespace of its name",
}

_CONDITIONS = {
    "type": "array",
    "x-kubernetes-list-type": "map",
    "x-kubernetes-list-map-keys": ["type"],
    "items": {
        "type": "object",
        "required": ["type", "status"],
        "properties": {
            "type": {"type": "string"},
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": {"type": "string"},
            "message": {"type": "string"},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "lastTransitionTime": {"type": "string", "format": "date-time"},
        },
    },
}


def _status(ids: dict[str, str]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "state": {"type": "string", "enum": [s.value for s in State]},
        "message": {"type": "string"},
        "observedGeneration": {"type": "integer", "format": "int64"},
        "conditions": _CONDITIONS,
    }
    props.update({key: {"type": "string", "description": text} for key, text in ids.items()})
    return {"type": "object", "properties": props}


def _with_tenant_summary(status: dict[str, Any]) -> dict[str, Any]:
    """A Network's status, plus (on a Tenant's default Network) its Tenant's state for
    the tenant's users, who cannot read Tenants."""
    status["properties"]["tenant"] = {
        "type": "object",
        "description": "the Tenant's state, message and DNS readiness (default Network only)",
        "properties": {
            "state": {"type": "string", "enum": [s.value for s in State]},
            "message": {"type": "string"},
            "dnsReady": {"type": "boolean"},
        },
    }
    return status


def _crd(
    kind: str, plural: str, scope: str, schema: dict[str, Any], columns: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        # Uninstalling Stackube keeps the CRDs, hence every Tenant and Network (docs/deploy.md).
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": APPROVAL,
            "labels": {KEEP_ON_UNINSTALL: "true"},
        },
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
                "categories": ["stackube"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {"openAPIV3Schema": schema},
                    "additionalPrinterColumns": columns,
                }
            ],
        },
    }


def tenant_crd() -> dict[str, Any]:
    spec = {
        "type": "object",
        "required": ["username"],
        "properties": {
            "username": {
                "type": "string",
                "minLength": 1,
                "maxLength": 64,
                "pattern": "^[^\\s/:]+$",
                "description": "Keystone user made for the tenant (no whitespace, '/', ':').",
            },
            "password": {
                "type": "string",
                "minLength": 1,
                "description": "Discouraged (kept for the 2017 API): use passwordSecretRef.",
            },
            "passwordSecretRef": {
                "type": "object",
                "required": ["namespace", "name"],
                "properties": {
                    "namespace": {"type": "string", "minLength": 1},
                    "name": {"type": "string", "minLength": 1},
                    "key": {"type": "string", "default": "password"},
                },
            },
            "tenantID": {
                "type": "string",
                "pattern": "^([0-9a-f]{32})?$",
                "description": "Adopt this existing Keystone project instead of creating one.",
            },
            "podSecurity": {
                "type": "string",
                "enum": list(POD_SECURITY_LEVELS),
                "default": DEFAULT_POD_SECURITY,
                "description": "Pod Security Admission level enforced in the tenant's "
                "namespace (restricted is stricter; nothing looser than baseline).",
            },
            "defaultNetworkPolicy": {
                "type": "string",
                "enum": list(DEFAULT_NETWORK_POLICIES),
                "default": "None",
                "description": "A NetworkPolicy the controller keeps in the tenant's "
                "namespace (stackube-default-deny): DenyIngress isolates every pod for "
                "ingress, DenyAll for ingress and egress but DNS (port 53); the "
                "tenant's own policies then allow what they name.",
            },
            "runtimeClassName": {
                "type": "string",
                "maxLength": 63,
                "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                "description": "RuntimeClass of the tenant's pods (e.g. gvisor: each pod in "
                "its own gVisor sandbox); unset: the node's default (runc). Pods already "
                "running keep theirs.",
            },
            "runtimeClassPolicy": {
                "type": "string",
                "enum": list(RUNTIME_CLASS_POLICIES),
                "default": "Enforce",
                "description": "Enforce: the tenant's pods run only with runtimeClassName "
                "(pods naming none get it, others are refused); Default: pods naming none "
                "get it. Ignored without runtimeClassName.",
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "has(self.password) || has(self.passwordSecretRef)",
                "message": "spec.password or spec.passwordSecretRef is required",
            },
            {
                "rule": "!(has(self.password) && has(self.passwordSecretRef))",
                "message": "set only one of spec.password and spec.passwordSecretRef",
            },
            {
                "rule": "(has(self.tenantID) ? self.tenantID : '') == "
                "(has(oldSelf.tenantID) ? oldSelf.tenantID : '')",
                "message": "spec.tenantID is immutable",
            },
            {"rule": "self.username == oldSelf.username", "message": "spec.username is immutable"},
        ],
    }
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": spec,
            "status": _status({"projectID": "Keystone project id", "userID": "Keystone user id"}),
        },
        "x-kubernetes-validations": [_NAME_RULE, _RESERVED_RULE],
    }
    columns: list[dict[str, Any]] = [
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "Project", "type": "string", "jsonPath": ".status.projectID"},
        {"name": "Message", "type": "string", "jsonPath": ".status.message", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("Tenant", TENANT_PLURAL, "Cluster", schema, columns)


def network_crd() -> dict[str, Any]:
    spec = {
        "type": "object",
        "properties": {
            "cidr": {
                "type": "string",
                "maxLength": 43,
                "x-kubernetes-validations": [
                    {
                        "rule": "isCIDR(self)",
                        "message": "spec.cidr must be a CIDR, e.g. 10.244.0.0/16",
                    },
                    {
                        "rule": "!isCIDR(self) || cidr(self).masked() == cidr(self)",
                        "message": "spec.cidr must be a network address (host bits zero)",
                    },
                ],
            },
            "gateway": {
                "type": "string",
                "maxLength": 39,
                "x-kubernetes-validations": [
                    {"rule": "isIP(self)", "message": "spec.gateway must be an IP address"}
                ],
            },
            "networkID": {
                "type": "string",
                "pattern": "^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})?$",
                "description": "Adopt this existing Neutron network instead of creating one.",
            },
        },
        "x-kubernetes-validations": [
            {
                "rule": "has(self.cidr) || (has(self.networkID) && self.networkID != '')",
                "message": "spec.cidr is required unless spec.networkID adopts a network",
            },
            {
                # Comparing IP objects costs too much for the CEL budget: compare text.
                "rule": "!has(self.gateway) || !has(self.cidr) || !isCIDR(self.cidr) "
                "|| !isIP(self.gateway) || (cidr(self.cidr).containsIP(self.gateway) "
                "&& self.gateway != self.cidr.split('/')[0])",
                "message": "spec.gateway must be a host address inside spec.cidr",
            },
            *(
                {
                    "rule": f"(has(self.{field}) ? self.{field} : '') == "
                    f"(has(oldSelf.{field}) ? oldSelf.{field} : '')",
                    "message": f"spec.{field} is immutable: create another Network instead",
                }
                for field in ("networkID", "cidr", "gateway")
            ),
        ],
    }
    schema = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "spec": spec,
            "status": _with_tenant_summary(
                _status(
                    {
                        "networkID": "Neutron network id",
                        "subnetID": "Neutron subnet id",
                        "routerID": "Neutron router id",
                        "routerExternalIP": "the router's address on the external network, "
                        "where NodePort and LoadBalancer traffic enters it",
                    }
                )
            ),
        },
        "x-kubernetes-validations": [_NAME_RULE],
    }
    columns: list[dict[str, Any]] = [
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        {"name": "CIDR", "type": "string", "jsonPath": ".spec.cidr"},
        {"name": "Gateway", "type": "string", "jsonPath": ".spec.gateway", "priority": 1},
        {"name": "Network ID", "type": "string", "jsonPath": ".status.networkID"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd("Network", NETWORK_PLURAL, "Namespaced", schema, columns)


def all_crds() -> list[dict[str, Any]]:
    return [tenant_crd(), network_crd()]
