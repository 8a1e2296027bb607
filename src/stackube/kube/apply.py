"""Applying manifests: CRDs (create or replace, then wait until Established) and plain
objects (create; already there is fine)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from kubernetes import client as k8s
from kubernetes import utils as k8s_utils
from kubernetes.client.exceptions import ApiException

from stackube.errors import TemporaryError
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


@translating("apply manifests")
def create_missing(api: k8s.ApiClient, documents: Iterable[dict[str, Any]]) -> None:
    for doc in documents:
        try:
            k8s_utils.create_from_dict(api, doc)
        except k8s_utils.FailToCreateError as exc:
            if not all(e.status == 409 for e in exc.api_exceptions):
                raise
