"""A small reflector: list, then watch, a kind of object, keeping a local copy and
telling a callback about every change; re-lists when the watch expires (410 Gone) or
the connection drops. One thread per kind."""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from kubernetes.watch.watch import iter_resp_lines

from stackube.api.objects import Key, key_of
from stackube.api.types import GROUP, NETWORK_PLURAL, VERSION
from stackube.kube.client import REQUEST_TIMEOUT

log = logging.getLogger(__name__)

OnChange = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


def _raise_for_status(response: Any) -> None:
    """Unparsed responses are not checked by the client: an error must not read as an
    empty list (that would delete every object from the store)."""
    if not 200 <= int(response.status) <= 299:
        raise ApiException(status=response.status, reason=response.data[:300].decode())


class Reflector:
    """`list_call(**kw)` is a generated list function of the Kubernetes client. Lists and
    watch events are read as plain JSON: the client's model classes cost milliseconds per
    object, which a burst of thousands of Services turns into a backlog of minutes."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        on_change: OnChange,
        *,
        stop: threading.Event,
        timeout_seconds: int = 300,
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.on_change = on_change
        self.stop = stop
        self.timeout_seconds = timeout_seconds
        self.store: dict[Key, dict[str, Any]] = {}
        self.synced = threading.Event()

    def _relist(self) -> str:
        response = self.list_call(_preload_content=False, _request_timeout=REQUEST_TIMEOUT)
        try:
            _raise_for_status(response)
            listed = json.loads(response.data)
        finally:
            response.release_conn()
        fresh = {key_of(item): item for item in listed.get("items") or []}
        for key in set(self.store) - set(fresh):
            self.on_change(self.name, self.store.pop(key), None)
        for key, item in fresh.items():
            old = self.store.get(key)
            self.store[key] = item
            if old != item:
                self.on_change(self.name, old, item)
        self.synced.set()
        return str((listed.get("metadata") or {}).get("resourceVersion") or "")

    def _events(self, version: str) -> Iterator[dict[str, Any]]:
        response = self.list_call(
            watch=True,
            resource_version=version,
            timeout_seconds=self.timeout_seconds,
            allow_watch_bookmarks=True,
            _preload_content=False,
            # Connect as any call; reading waits out the server's own watch timeout
            # (bookmarks and events come sooner), so a dead connection ends too.
            _request_timeout=(REQUEST_TIMEOUT, self.timeout_seconds + REQUEST_TIMEOUT),
        )
        try:
            _raise_for_status(response)
            for line in iter_resp_lines(response):
                if line and not line.isspace():
                    yield json.loads(line)
        finally:
            response.close()
            response.release_conn()

    def _apply(self, kind: str, item: dict[str, Any]) -> None:
        key = key_of(item)
        old = self.store.get(key)
        if kind == "DELETED":
            self.store.pop(key, None)
            self.on_change(self.name, old, None)
        else:
            self.store[key] = item
            self.on_change(self.name, old, item)

    def run(self) -> None:
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    version = self._relist()
                for event in self._events(version):
                    if self.stop.is_set():
                        return
                    kind, item = event["type"], event["object"]
                    if kind == "ERROR":  # 410 Gone: our version is too old; re-list
                        log.info("watch %s: %s; re-listing", self.name, item.get("message"))
                        version = ""
                        break
                    version = str((item.get("metadata") or {}).get("resourceVersion") or version)
                    if kind != "BOOKMARK":
                        self._apply(kind, item)
            except ApiException as exc:
                if exc.status == 410:
                    version = ""
                    continue
                log.warning("watch %s: %s; retrying", self.name, exc.reason)
                self.stop.wait(1)
            except Exception as exc:  # noqa: BLE001 - connection drops: re-list and go on
                log.warning("watch %s: %s; re-listing", self.name, exc)
                version = ""
                self.stop.wait(1)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        thread.start()
        return thread


def _list_networks(api: Any) -> Callable[..., Any]:
    return functools.partial(
        k8s.CustomObjectsApi(api).list_cluster_custom_object, GROUP, VERSION, NETWORK_PLURAL
    )


def network_reflector(api: Any, on_change: OnChange, stop: threading.Event) -> Reflector:
    """Stackube Networks of the whole cluster."""
    return Reflector("networks", _list_networks(api), on_change, stop=stop)


def node_pod_reflector(
    api: Any, node: str, on_change: OnChange, stop: threading.Event
) -> Reflector:
    """The pods bound to one node (all namespaces)."""
    pods = functools.partial(
        k8s.CoreV1Api(api).list_pod_for_all_namespaces, field_selector=f"spec.nodeName={node}"
    )
    return Reflector("pods", pods, on_change, stop=stop)


def policy_reflectors(api: Any, on_change: OnChange, stop: threading.Event) -> dict[str, Reflector]:
    """What NetworkPolicy enforcement reads: Pods, NetworkPolicies and Namespaces of the
    whole cluster."""
    calls = {
        "namespaces": k8s.CoreV1Api(api).list_namespace,
        "pods": k8s.CoreV1Api(api).list_pod_for_all_namespaces,
        "networkpolicies": k8s.NetworkingV1Api(api).list_network_policy_for_all_namespaces,
    }
    return {name: Reflector(name, call, on_change, stop=stop) for name, call in calls.items()}


def cluster_reflectors(
    api: Any, on_change: OnChange, stop: threading.Event
) -> dict[str, Reflector]:
    """Services, EndpointSlices, Stackube Networks, Namespaces, Pods and NetworkPolicies
    of the whole cluster (stackube-proxy)."""
    calls = {
        "services": k8s.CoreV1Api(api).list_service_for_all_namespaces,
        "endpointslices": k8s.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        "networks": _list_networks(api),
    }
    return {
        **policy_reflectors(api, on_change, stop),
        **{name: Reflector(name, call, on_change, stop=stop) for name, call in calls.items()},
    }
