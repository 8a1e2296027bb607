"""A small reflector: list, then watch, a kind of object, keeping a local copy and
telling a callback about every change; re-lists when the watch expires (410 Gone) or
the connection drops. One thread per kind."""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from stackube.api.objects import Key, key_of
from stackube.api.types import GROUP, NETWORK_PLURAL, VERSION

log = logging.getLogger(__name__)

OnChange = Callable[[str, dict[str, Any] | None, dict[str, Any] | None], None]


class Reflector:
    """`list_call(**kw)` is a list function returning a dict (`_preload_content=False`
    not needed: we ask for plain dicts via the API client's sanitize)."""

    def __init__(
        self,
        name: str,
        list_call: Callable[..., Any],
        to_dict: Callable[[Any], dict[str, Any]],
        on_change: OnChange,
        *,
        stop: threading.Event,
        timeout_seconds: int = 300,
    ) -> None:
        self.name = name
        self.list_call = list_call
        self.to_dict = to_dict
        self.on_change = on_change
        self.stop = stop
        self.timeout_seconds = timeout_seconds
        self.store: dict[Key, dict[str, Any]] = {}
        self.synced = threading.Event()

    def _relist(self) -> str:
        listed = self.to_dict(self.list_call())
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

    def run(self) -> None:
        version = ""
        while not self.stop.is_set():
            try:
                if not version:
                    version = self._relist()
                stream = watch.Watch().stream(
                    self.list_call,
                    resource_version=version,
                    timeout_seconds=self.timeout_seconds,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if self.stop.is_set():
                        return
                    obj = event["object"]
                    item = obj if isinstance(obj, dict) else self.to_dict(obj)
                    meta = item.get("metadata") or {}
                    version = str(meta.get("resourceVersion") or version)
                    kind = event["type"]
                    if kind == "BOOKMARK":
                        continue
                    if kind == "ERROR":
                        version = ""
                        break
                    key = key_of(item)
                    old = self.store.get(key)
                    if kind == "DELETED":
                        self.store.pop(key, None)
                        self.on_change(self.name, old, None)
                    else:
                        self.store[key] = item
                        self.on_change(self.name, old, item)
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
    to_dict = api.sanitize_for_serialization
    return Reflector("networks", _list_networks(api), to_dict, on_change, stop=stop)


def cluster_reflectors(
    api: Any, on_change: OnChange, stop: threading.Event
) -> dict[str, Reflector]:
    """Services, EndpointSlices and Stackube Networks of the whole cluster."""
    to_dict = api.sanitize_for_serialization
    calls = {
        "services": k8s.CoreV1Api(api).list_service_for_all_namespaces,
        "endpointslices": k8s.DiscoveryV1Api(api).list_endpoint_slice_for_all_namespaces,
        "networks": _list_networks(api),
    }
    return {
        name: Reflector(name, call, to_dict, on_change, stop=stop) for name, call in calls.items()
    }
