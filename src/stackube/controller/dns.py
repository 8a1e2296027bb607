"""A tenant's own DNS server (pure): CoreDNS answering only for the tenant namespace's
Services, reached by the tenant's pods at the cluster DNS IP (stackube-proxy maps that
IP to this server's Service inside the tenant's router).

Tenant networks are isolated, so one cluster-wide DNS server could not be reached by
them (nor should it answer one tenant about another's Services). The servers live in
the system namespace DNS_NAMESPACE, one Deployment/Service/ConfigMap per tenant named
after it, their pods labelled with the tenant so that the CNI daemon puts them on the
tenant's network (docs/decisions/0007-tenant-dns-outside-tenant-namespaces.md): CoreDNS's
kubernetes plugin lists and watches the whole cluster, and a credential inside a tenant
namespace would be the tenant's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from stackube.api.naming import DNS_SERVICE_ACCOUNT, tenant_labels
from stackube.api.types import API_VERSION, DNS_NAMESPACE, LABEL_TENANT

DNS_APP = "stackube-dns"  # the app.kubernetes.io/name of every tenant's DNS objects
# CoreDNS runs as a non-root user with every capability dropped; the pod's own
# (namespaced, Pod Security "safe") sysctl lets it bind 53, the port NetworkPolicies
# that allow DNS name (they match the endpoint's port, after the Service's DNAT).
DNS_LISTEN_PORT = 53
UNPRIVILEGED_PORTS = {"name": "net.ipv4.ip_unprivileged_port_start", "value": str(DNS_LISTEN_PORT)}
DNS_HEALTH_PORT = 8080
DNS_READY_PORT = 8181
DNS_USER = 65532
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONFIG_DIR = "/etc/coredns"
APP_LABEL = "app.kubernetes.io/name"
CONFIG_HASH = "stackube.kubernetes.io/config-hash"
# The kinds dns_objects returns (the finalizer deletes these, by the tenant's name).
DNS_KINDS = (("apps/v1", "Deployment"), ("v1", "Service"), ("v1", "ConfigMap"))


@dataclass(frozen=True)
class DnsSettings:
    image: str
    cluster_domain: str = "cluster.local"
    # Where pods reach the API server, if the `kubernetes` Service cannot take them there
    # (https://host:port); None: CoreDNS uses its in-cluster configuration.
    apiserver_url: str | None = None


def dns_selector(tenant: str) -> dict[str, str]:
    """The labels of a tenant's DNS pods: the CNI daemon reads LABEL_TENANT to choose the
    tenant's network (only in DNS_NAMESPACE, where only the controller writes)."""
    return {APP_LABEL: DNS_APP, LABEL_TENANT: tenant}


def corefile(namespace: str, settings: DnsSettings) -> str:
    """Names of this namespace only; no forwarding (tenants have no upstream here)."""
    kubeconfig = f"        kubeconfig {CONFIG_DIR}/kubeconfig\n" if settings.apiserver_url else ""
    return (
        f".:{DNS_LISTEN_PORT} {{\n"
        "    errors\n"
        f"    health :{DNS_HEALTH_PORT}\n"
        f"    ready :{DNS_READY_PORT}\n"
        f"    kubernetes {settings.cluster_domain} in-addr.arpa ip6.arpa {{\n"
        f"{kubeconfig}"
        f"        namespaces {namespace}\n"
        "        ttl 5\n"
        "    }\n"
        "    cache 5\n"
        "    loadbalance\n"
        "}\n"
    )


def kubeconfig(apiserver_url: str) -> str:
    """The pod's own service account token and CA, at an explicit API server address."""
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "cluster",
                "cluster": {
                    "server": apiserver_url,
                    "certificate-authority": f"{SERVICE_ACCOUNT_DIR}/ca.crt",
                },
            }
        ],
        "users": [{"name": DNS_APP, "user": {"tokenFile": f"{SERVICE_ACCOUNT_DIR}/token"}}],
        "contexts": [{"name": DNS_APP, "context": {"cluster": "cluster", "user": DNS_APP}}],
        "current-context": DNS_APP,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def dns_references(tenant: str) -> list[dict[str, Any]]:
    """The tenant's DNS objects by kind and name (enough to delete them)."""
    return [
        {"apiVersion": api_version, "kind": kind, "metadata": _metadata(tenant, {})}
        for api_version, kind in DNS_KINDS
    ]


def _metadata(
    name: str, labels: dict[str, str], owners: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": DNS_NAMESPACE, "labels": labels}
    if owners:
        meta["ownerReferences"] = owners
    return meta


def dns_objects(
    tenant: str, project_id: str, settings: DnsSettings, tenant_uid: str = ""
) -> list[dict[str, Any]]:
    """The tenant's DNS objects: in DNS_NAMESPACE, each named after the tenant, running as
    the shared DNS_SERVICE_ACCOUNT (shipped with the controller's RBAC), owned by the
    Tenant (`tenant_uid`; none if empty) so that they go with it."""
    labels = {**tenant_labels(tenant, project_id), APP_LABEL: DNS_APP}
    owners = (
        [
            {
                "apiVersion": API_VERSION,
                "kind": "Tenant",
                "name": tenant,
                "uid": tenant_uid,
                "blockOwnerDeletion": False,
            }
        ]
        if tenant_uid
        else []
    )
    selector = dns_selector(tenant)
    data = {"Corefile": corefile(tenant, settings)}
    if settings.apiserver_url:
        data["kubeconfig"] = kubeconfig(settings.apiserver_url)
    config_hash = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
    container = {
        "name": "coredns",
        "image": settings.image,
        "args": ["-conf", f"{CONFIG_DIR}/Corefile"],
        "ports": [
            {"name": "dns", "containerPort": DNS_LISTEN_PORT, "protocol": "UDP"},
            {"name": "dns-tcp", "containerPort": DNS_LISTEN_PORT, "protocol": "TCP"},
            {"name": "ready", "containerPort": DNS_READY_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": DNS_HEALTH_PORT, "protocol": "TCP"},
        ],
        # The kubelet's probes reach the pod on its tenant network through the CNI
        # daemon's probe relay (docs/cni.md): Ready only once CoreDNS has synced its
        # Services and answers (the `ready` plugin), as CoreDNS's own manifests do.
        "readinessProbe": {
            "httpGet": {"path": "/ready", "port": "ready"},
            "periodSeconds": 2,
            "timeoutSeconds": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/health", "port": "health"},
            "initialDelaySeconds": 60,
            "timeoutSeconds": 5,
            "failureThreshold": 5,
        },
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"memory": "128Mi"},
        },
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": DNS_USER,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(tenant, labels, owners),
            "data": data,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(tenant, labels, owners),
            "spec": {
                "selector": selector,
                "ports": [
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "targetPort": "dns-tcp", "protocol": "TCP"},
                ],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": _metadata(tenant, labels, owners),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    # A changed configuration rolls the pods (CoreDNS reads it at start).
                    "metadata": {"labels": labels, "annotations": {CONFIG_HASH: config_hash}},
                    "spec": {
                        "serviceAccountName": DNS_SERVICE_ACCOUNT,
                        # Not itself: the cluster DNS IP is this server.
                        "dnsPolicy": "Default",
                        "securityContext": {
                            "seccompProfile": {"type": "RuntimeDefault"},
                            "sysctls": [UNPRIVILEGED_PORTS],
                        },
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": tenant}}],
                    },
                },
            },
        },
    ]


def dns_readiness(tenant: str, replicas: tuple[int, int] | None) -> tuple[bool, str]:
    """Whether a tenant's DNS server answers (its Deployment has an available replica:
    the readiness probe on CoreDNS's `ready` plugin passed), and why not."""
    where = f"Deployment {DNS_NAMESPACE}/{tenant}"
    if replicas is None:
        return False, f"waiting for the tenant's DNS server ({where} is not there yet)"
    available, desired = replicas
    if available >= 1:
        return True, f"the tenant's DNS server answers ({where}: {available}/{desired} ready)"
    return False, (
        f"waiting for the tenant's DNS server ({where}: {available}/{desired} ready; "
        f"`kubectl -n {DNS_NAMESPACE} describe deployment {tenant}` says why)"
    )
