"""A tenant's own DNS server (pure): CoreDNS in the tenant's namespace, answering only
for that namespace's Services, reached by the tenant's pods at the cluster DNS IP
(stackube-proxy maps that IP to this Service inside the tenant's router).

Tenant networks are isolated, so one cluster-wide DNS server could not be reached by
them (nor should it answer one tenant about another's Services).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import yaml

from stackube.api.naming import DNS_SERVICE, tenant_labels

DNS_NAME = DNS_SERVICE  # Deployment, Service, ConfigMap and ServiceAccount
# The ClusterRole (read Services, EndpointSlices, Namespaces) and the one ClusterRoleBinding
# of every tenant's DNS ServiceAccount, both shipped with the controller's RBAC.
DNS_CLUSTER_ROLE = "stackube:tenant-dns"
DNS_LISTEN_PORT = 1053  # unprivileged: CoreDNS runs as a non-root user with no capabilities
DNS_HEALTH_PORT = 8080
DNS_READY_PORT = 8181
DNS_USER = 65532
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
CONFIG_DIR = "/etc/coredns"
APP_LABEL = "app.kubernetes.io/name"
CONFIG_HASH = "stackube.kubernetes.io/config-hash"


@dataclass(frozen=True)
class DnsSettings:
    image: str
    cluster_domain: str = "cluster.local"
    # Where pods reach the API server, if the `kubernetes` Service cannot take them there
    # (https://host:port); None: CoreDNS uses its in-cluster configuration.
    apiserver_url: str | None = None


def dns_subject(namespace: str) -> dict[str, str]:
    """The tenant DNS server's ServiceAccount, as a subject of the shared binding."""
    return {"kind": "ServiceAccount", "name": DNS_NAME, "namespace": namespace}


def binding_subjects(
    subjects: list[dict[str, Any]], namespace: str, present: bool
) -> list[dict[str, Any]] | None:
    """The shared ClusterRoleBinding's subjects with (or without) this namespace's DNS
    ServiceAccount; None when nothing changes."""
    mine = dns_subject(namespace)
    others = [s for s in subjects if {k: s.get(k) for k in mine} != mine]
    wanted = [*others, mine] if present else others
    return None if wanted == subjects else wanted


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
        "users": [{"name": DNS_NAME, "user": {"tokenFile": f"{SERVICE_ACCOUNT_DIR}/token"}}],
        "contexts": [{"name": DNS_NAME, "context": {"cluster": "cluster", "user": DNS_NAME}}],
        "current-context": DNS_NAME,
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _metadata(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace is not None:
        meta["namespace"] = namespace
    return meta


def dns_objects(tenant: str, project_id: str, settings: DnsSettings) -> list[dict[str, Any]]:
    """The tenant's DNS objects, in its namespace (its ServiceAccount's read access is a
    subject of the shared ClusterRoleBinding DNS_CLUSTER_ROLE: see binding_subjects)."""
    namespace = tenant
    labels = {**tenant_labels(tenant, project_id), APP_LABEL: DNS_NAME}
    selector = {APP_LABEL: DNS_NAME}
    data = {"Corefile": corefile(namespace, settings)}
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
        ],
        # No httpGet/tcpSocket probes: the kubelet probes from the node's network, which
        # cannot reach isolated (and overlapping) tenant networks.
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
            "kind": "ServiceAccount",
            "metadata": _metadata(DNS_NAME, namespace, labels),
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _metadata(DNS_NAME, namespace, labels),
            "data": data,
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": _metadata(DNS_NAME, namespace, labels),
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
            "metadata": _metadata(DNS_NAME, namespace, labels),
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": selector},
                "template": {
                    # A changed configuration rolls the pods (CoreDNS reads it at start).
                    "metadata": {"labels": labels, "annotations": {CONFIG_HASH: config_hash}},
                    "spec": {
                        "serviceAccountName": DNS_NAME,
                        # Not itself: the cluster DNS IP is this server.
                        "dnsPolicy": "Default",
                        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [container],
                        "volumes": [{"name": "config", "configMap": {"name": DNS_NAME}}],
                    },
                },
            },
        },
    ]
