"""Stackube's API objects as typed values, parsed from Kubernetes objects (pure).

The CRD schemas (`crds.py`) make the apiserver reject bad input first; these parsers
repeat the checks the controller relies on, so that an object written before a schema
change still gets a clear error instead of a crash.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

GROUP = "stackube.kubernetes.io"
# Objects with this label survive an uninstall: `kubectl delete -k deploy/ -l "<it>!=true"`.
KEEP_ON_UNINSTALL = f"{GROUP}/keep-on-uninstall"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
TENANT_PLURAL = "tenants"
NETWORK_PLURAL = "networks"

FINALIZER = f"{GROUP}/cleanup"
LABEL_TENANT = f"{GROUP}/tenant"
# On a LoadBalancer Service: the Neutron floating IP the controller allocated for it
# (stackube-proxy serves only such Services' status addresses).
FLOATING_IP_ANNOTATION = f"{GROUP}/floating-ip-id"
LABEL_PROJECT_ID = f"{GROUP}/project-id"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "stackube-controller"

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
KEYSTONE_ID = re.compile(r"^[0-9a-f]{32}$")
NEUTRON_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
KEYSTONE_NAME = re.compile(r"^[^\s/:]{1,64}$")
# Every tenant's DNS server lives here (controller.dns): its Deployment, Service and
# ConfigMap are named after the tenant, its pods sit on the tenant's network. Tenants
# cannot reach into it, and no ServiceAccount of a tenant namespace holds its API reads.
DNS_NAMESPACE = "stackube-dns"
# The system network: pods of every namespace no Tenant owns (default, kube-system,
# kube-public, those a cluster admin makes) join the Network of this name in this
# namespace, made by the controller from `user-cidr`/`user-gateway` under the system
# project (docs/decisions/0010). The node has an address on it; tenants never do.
SYSTEM_NAMESPACE = "kube-system"
SYSTEM_NETWORK = "system"
# Namespaces no Tenant may own: Kubernetes' own and Stackube's.
RESERVED_NAMESPACES = frozenset({"default", DNS_NAMESPACE})
RESERVED_NAMESPACE_PREFIXES = ("kube-",)
# Pod Security Admission levels a Tenant may ask for (never looser than baseline).
POD_SECURITY_LEVELS = ("baseline", "restricted")
DEFAULT_POD_SECURITY = "baseline"
# spec.defaultNetworkPolicy: the NetworkPolicy the controller keeps in the tenant's
# namespace (docs/network-policy.md): none, deny all ingress, or deny all ingress and
# egress but DNS.
DEFAULT_NETWORK_POLICIES = ("None", "DenyIngress", "DenyAll")
PSA_PREFIX = "pod-security.kubernetes.io"
# spec.runtimeClassName: the RuntimeClass of the tenant's pods (docs/runtimes.md), kept
# on its namespace for the admission policies stackube-tenant-runtime: Enforce (a
# "hard" tenant: pods run only there; the default) or Default (pods that name no
# RuntimeClass get it, others may name another).
RUNTIME_CLASS_POLICIES = ("Enforce", "Default")
LABEL_RUNTIME_CLASS = f"{GROUP}/runtime-class"
LABEL_RUNTIME_CLASS_POLICY = f"{GROUP}/runtime-class-policy"


class State(enum.StrEnum):
    """The seed's `status.state` values."""

    INITIALIZING = "Initializing"
    PENDING = "Pending"
    ACTIVE = "Active"
    FAILED = "Failed"
    TERMINATING = "Terminating"


class SpecError(ValueError):
    """A spec the controller cannot honour; the message names the field."""


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str
    key: str = "password"


@dataclass(frozen=True)
class TenantSpec:
    name: str
    username: str
    password: str | None = None
    password_secret_ref: SecretRef | None = None
    tenant_id: str | None = None
    pod_security: str = DEFAULT_POD_SECURITY
    default_network_policy: str = "None"
    runtime_class_name: str | None = None
    runtime_class_policy: str = "Enforce"

    @property
    def adopts_project(self) -> bool:
        return self.tenant_id is not None


@dataclass(frozen=True)
class NetworkSpec:
    namespace: str
    name: str
    cidr: str | None = None
    gateway: str | None = None
    network_id: str | None = None

    @property
    def adopts_network(self) -> bool:
        return self.network_id is not None


def _optional_str(spec: Mapping[str, Any], key: str) -> str | None:
    value = spec.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise SpecError(f"spec.{key} must be a string")
    return value


def check_dns_label(name: str, what: str) -> None:
    if not (len(name) <= 63 and DNS_LABEL.match(name)):
        raise SpecError(
            f"{what} {name!r} must be a DNS label: at most 63 characters of a-z, 0-9 and '-', "
            "starting and ending with a letter or digit"
        )


def parse_tenant(body: Mapping[str, Any]) -> TenantSpec:
    name = str(body.get("metadata", {}).get("name", ""))
    check_dns_label(name, "metadata.name")
    check_tenant_name(name)
    spec = body.get("spec") or {}
    username = _optional_str(spec, "username")
    if username is None:
        raise SpecError("spec.username is required")
    if not KEYSTONE_NAME.match(username):
        raise SpecError("spec.username must be 1-64 characters without whitespace, '/' or ':'")
    password = _optional_str(spec, "password")
    ref_body = spec.get("passwordSecretRef")
    ref = None
    if ref_body:
        ref = SecretRef(
            namespace=str(ref_body.get("namespace", "")),
            name=str(ref_body.get("name", "")),
            key=str(ref_body.get("key") or "password"),
        )
        if not ref.namespace or not ref.name:
            raise SpecError("spec.passwordSecretRef needs namespace and name")
    if password is not None and ref is not None:
        raise SpecError("set only one of spec.password and spec.passwordSecretRef")
    if password is None and ref is None:
        raise SpecError("spec.password or spec.passwordSecretRef is required")
    tenant_id = _optional_str(spec, "tenantID")
    if tenant_id is not None and not KEYSTONE_ID.match(tenant_id):
        raise SpecError("spec.tenantID must be a Keystone project id (32 hex digits)")
    pod_security = _optional_str(spec, "podSecurity") or DEFAULT_POD_SECURITY
    if pod_security not in POD_SECURITY_LEVELS:
        raise SpecError(f"spec.podSecurity must be one of {', '.join(POD_SECURITY_LEVELS)}")
    default_policy = _optional_str(spec, "defaultNetworkPolicy") or "None"
    if default_policy not in DEFAULT_NETWORK_POLICIES:
        raise SpecError(
            f"spec.defaultNetworkPolicy must be one of {', '.join(DEFAULT_NETWORK_POLICIES)}"
        )
    runtime_class = _optional_str(spec, "runtimeClassName")
    if runtime_class is not None and not (
        len(runtime_class) <= 63 and DNS_LABEL.match(runtime_class)
    ):
        raise SpecError("spec.runtimeClassName must name a RuntimeClass (a DNS label, e.g. gvisor)")
    runtime_policy = _optional_str(spec, "runtimeClassPolicy") or "Enforce"
    if runtime_policy not in RUNTIME_CLASS_POLICIES:
        raise SpecError(
            f"spec.runtimeClassPolicy must be one of {', '.join(RUNTIME_CLASS_POLICIES)}"
        )
    return TenantSpec(
        name, username, password, ref, tenant_id, pod_security, default_policy,
        runtime_class, runtime_policy,
    )  # fmt: skip


def check_tenant_name(name: str) -> None:
    """A Tenant owns the namespace of its name: never one of Kubernetes' or Stackube's."""
    if name in RESERVED_NAMESPACES or name.startswith(RESERVED_NAMESPACE_PREFIXES):
        raise SpecError(
            f"metadata.name {name!r} is reserved for the system (default, kube-*, "
            "stackube-dns): choose another Tenant name"
        )


def pod_security_labels(level: str) -> dict[str, str]:
    """Pod Security Admission labels of a tenant namespace: `level` enforced, restricted
    reported (warnings to the user, audit log) so tenants see what `restricted` needs."""
    return {
        f"{PSA_PREFIX}/enforce": level,
        f"{PSA_PREFIX}/enforce-version": "latest",
        f"{PSA_PREFIX}/warn": "restricted",
        f"{PSA_PREFIX}/warn-version": "latest",
        f"{PSA_PREFIX}/audit": "restricted",
        f"{PSA_PREFIX}/audit-version": "latest",
    }


def runtime_class_labels(spec: TenantSpec) -> dict[str, str | None]:
    """The tenant namespace's runtime labels (None: remove), read by the admission
    policies stackube-tenant-runtime (api/manifests/admission-policies.yaml)."""
    if spec.runtime_class_name is None:
        return {LABEL_RUNTIME_CLASS: None, LABEL_RUNTIME_CLASS_POLICY: None}
    return {
        LABEL_RUNTIME_CLASS: spec.runtime_class_name,
        LABEL_RUNTIME_CLASS_POLICY: spec.runtime_class_policy,
    }


def parse_network(body: Mapping[str, Any]) -> NetworkSpec:
    meta = body.get("metadata", {})
    namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
    check_dns_label(name, "metadata.name")
    spec = body.get("spec") or {}
    cidr = _optional_str(spec, "cidr")
    gateway = _optional_str(spec, "gateway")
    network_id = _optional_str(spec, "networkID")
    if network_id is not None and not NEUTRON_ID.match(network_id):
        raise SpecError("spec.networkID must be a Neutron network id (a UUID)")
    if network_id is None and cidr is None:
        raise SpecError("spec.cidr is required unless spec.networkID adopts a network")
    if cidr is not None:
        check_cidr_and_gateway(cidr, gateway)
    return NetworkSpec(namespace, name, cidr, gateway, network_id)


def check_cidr_and_gateway(cidr: str, gateway: str | None) -> None:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise SpecError(f"spec.cidr {cidr!r} is not a network in CIDR form: {exc}") from exc
    if net.num_addresses < 4:
        raise SpecError(f"spec.cidr {cidr!r} is too small for a subnet with a gateway")
    if gateway is None:
        return
    try:
        gw = ipaddress.ip_address(gateway)
    except ValueError as exc:
        raise SpecError(f"spec.gateway {gateway!r} is not an IP address") from exc
    if gw not in net or gw in (net.network_address, net.broadcast_address):
        raise SpecError(f"spec.gateway {gateway} is not a host address inside spec.cidr {cidr}")


def namespace_network(
    namespace: str, networks: Sequence[Mapping[str, Any]]
) -> Mapping[str, Any] | None:
    """A namespace's Network among its Network objects: the one named like the namespace
    (a Tenant's), else the only one; None when there is none or the choice is ambiguous."""
    named = [n for n in networks if (n.get("metadata") or {}).get("name") == namespace]
    if named:
        return named[0]
    return networks[0] if len(networks) == 1 else None


def is_system_network(namespace: str, name: str) -> bool:
    return (namespace, name) == (SYSTEM_NAMESPACE, SYSTEM_NETWORK)


def is_tenant_namespace(labels: Mapping[str, str]) -> bool:
    """A namespace the controller made for a Tenant (its pods never join the system
    network, even while the tenant's own Network is not there yet)."""
    return bool(labels.get(LABEL_TENANT))


def overlapping(cidr: str, other: str) -> bool:
    """Do two IPv4/IPv6 networks in CIDR form share an address? (False across versions.)"""
    a, b = ipaddress.ip_network(cidr, strict=False), ipaddress.ip_network(other, strict=False)
    return a.version == b.version and a.overlaps(b)


def is_deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))
