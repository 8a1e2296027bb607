"""The RBAC a tenant gets: its project's members administer its namespace, nothing
more (pure). The default service account gets nothing extra."""

from __future__ import annotations

from typing import Any

from stackube.api.naming import TENANT_ROLE_BINDING, project_group, tenant_labels


def tenant_role_binding(tenant: str, project_id: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": TENANT_ROLE_BINDING,
            "namespace": tenant,
            "labels": tenant_labels(tenant, project_id),
        },
        # The built-in `admin` ClusterRole, bound in one namespace: full control of
        # namespaced objects there, no cluster-scoped writes, no ResourceQuota edits.
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": project_group(project_id),
            }
        ],
    }
