"""The Kubernetes objects the controller reads and writes, behind small functions."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from stackube.api.types import API_VERSION, GROUP, NETWORK_PLURAL, TENANT_PLURAL, VERSION
from stackube.kube.client import REQUEST_TIMEOUT
from stackube.kube.errors import translating


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    terminating: bool = False


def _absent_is_none(exc: ApiException) -> None:
    if exc.status != 404:
        raise exc


@translating("read namespace")
def get_namespace(api: k8s.ApiClient, name: str) -> Namespace | None:
    try:
        raw = k8s.CoreV1Api(api).read_namespace(name, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        _absent_is_none(exc)
        return None
    terminating = raw.metadata.deletion_timestamp is not None or raw.status.phase == "Terminating"
    return Namespace(name, dict(raw.metadata.labels or {}), terminating)


@translating("create namespace")
def create_namespace(api: k8s.ApiClient, name: str, labels: dict[str, str]) -> None:
    body = k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels))
    k8s.CoreV1Api(api).create_namespace(body, _request_timeout=REQUEST_TIMEOUT)


@translating("label namespace")
def label_namespace(api: k8s.ApiClient, name: str, labels: Mapping[str, str | None]) -> None:
    """Set these labels on a namespace (a None value removes the label)."""
    k8s.CoreV1Api(api).patch_namespace(
        name, {"metadata": {"labels": labels}}, _request_timeout=REQUEST_TIMEOUT
    )


@translating("delete namespace")
def delete_namespace(api: k8s.ApiClient, name: str) -> None:
    try:
        k8s.CoreV1Api(api).delete_namespace(name, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        _absent_is_none(exc)


@translating("read node")
def node_readiness(
    api: k8s.ApiClient, name: str, since: datetime | None = None
) -> tuple[bool, str]:
    """(Ready, why not): the Node's Ready condition, or that it is not registered; with
    `since` (timezone-aware), a condition the kubelet last posted before then is not
    Ready (it may predate a restart of the node)."""
    try:
        node = k8s.CoreV1Api(api).read_node(name, _request_timeout=REQUEST_TIMEOUT)
    except ApiException as exc:
        _absent_is_none(exc)
        return False, "not registered"
    conditions = node.status.conditions if node.status else None
    ready = [c for c in conditions or [] if c.type == "Ready"]
    if not ready:
        return False, "no Ready condition"
    heartbeat = ready[0].last_heartbeat_time
    if since is not None and (heartbeat is None or heartbeat < since.replace(microsecond=0)):
        return False, f"status last posted at {heartbeat}, before {since:%H:%M:%S}"
    return ready[0].status == "True", str(ready[0].message)


@translating("apply role binding")
def apply_role_binding(api: k8s.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    """Create the RoleBinding, or replace it if it differs (roleRef is immutable: a
    changed roleRef means delete and create)."""
    rbac = k8s.RbacAuthorizationV1Api(api)
    name = body["metadata"]["name"]
    try:
        current = api.sanitize_for_serialization(
            rbac.read_namespaced_role_binding(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        )
    except ApiException as exc:
        _absent_is_none(exc)
        rbac.create_namespaced_role_binding(namespace, body, _request_timeout=REQUEST_TIMEOUT)
        return
    if current.get("roleRef") != body["roleRef"]:
        rbac.delete_namespaced_role_binding(name, namespace, _request_timeout=REQUEST_TIMEOUT)
        rbac.create_namespaced_role_binding(namespace, body, _request_timeout=REQUEST_TIMEOUT)
    elif current.get("subjects") != body["subjects"] or any(
        current["metadata"].get("labels", {}).get(k) != v
        for k, v in body["metadata"].get("labels", {}).items()
    ):
        rbac.patch_namespaced_role_binding(name, namespace, body, _request_timeout=REQUEST_TIMEOUT)


@translating("delete role binding")
def delete_role_binding(api: k8s.ApiClient, namespace: str, name: str) -> bool:
    """True if it was there."""
    try:
        k8s.RbacAuthorizationV1Api(api).delete_namespaced_role_binding(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return False
    return True


def _read_pod(api: k8s.ApiClient, namespace: str, name: str) -> Any | None:
    try:
        return k8s.CoreV1Api(api).read_namespaced_pod(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return None


@translating("read pod")
def pod_labels(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, str] | None:
    """A pod's labels; None if there is no such pod."""
    pod = _read_pod(api, namespace, name)
    return None if pod is None else dict(pod.metadata.labels or {})


@translating("read pod")
def pod_uid(api: k8s.ApiClient, namespace: str, name: str) -> str | None:
    """A pod's UID; None if there is no such pod."""
    pod = _read_pod(api, namespace, name)
    return None if pod is None else str(pod.metadata.uid)


@translating("read Deployment")
def deployment_replicas(api: k8s.ApiClient, namespace: str, name: str) -> tuple[int, int] | None:
    """(available replicas, desired replicas) of a Deployment; None if it is not there."""
    try:
        found = k8s.AppsV1Api(api).read_namespaced_deployment(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return None
    status, spec = found.status, found.spec
    desired = spec.replicas if spec and spec.replicas is not None else 1
    return int((status.available_replicas if status else 0) or 0), int(desired)


@translating("read secret")
def secret_value(api: k8s.ApiClient, namespace: str, name: str, key: str) -> str | None:
    try:
        secret = k8s.CoreV1Api(api).read_namespaced_secret(
            name, namespace, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return None
    data = (secret.data or {}).get(key)
    return None if data is None else base64.b64decode(data).decode()


@translating("annotate Tenant")
def annotate_tenant(api: k8s.ApiClient, name: str, annotations: dict[str, str]) -> None:
    try:
        k8s.CustomObjectsApi(api).patch_cluster_custom_object(
            GROUP,
            VERSION,
            TENANT_PLURAL,
            name,
            {"metadata": {"annotations": annotations}},
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        _absent_is_none(exc)


# ---- Network objects --------------------------------------------------------------------
@translating("read Network")
def get_network(api: k8s.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        found = cast(
            dict[str, Any],
            k8s.CustomObjectsApi(api).get_namespaced_custom_object(
                GROUP, VERSION, namespace, NETWORK_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return None
    return found


@translating("patch Network status")
def patch_network_status(
    api: k8s.ApiClient, namespace: str, name: str, status: dict[str, Any]
) -> bool:
    """Merge `status` into the Network's status (subresource); False if it is gone."""
    try:
        k8s.CustomObjectsApi(api).patch_namespaced_custom_object_status(
            GROUP,
            VERSION,
            namespace,
            NETWORK_PLURAL,
            name,
            {"status": status},
            _request_timeout=REQUEST_TIMEOUT,
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return False
    return True


FINALIZER_ATTEMPTS = 3  # reads and patches before a concurrent writer's 409 is raised


@translating("remove a Network's finalizer")
def remove_network_finalizer(api: k8s.ApiClient, namespace: str, name: str, finalizer: str) -> None:
    """Drop `finalizer` from the Network's metadata.finalizers: a merge patch that carries
    the resourceVersion read, so a concurrent change (kopf writing its progress, the
    status) fails it with 409 instead of being overwritten; then it is read and patched
    again, up to FINALIZER_ATTEMPTS times. Nothing to do if the Network is gone or lacks
    that finalizer."""
    custom = k8s.CustomObjectsApi(api)
    for attempt in range(1, FINALIZER_ATTEMPTS + 1):
        network = get_network(api, namespace, name)
        meta = (network or {}).get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        if finalizer not in finalizers:
            return
        body = {
            "metadata": {
                "finalizers": [f for f in finalizers if f != finalizer],
                "resourceVersion": meta.get("resourceVersion"),
            }
        }
        try:
            custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                namespace,
                NETWORK_PLURAL,
                name,
                body,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return
        except ApiException as exc:
            if exc.status == 409 and attempt < FINALIZER_ATTEMPTS:
                continue
            _absent_is_none(exc)
            return


@translating("list PersistentVolumeClaims")
def claim_names(api: k8s.ApiClient, namespace: str) -> list[str]:
    """The names of the namespace's PersistentVolumeClaims (sorted)."""
    claims = k8s.CoreV1Api(api).list_namespaced_persistent_volume_claim(
        namespace, _request_timeout=REQUEST_TIMEOUT
    )
    return sorted(str(c.metadata.name) for c in claims.items)


@translating("read Tenant")
def get_tenant(api: k8s.ApiClient, name: str) -> dict[str, Any] | None:
    try:
        found = cast(
            dict[str, Any],
            k8s.CustomObjectsApi(api).get_cluster_custom_object(
                GROUP, VERSION, TENANT_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
            ),
        )
    except ApiException as exc:
        _absent_is_none(exc)
        return None
    return found


@translating("list Networks")
def list_networks(api: k8s.ApiClient, namespace: str) -> list[dict[str, Any]]:
    found = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(api).list_namespaced_custom_object(
            GROUP, VERSION, namespace, NETWORK_PLURAL, _request_timeout=REQUEST_TIMEOUT
        ),
    )
    return list(found.get("items", []))


def _list_cluster(api: k8s.ApiClient, plural: str) -> list[dict[str, Any]]:
    found = cast(
        dict[str, Any],
        k8s.CustomObjectsApi(api).list_cluster_custom_object(
            GROUP, VERSION, plural, _request_timeout=REQUEST_TIMEOUT
        ),
    )
    return list(found.get("items", []))


@translating("list Tenants")
def list_tenants(api: k8s.ApiClient) -> list[dict[str, Any]]:
    return _list_cluster(api, TENANT_PLURAL)


@translating("list Networks")
def list_all_networks(api: k8s.ApiClient) -> list[dict[str, Any]]:
    return _list_cluster(api, NETWORK_PLURAL)


@translating("create Network")
def create_network(
    api: k8s.ApiClient, namespace: str, name: str, spec: dict[str, Any], labels: dict[str, str]
) -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "Network",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": spec,
    }
    try:
        k8s.CustomObjectsApi(api).create_namespaced_custom_object(
            GROUP, VERSION, namespace, NETWORK_PLURAL, body, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 409:  # created meanwhile: fine, level-based
            raise


@translating("delete Network")
def delete_network(api: k8s.ApiClient, namespace: str, name: str) -> None:
    try:
        k8s.CustomObjectsApi(api).delete_namespaced_custom_object(
            GROUP, VERSION, namespace, NETWORK_PLURAL, name, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        _absent_is_none(exc)
