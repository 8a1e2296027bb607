"""The devbox's kube-apiserver (with etcd, controller-manager, scheduler) for real."""

from __future__ import annotations

import time

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from tests.integration.conftest import unique

pytestmark = pytest.mark.integration


def wait_gone(read: object, *args: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            read(*args)  # type: ignore[operator]
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        time.sleep(0.5)
    raise AssertionError(f"{args} still present after {timeout}s")


def test_apiserver_reports_the_pinned_version(kube: k8s.ApiClient) -> None:
    info = k8s.VersionApi(kube).get_code()
    assert info.git_version == "v1.37.2"


def test_namespace_create_list_delete(kube: k8s.ApiClient) -> None:
    core = k8s.CoreV1Api(kube)
    name = unique("stkb-it")
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))
    try:
        assert name in {ns.metadata.name for ns in core.list_namespace().items}
        # The controller-manager's namespace controller finalizes deletion.
    finally:
        core.delete_namespace(name)
    wait_gone(core.read_namespace, name)


def test_custom_resource_definition_serves_objects(kube: k8s.ApiClient) -> None:
    ext = k8s.ApiextensionsV1Api(kube)
    custom = k8s.CustomObjectsApi(kube)
    plural = unique("widgets").replace("-", "")
    group = "it.stackube.kubernetes.io"
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            # *.kubernetes.io groups are protected; the seed's API group needs this too.
            "annotations": {"api-approved.kubernetes.io": "unapproved, stackube integration test"},
        },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": plural[:-1], "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "properties": {"size": {"type": "integer", "minimum": 1}},
                                }
                            },
                        }
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(crd)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = ext.read_custom_resource_definition(f"{plural}.{group}").status
            if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                break
            time.sleep(0.2)
        body = {
            "apiVersion": f"{group}/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 3},
        }
        custom.create_namespaced_custom_object(group, "v1", "default", plural, body)
        got = custom.get_namespaced_custom_object(group, "v1", "default", plural, "w")
        assert got["spec"] == {"size": 3}
        bad = {**body, "metadata": {"name": "bad"}, "spec": {"size": 0}}
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(group, "v1", "default", plural, bad)
        assert refused.value.status == 422
    finally:
        ext.delete_custom_resource_definition(f"{plural}.{group}")
    wait_gone(ext.read_custom_resource_definition, f"{plural}.{group}")
