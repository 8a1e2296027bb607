"""Kubernetes manifests shipped with Stackube (package data, also copied to deploy/)."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any

import yaml


def _documents(name: str) -> list[dict[str, Any]]:
    text = resources.files(__name__).joinpath(name).read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def controller_rbac() -> list[dict[str, Any]]:
    """ServiceAccount, least-privilege ClusterRole/Role and their bindings."""
    return _documents("controller-rbac.yaml")


def cni_rbac() -> list[dict[str, Any]]:
    """The CNI daemon's ServiceAccount: read Networks, nothing else."""
    return _documents("cni-rbac.yaml")


def proxy_rbac() -> list[dict[str, Any]]:
    """stackube-proxy's ServiceAccount: read Services, EndpointSlices, Networks."""
    return _documents("proxy-rbac.yaml")


def admission_policies() -> list[dict[str, Any]]:
    """ValidatingAdmissionPolicies and their bindings: tenant pods stay off the node,
    the controller writes only namespaces it made, spec.password warns."""
    return _documents("admission-policies.yaml")


def cluster_dns(image: str | None = None) -> list[dict[str, Any]]:
    """The system network's cluster DNS (CoreDNS in kube-system, Service kube-dns at
    10.96.0.10); `image` replaces CoreDNS's published image (e.g. a local build)."""
    documents = _documents("cluster-dns.yaml")
    if image:
        for doc in documents:
            if doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    container["image"] = image
    return documents


def csi() -> list[dict[str, Any]]:
    """The CSI driver's CSIDriver, default StorageClass `cinder`, and its controller
    side's ServiceAccount with the sidecars' RBAC, the node plugin's (namespaces and pods: get)."""
    return _documents("csi.yaml")


def runtime_classes() -> list[dict[str, Any]]:
    """The nodes' RuntimeClasses: gvisor (handler runsc) with its declared overhead."""
    return _documents("runtime-classes.yaml")


# The seed's operator guide (stackube-docs: "Deploy Stackube") creates three files;
# they are made from deploy/'s kustomization, never edited by hand.
SEED_CONFIG = "stackube-configmap.yaml"
SEED_PROXY = "deployment/stackube-proxy.yaml"
SEED_REST = "deployment/stackube.yaml"
_SEED_HEADER = (
    "# Generated from deploy/kustomization.yaml's resources by `stackube manifests -o deploy`:\n"
    "# edit those files, not this one. The seed's name for it: docs/deploy.md.\n"
)


def seed_layout(resources_in_order: list[str], read: Callable[[str], str]) -> dict[str, str]:
    """The seed's three files from the kustomization's `resources` (paths relative to
    deploy/, in order) and `read(path) -> text`: the configuration (ConfigMap and Secret,
    `controller/config.yaml`), stackube-proxy (`proxy/...`), and everything else. Raises
    ValueError if the kustomization has no configuration or no proxy."""
    config = [r for r in resources_in_order if r == "controller/config.yaml"]
    proxy = [r for r in resources_in_order if r.startswith("proxy/")]
    rest = [r for r in resources_in_order if r not in config and r not in proxy]
    if not config or not proxy:
        raise ValueError("the kustomization lacks controller/config.yaml or proxy/ resources")

    def joined(paths: list[str]) -> str:
        parts = [f"# --- {path}\n{read(path).strip()}\n" for path in paths]
        return _SEED_HEADER + "---\n".join(parts)

    return {SEED_CONFIG: joined(config), SEED_PROXY: joined(proxy), SEED_REST: joined(rest)}
