"""Pods as the node's CNI daemon sees them: which are bound to this node, and how it
tells a pod (and the people reading it) that its network is broken or mended."""

from __future__ import annotations

import datetime
import secrets

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from stackube.kube.client import REQUEST_TIMEOUT
from stackube.kube.errors import translating

TERMINAL_PHASES = ("Succeeded", "Failed")


@translating("list pods on the node")
def pod_uids_on_node(api: k8s.ApiClient, node: str) -> set[str]:
    """UIDs of the pods bound to `node` that have not finished (spec.nodeName)."""
    listed = k8s.CoreV1Api(api).list_pod_for_all_namespaces(
        field_selector=f"spec.nodeName={node}", _request_timeout=REQUEST_TIMEOUT
    )
    return {
        str(pod.metadata.uid)
        for pod in listed.items
        if not (pod.status and pod.status.phase in TERMINAL_PHASES)
    }


@translating("set pod condition")
def set_pod_condition(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    condition: str,
    *,
    ok: bool,
    reason: str,
    message: str,
) -> None:
    """A condition in the pod's status (strategic merge on `type`): a pod that lists it
    under spec.readinessGates is Ready only while it is True. A pod that is gone is not
    an error."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {
        "status": {
            "conditions": [
                {
                    "type": condition,
                    "status": "True" if ok else "False",
                    "reason": reason,
                    "message": message,
                    "lastTransitionTime": now,
                }
            ]
        }
    }
    try:
        k8s.CoreV1Api(api).patch_namespaced_pod_status(
            name, namespace, body, _request_timeout=REQUEST_TIMEOUT
        )
    except ApiException as exc:
        if exc.status != 404:
            raise


def pod_event(
    api: k8s.ApiClient,
    namespace: str,
    name: str,
    uid: str,
    *,
    reason: str,
    message: str,
    warning: bool,
    component: str,
    host: str,
) -> None:
    """A core/v1 Event on the pod (what `kubectl describe pod` shows)."""
    object_event(
        api,
        "Pod",
        namespace,
        name,
        uid,
        reason=reason,
        message=message,
        warning=warning,
        component=component,
        host=host,
    )


@translating("record event")
def object_event(
    api: k8s.ApiClient,
    kind: str,
    namespace: str,
    name: str,
    uid: str,
    *,
    reason: str,
    message: str,
    warning: bool,
    component: str,
    host: str,
) -> None:
    """A core/v1 Event on a namespaced core/v1 object (what `kubectl describe` shows)."""
    now = datetime.datetime.now(datetime.UTC)
    body = k8s.CoreV1Event(
        metadata=k8s.V1ObjectMeta(name=f"{name}.{secrets.token_hex(8)}", namespace=namespace),
        involved_object=k8s.V1ObjectReference(
            api_version="v1", kind=kind, namespace=namespace, name=name, uid=uid
        ),
        reason=reason,
        message=message,
        type="Warning" if warning else "Normal",
        source=k8s.V1EventSource(component=component, host=host),
        reporting_component=component,
        reporting_instance=host,
        first_timestamp=now,
        last_timestamp=now,
        count=1,
    )
    k8s.CoreV1Api(api).create_namespaced_event(namespace, body, _request_timeout=REQUEST_TIMEOUT)
