"""Names Stackube derives for what it creates (pure, stable, unique)."""

from __future__ import annotations

from collections.abc import Mapping

from stackube.api.types import GROUP, LABEL_MANAGED_BY, LABEL_TENANT, MANAGED_BY

PROJECT_TAG = "stackube-tenant"
PROJECT_GROUP_PREFIX = "stackube:project:"
# The one ServiceAccount of the tenants' DNS servers (in api.types.DNS_NAMESPACE):
# cluster-wide list/watch of Services, EndpointSlices and Namespaces, which CoreDNS's
# kubernetes plugin needs.
DNS_SERVICE_ACCOUNT = "tenant-dns"
# Ports the CNI daemon makes for pods carry this device_owner.
POD_PORT_DEVICE_OWNER = "compute:kubestack"
# Each node's own port on the system network (its address there: the host and the API
# server reach system pods through it), and the host's link that carries it.
NODE_PORT_DEVICE_OWNER = "compute:stackube-node"
NODE_LINK = "stackube0"
# The Keystone project that owns the system network (not a Tenant: no users).
SYSTEM_PROJECT_TAG = "stackube-system"


def node_port_name(node: str) -> str:
    """The Neutron name of a node's port on the system network."""
    return f"stackube-node-{node}"


def neutron_name(namespace: str, name: str) -> str:
    """Network, subnet and router of Network <namespace>/<name>, as the seed showed
    (`kube-test-test`)."""
    return f"kube-{namespace}-{name}"


def project_group(project_id: str) -> str:
    """The Kubernetes group of a Keystone project's members (the auth webhook emits it)."""
    return f"{PROJECT_GROUP_PREFIX}{project_id}"


def role_group(project_id: str, role: str) -> str:
    """The Kubernetes group of those holding Keystone role `role` on the project
    (`stackube:project:<project id>:role:<role>`; the auth webhook emits one per role
    in the token, the controller's RoleBindings name them)."""
    return f"{PROJECT_GROUP_PREFIX}{project_id}:role:{role}"


def tenant_labels(tenant: str, project_id: str) -> dict[str, str]:
    return {
        f"{GROUP}/tenant": tenant,
        f"{GROUP}/project-id": project_id,
        "app.kubernetes.io/managed-by": "stackube-controller",
    }


def owns_namespace(labels: Mapping[str, str], tenant: str) -> bool:
    """Whether a namespace with these labels is the one the controller made for this
    Tenant (both labels, as the admission policy stackube-controller-writes demands)."""
    return labels.get(LABEL_TENANT) == tenant and labels.get(LABEL_MANAGED_BY) == MANAGED_BY
