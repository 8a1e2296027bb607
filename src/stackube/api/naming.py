"""Names Stackube derives for what it creates (pure, stable, unique)."""

from __future__ import annotations

from stackube.api.types import GROUP

PROJECT_TAG = "stackube-tenant"
TENANT_ROLE_BINDING = "stackube-tenant-admins"
PROJECT_GROUP_PREFIX = "stackube:project:"
# Each tenant namespace's DNS server (its Service, Deployment, ...); the proxy maps the
# cluster DNS IP to this Service.
DNS_SERVICE = "stackube-dns"
# Ports the CNI daemon makes for pods carry this device_owner.
POD_PORT_DEVICE_OWNER = "compute:kubestack"


def neutron_name(namespace: str, name: str) -> str:
    """Network, subnet and router of Network <namespace>/<name>, as the seed showed
    (`kube-test-test`)."""
    return f"kube-{namespace}-{name}"


def project_group(project_id: str) -> str:
    """The Kubernetes group of a Keystone project's members (the auth webhook emits it)."""
    return f"{PROJECT_GROUP_PREFIX}{project_id}"


def tenant_labels(tenant: str, project_id: str) -> dict[str, str]:
    return {
        f"{GROUP}/tenant": tenant,
        f"{GROUP}/project-id": project_id,
        "app.kubernetes.io/managed-by": "stackube-controller",
    }
