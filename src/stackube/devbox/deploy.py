"""The devbox's kustomize overlay of deploy/: Stackube's image pinned by digest, and the
`stackube-config` ConfigMap and `stackube-credentials` Secret made from the devbox's own
configuration (the files the host-process components read), as an operator's overlay
would, and patches for what this devbox's node differs in (its paths under the state
and cache directories, one node). `kubectl apply -k <overlay>` then deploys what
deploy/ describes, with this devbox's values (decision 0018; docs/deploy.md).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stackube.api.manifests import SEED_CONFIG, SEED_PROXY, SEED_REST
from stackube.api.types import KEEP_ON_UNINSTALL
from stackube.devbox import gvisor
from stackube.devbox.csi import DRIVER
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.node import CRI_NAMESPACE, NodePaths
from stackube.devbox.pki import PkiStore
from stackube.devbox.settings import DevboxSettings

# What deploy/'s workloads name; the overlay replaces it with the built image's digest.
PLACEHOLDER_IMAGE = "localhost/stackube"
NAMESPACE = "kube-system"


def overlay_kustomization(
    deploy: str, image: str, config: Mapping[str, str], secret: Mapping[str, str]
) -> dict[str, Any]:
    """The overlay's kustomization.yaml: `deploy` (deploy/, relative to the overlay: kustomize
    takes no absolute paths), `image` (`<registry>/<repository>@sha256:<digest>`), and the
    ConfigMap's and Secret's data (replacing deploy/'s examples entirely). Raises
    ValueError for an image not pinned by digest or a value kustomize cannot carry."""
    name, sep, digest = image.partition("@")
    if not sep or not digest.startswith("sha256:"):
        raise ValueError(f"{image}: the image must be pinned by digest (name@sha256:...)")

    def generated(values: Mapping[str, str]) -> list[str]:
        for key, value in values.items():
            if "\n" in value or "=" in key:
                raise ValueError(f"{key}: a kustomize literal takes one line and no '=' in keys")
        return [f"{key}={values[key]}" for key in sorted(values)]

    options = {"disableNameSuffixHash": True}  # the workloads mount them by these names
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [deploy],
        "images": [{"name": PLACEHOLDER_IMAGE, "newName": name, "digest": digest}],
        "configMapGenerator": [
            {
                "name": "stackube-config",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "literals": generated(config),
                "options": options,
            }
        ],
        "secretGenerator": [
            {
                "name": "stackube-credentials",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "literals": generated(secret),
                "options": options,
            }
        ],
    }


def _key_files(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text().strip() for path in sorted(directory.iterdir())}


# ---- the devbox's patches (pure) ------------------------------------------------------
def _replace(*items: dict[str, Any]) -> list[dict[str, Any]]:
    """A strategic-merge list that replaces the base's list entirely."""
    return [{"$patch": "replace"}, *items]


def cni_patch(settings: DevboxSettings, paths: NodePaths) -> dict[str, Any]:
    """stackube-cni with this devbox's node paths, each mounted at its own path."""
    node_cni = paths.cni_socket.parent  # bin/, net.d/, state/ and the socket
    runsc_bin = settings.gvisor_bin_dir
    probe = json.dumps({"cniVersion": "1.0.0", "socket": str(paths.cni_socket)})
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": "/etc/stackube/config", "readOnly": True},
        {"name": "secret", "mountPath": "/etc/stackube/secret", "readOnly": True},
        {"name": "node-cni", "mountPath": str(node_cni)},
        {"name": "netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer"},
        {"name": "cri", "mountPath": str(paths.containerd_socket)},
        {"name": "runsc-bin", "mountPath": str(runsc_bin), "readOnly": True},
        {"name": "runsc-state", "mountPath": str(paths.runsc_root)},
    ]
    return _workload_patch(
        "DaemonSet",
        "stackube-cni",
        {
            "template": {
                "spec": {
                    "initContainers": [
                        {
                            "name": "install-cni",
                            "args": [
                                "cni-install",
                                f"--bin-dir={paths.cni_bin}",
                                f"--conf-dir={paths.cni_conf}",
                                f"--socket={paths.cni_socket}",
                            ],
                            "volumeMounts": _replace(
                                {"name": "node-cni", "mountPath": str(node_cni)}
                            ),
                        }
                    ],
                    "containers": [
                        {
                            "name": "daemon",
                            "args": [
                                "cni-daemon",
                                "--config-dir=/etc/stackube/config",
                                "--secret-dir=/etc/stackube/secret",
                                f"--socket={paths.cni_socket}",
                                f"--state-dir={paths.cni_state}",
                                f"--cri-endpoint=unix://{paths.containerd_socket}",
                                f"--cluster-dns={settings.cluster_dns_ip}",
                                f"--cluster-domain={settings.cluster_domain}",
                                f"--runsc={runsc_bin / gvisor.RUNSC}",
                                f"--runsc-root={paths.runsc_root / CRI_NAMESPACE}",
                            ],
                            "livenessProbe": {
                                "exec": {
                                    "command": [
                                        "sh",
                                        "-c",
                                        f"echo '{probe}' | CNI_COMMAND=STATUS"
                                        f" {paths.cni_bin / 'kubestack'}",
                                    ]
                                }
                            },
                            "volumeMounts": _replace(*mounts),
                        }
                    ],
                    "volumes": _replace(
                        {"name": "config", "configMap": {"name": "stackube-config"}},
                        {"name": "secret", "secret": {"secretName": "stackube-credentials"}},
                        _host("node-cni", node_cni, "DirectoryOrCreate"),
                        _host("netns", Path("/run/netns"), "DirectoryOrCreate"),
                        _host("cri", paths.containerd_socket, "Socket"),
                        _host("runsc-bin", runsc_bin, "Directory"),
                        _host("runsc-state", paths.runsc_root, "DirectoryOrCreate"),
                    ),
                }
            }
        },
    )


def _workload_patch(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch of the kube-system `kind` (DaemonSet or Deployment) `name`."""
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


def _host(name: str, path: Path, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": str(path), "type": kind}}


def proxy_patch(settings: DevboxSettings) -> dict[str, Any]:
    """stackube-proxy with this devbox's ranges, serving NodePorts on the node's
    InternalIP only (never the machine's uplink)."""
    proxy = {
        "name": "proxy",
        "args": [
            "proxy",
            f"--cluster-dns={settings.cluster_dns_ip}",
            f"--service-cidr={settings.service_cidr}",
            f"--nodeport-addresses={settings.external_host_address}/32",
        ],
    }
    return _workload_patch(
        "DaemonSet", "stackube-proxy", {"template": {"spec": {"containers": [proxy]}}}
    )


def replicas_patch(name: str, replicas: int) -> dict[str, Any]:
    return _workload_patch("Deployment", name, {"replicas": replicas})


def auth_patch(settings: DevboxSettings) -> dict[str, Any]:
    """stackube-auth for this devbox's API audience (its service-account issuer)."""
    doc = replicas_patch("stackube-auth", 1)
    doc["spec"]["template"] = {
        "spec": {
            # Its one node carries no control-plane label (a kubelet may not set one).
            "nodeSelector": {"node-role.kubernetes.io/control-plane": None},
            "containers": [
                {
                    "name": "webhook",
                    "args": [
                        "auth-webhook",
                        "--config-dir=/etc/stackube/config",
                        "--secret-dir=/etc/stackube/secret",
                        "--tls-cert=/etc/stackube/tls/tls.crt",
                        "--tls-key=/etc/stackube/tls/tls.key",
                        "--client-ca=/etc/stackube/tls/client-ca.crt",
                        "--bind-address=127.0.0.1",
                        "--port=8443",
                        "--cache-ttl=20",
                        f"--audiences={settings.service_account_issuer}",
                    ],
                }
            ],
        }
    }
    return doc


def csi_node_patch(paths: NodePaths) -> dict[str, Any]:
    """stackube-csi-node with this devbox's kubelet root (kubelet keeps it a shared
    mount), mounted at its own path."""
    kubelet = paths.kubelet_dir
    plugin = kubelet / "plugins" / DRIVER
    plugin_container = {
        "name": "csi-plugin",
        "args": [
            "csi",
            "--mode=node",
            f"--endpoint=unix://{plugin / 'csi.sock'}",
            f"--state-dir={plugin / 'state'}",
            f"--registration-dir={kubelet / 'plugins_registry'}",
            "--config-dir=/etc/stackube/config",
            "--secret-dir=/etc/stackube/secret",
            "--host-cgroups=/host/sys/fs/cgroup",
        ],
        "livenessProbe": {"exec": {"command": ["test", "-S", str(plugin / "csi.sock")]}},
        "volumeMounts": [
            {"name": "kubelet-dir", "mountPath": str(kubelet), "mountPropagation": "Bidirectional"}
        ],
    }
    return _workload_patch(
        "DaemonSet",
        "stackube-csi-node",
        {
            "template": {
                "spec": {
                    "containers": [plugin_container],
                    "volumes": [_host("kubelet-dir", kubelet, "Directory")],
                }
            }
        },
    )


def csi_controller_patch(settings: DevboxSettings) -> dict[str, Any]:
    """stackube-csi-controller: one replica, the sidecars' health on this devbox's ports."""
    doc = replicas_patch("stackube-csi-controller", 1)
    containers = []
    for name, port in (
        ("csi-provisioner", settings.ports.csi_provisioner),
        ("csi-attacher", settings.ports.csi_attacher),
    ):
        containers.append(
            {
                "name": name,
                # Only the endpoint differs: the rest as in deploy/ (a list replaces).
                "args": [*_CSI_SIDECAR_ARGS[name], f"--http-endpoint=127.0.0.1:{port}", "--v=2"],
                "ports": _replace({"name": name.removeprefix("csi-"), "containerPort": port}),
            }
        )
    doc["spec"]["template"] = {"spec": {"containers": containers}}
    return doc


_CSI_SIDECAR_COMMON = (
    "--csi-address=/csi/csi.sock",
    "--leader-election",
    "--leader-election-namespace=kube-system",
    "--timeout=120s",
)
_CSI_SIDECAR_ARGS = {
    "csi-provisioner": [*_CSI_SIDECAR_COMMON, "--extra-create-metadata"],
    "csi-attacher": list(_CSI_SIDECAR_COMMON),
}


def devbox_patches(settings: DevboxSettings, paths: NodePaths) -> list[dict[str, Any]]:
    """The overlay's strategic-merge patches (pure: no I/O)."""
    return [
        cni_patch(settings, paths),
        proxy_patch(settings),
        replicas_patch("stackube-controller", 1),
        auth_patch(settings),
        csi_controller_patch(settings),
        csi_node_patch(paths),
    ]


def pod_network_workloads(rendered: str) -> list[str]:
    """`kind/name` of the rendered Deployments and DaemonSets in kube-system whose pods
    are on the pod network (not the host's), but those kept on uninstall."""
    found = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        meta = doc["metadata"]
        kept = (meta.get("labels") or {}).get(KEEP_ON_UNINSTALL) == "true"
        host = doc["spec"]["template"]["spec"].get("hostNetwork", False)
        if meta.get("namespace") == NAMESPACE and not host and not kept:
            found.append(f"{doc['kind'].lower()}/{meta['name']}")
    return found


AUTH_TLS_FILES = ("tls.crt", "tls.key", "client-ca.crt")
OVERLAY_BASES = ("deploy", "seed", "helm")
HELM_RENDERED = "helm-rendered.yaml"  # what the chart rendered, in the overlay


def auth_tls_generator() -> dict[str, Any]:
    """The webhook's TLS Secret from the overlay's `tls/` files (replacing the example)."""
    return {
        "name": "stackube-auth-tls",
        "namespace": NAMESPACE,
        "behavior": "replace",
        "type": "kubernetes.io/tls",
        "files": [f"tls/{name}" for name in AUTH_TLS_FILES],
        "options": {"disableNameSuffixHash": True},
    }


def write_overlay(
    settings: DevboxSettings, deploy_dir: Path, image: str, base: str = "deploy"
) -> Path:
    """The overlay directory (`<state>/deploy`, mode 0700: it holds the password and the
    webhook's key): `base` with this devbox's image, configuration, webhook TLS and node
    paths. `base`: "deploy" (deploy/), "seed" (copies of the seed's three files made
    from it), or "helm" (HELM_RENDERED in the overlay: what a post-renderer got).
    Raises ValueError for another base."""
    if base not in OVERLAY_BASES:
        raise ValueError(f"{base}: not one of {', '.join(OVERLAY_BASES)}")
    overlay = settings.state_dir / "deploy"
    overlay.mkdir(mode=0o700, exist_ok=True)
    overlay.chmod(0o700)
    stackube = settings.state_dir / "stackube"
    doc = overlay_kustomization(
        os.path.relpath(deploy_dir.resolve(), overlay.resolve()),
        image,
        _key_files(stackube / "config"),
        _key_files(stackube / "secret"),
    )
    store = PkiStore(settings.pki_dir)
    serving = store.paths("stackube-auth")
    for source, name in zip(
        (serving.cert, serving.key, store.ca_paths.cert), AUTH_TLS_FILES, strict=True
    ):
        write_atomic(overlay / "tls" / name, source.read_bytes(), 0o600)
    doc["secretGenerator"].append(auth_tls_generator())
    if base == "helm":
        doc["resources"] = [HELM_RENDERED]
        (overlay / HELM_RENDERED).touch(mode=0o600)
    if base == "seed":  # as an operator who downloaded them: copies beside the overlay
        doc["resources"] = [f"seed/{name}" for name in (SEED_CONFIG, SEED_PROXY, SEED_REST)]
        for name in (SEED_CONFIG, SEED_PROXY, SEED_REST):
            write_atomic(overlay / "seed" / name, (deploy_dir / name).read_bytes(), 0o600)
    patches = devbox_patches(settings, NodePaths(settings.node_dir))
    doc["patches"] = [{"patch": yaml.safe_dump(patch, sort_keys=False)} for patch in patches]
    write_atomic(overlay / "kustomization.yaml", yaml.safe_dump(doc, sort_keys=False), 0o600)
    return overlay
