"""Applying manifests: CRDs (create or replace, then wait until Established) and plain
objects (server-side apply)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from stackube.errors import TemporaryError
from stackube.kube.client import REQUEST_TIMEOUT
from stackube.kube.errors import translating


@translating("apply CRDs")
def apply_crds(api: k8s.ApiClient, crds: Iterable[dict[str, Any]], timeout: float = 30) -> None:
    ext = k8s.ApiextensionsV1Api(api)
    names = []
    for crd in crds:
        name = crd["metadata"]["name"]
        names.append(name)
        try:
            current = ext.read_custom_resource_definition(name)
        except ApiException as exc:
            if exc.status != 404:
                raise
            ext.create_custom_resource_definition(crd)
            continue
        version = current.metadata.resource_version
        ext.replace_custom_resource_definition(
            name, {**crd, "metadata": {**crd["metadata"], "resourceVersion": version}}
        )
    deadline = time.monotonic() + timeout
    for name in names:
        while not _established(ext, name):
            if time.monotonic() > deadline:
                raise TemporaryError(f"CRD {name} not Established within {timeout}s")
            time.sleep(0.2)


def _established(ext: k8s.ApiextensionsV1Api, name: str) -> bool:
    conditions = ext.read_custom_resource_definition(name).status.conditions or []
    return any(c.type == "Established" and c.status == "True" for c in conditions)


# (apiVersion, kind) -> (URL prefix, plural, namespaced): the kinds Stackube applies.
APPLY_KINDS: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "Endpoints"): ("/api/v1", "endpoints", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("networking.k8s.io/v1", "NetworkPolicy"): (
        "/apis/networking.k8s.io/v1",
        "networkpolicies",
        True,
    ),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("/apis/discovery.k8s.io/v1", "endpointslices", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "clusterroles",
        False,
    ),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "clusterrolebindings",
        False,
    ),
    ("rbac.authorization.k8s.io/v1", "Role"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "roles",
        True,
    ),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): (
        "/apis/rbac.authorization.k8s.io/v1",
        "rolebindings",
        True,
    ),
    ("storage.k8s.io/v1", "CSIDriver"): ("/apis/storage.k8s.io/v1", "csidrivers", False),
    ("storage.k8s.io/v1", "StorageClass"): ("/apis/storage.k8s.io/v1", "storageclasses", False),
    ("node.k8s.io/v1", "RuntimeClass"): ("/apis/node.k8s.io/v1", "runtimeclasses", False),
    ("admissionregistration.k8s.io/v1", "MutatingAdmissionPolicy"): (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicies",
        False,
    ),
    ("admissionregistration.k8s.io/v1", "MutatingAdmissionPolicyBinding"): (
        "/apis/admissionregistration.k8s.io/v1",
        "mutatingadmissionpolicybindings",
        False,
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy"): (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicies",
        False,
    ),
    ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding"): (
        "/apis/admissionregistration.k8s.io/v1",
        "validatingadmissionpolicybindings",
        False,
    ),
}


def object_path(body: Mapping[str, Any]) -> str:
    """The REST path of one object of a kind in APPLY_KINDS (pure)."""
    key = (str(body.get("apiVersion")), str(body.get("kind")))
    if key not in APPLY_KINDS:
        raise ValueError(f"cannot apply {key[1]} ({key[0]}): not a kind Stackube applies")
    prefix, plural, namespaced = APPLY_KINDS[key]
    meta = body["metadata"]
    if namespaced:
        return f"{prefix}/namespaces/{meta['namespace']}/{plural}/{meta['name']}"
    return f"{prefix}/{plural}/{meta['name']}"


@translating("server-side apply")
def server_side_apply(
    api: k8s.ApiClient, documents: Iterable[Mapping[str, Any]], field_manager: str
) -> None:
    """Apply each object (create or update the fields this manager owns), as
    `kubectl apply --server-side --force-conflicts` does: one PATCH, idempotent."""
    for doc in documents:
        _request(
            api,
            "PATCH",
            doc,
            query_params=[("fieldManager", field_manager), ("force", "true")],
            header_params={"Content-Type": "application/apply-patch+yaml"},
            body=dict(doc),
        )


@translating("delete")
def delete_objects(api: k8s.ApiClient, documents: Iterable[Mapping[str, Any]]) -> int:
    """Delete each object of a kind in APPLY_KINDS (only apiVersion, kind and metadata
    name/namespace are read); absent ones are fine. Returns how many were deleted."""
    deleted = 0
    for doc in documents:
        try:
            _request(api, "DELETE", doc)
        except ApiException as exc:
            if exc.status != 404:
                raise
            continue
        deleted += 1
    return deleted


def _request(
    api: k8s.ApiClient,
    method: str,
    doc: Mapping[str, Any],
    *,
    query_params: list[tuple[str, str]] | None = None,
    header_params: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> None:
    """One call on the object's REST path (object_path), with the client's credentials
    and REQUEST_TIMEOUT; raises ApiException for an error status."""
    request = api.param_serialize(
        method,
        object_path(doc),
        query_params=query_params,
        header_params={"Accept": "application/json", **(header_params or {})},
        body=body,
        auth_settings=["BearerToken"],
    )
    response = api.call_api(*request, _request_timeout=REQUEST_TIMEOUT)
    response.read()
    api.response_deserialize(response, {"200": "object", "201": "object", "202": "object"})
