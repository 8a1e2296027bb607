"""The RBAC a tenant gets (pure): in its namespace only, each Keystone role of its
project is worth the built-in ClusterRole the `role-mapping` configuration names
(default reader=view, member=edit, admin=admin). The auth webhook puts a user in one
group per role of its token; one RoleBinding per ClusterRole binds those groups.
The default service account gets nothing extra."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from stackube.api.naming import role_group, tenant_labels
from stackube.config import BINDABLE_CLUSTER_ROLES

ROLE_BINDING_PREFIX = "stackube-"
# What older controllers made: the whole project group bound to `admin`. Deleted on
# upgrade (see stale_role_bindings), since it gave every member of the project admin.
LEGACY_ROLE_BINDING = "stackube-tenant-admins"


def role_binding_name(cluster_role: str) -> str:
    return f"{ROLE_BINDING_PREFIX}{cluster_role}"


# Every RoleBinding name this controller has ever made in a tenant namespace.
CONTROLLER_ROLE_BINDINGS = (
    LEGACY_ROLE_BINDING,
    *(role_binding_name(r) for r in BINDABLE_CLUSTER_ROLES),
)


def tenant_role_bindings(
    tenant: str, project_id: str, mapping: tuple[tuple[str, str], ...]
) -> list[dict[str, Any]]:
    """One RoleBinding in namespace `tenant` per distinct ClusterRole of `mapping`
    ((Keystone role, ClusterRole) pairs), named `stackube-<cluster role>`, whose
    subjects are the role groups of the Keystone roles mapped to it; ClusterRoles in
    first-mapped order, subjects in mapping order. An empty mapping binds nothing.
    Raises ValueError for a ClusterRole outside BINDABLE_CLUSTER_ROLES (the
    configuration parser refuses those already: this is the last line of defence)."""
    groups: dict[str, list[str]] = {}
    for role, cluster_role in mapping:
        if cluster_role not in BINDABLE_CLUSTER_ROLES:
            raise ValueError(f"ClusterRole {cluster_role!r} may not be bound to tenants")
        subjects = groups.setdefault(cluster_role, [])
        if role not in subjects:
            subjects.append(role)
    return [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": role_binding_name(cluster_role),
                "namespace": tenant,
                "labels": tenant_labels(tenant, project_id),
            },
            # A built-in ClusterRole bound in one namespace: its rights there only,
            # never cluster-scoped writes (even `admin` cannot edit ResourceQuotas).
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_role,
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "Group",
                    "name": role_group(project_id, role),
                }
                for role in roles
            ],
        }
        for cluster_role, roles in groups.items()
    ]


def stale_role_bindings(existing_names: Iterable[str], wanted: list[dict[str, Any]]) -> list[str]:
    """Names among `existing_names` (a tenant namespace's RoleBindings) that this
    controller made at some time but that `wanted` (tenant_role_bindings' answer) no
    longer holds: LEGACY_ROLE_BINDING and `stackube-<cluster role>` for a bindable
    ClusterRole no longer mapped. Other names, `stackube-*` or not, are the tenant's
    own and never listed. Sorted, without duplicates."""
    wanted_names = {str(b["metadata"]["name"]) for b in wanted}
    return sorted(
        {n for n in existing_names if n in CONTROLLER_ROLE_BINDINGS and n not in wanted_names}
    )
