"""`stackube csi`'s command line (kept apart: the CLI parser must not load gRPC)."""

from __future__ import annotations

import argparse
import os

DEFAULT_CLOUD_CONFIG = "/etc/kubernetes/cinder.conf"
DEFAULT_STATE_DIR = "/var/lib/kubelet/plugins/cinder.stackube.kubernetes.io/state"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=("controller", "node"), required=True)
    parser.add_argument(
        "--endpoint",
        required=True,
        help="the CSI socket, unix:///path (the sidecars' --csi-address)",
    )
    parser.add_argument(
        "--cloud-config",
        default=DEFAULT_CLOUD_CONFIG,
        help="cinder.conf in the seed's format (credentials, keyring, kubeconfig, node name);"
        " not read when --config-dir is given",
    )
    parser.add_argument(
        "--config-dir",
        default=None,
        help="in a pod: the mounted stackube-config ConfigMap (the seed's keys), instead of"
        " cinder.conf; Kubernetes through the pod's service account",
    )
    parser.add_argument(
        "--secret-dir",
        default=None,
        help="with --config-dir: the mounted stackube-credentials Secret (password, keyring)",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME", ""),
        help="with --config-dir: this node's Kubernetes name (default: $NODE_NAME)",
    )
    parser.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help="with --config-dir, node: where the volumes' records, locks and rbd-fuse mounts"
        " live (under kubelet's root, which kubelet keeps a shared mount)",
    )
    parser.add_argument(
        "--host-cgroups",
        default=None,
        help="node, in a pod: the node's cgroup file system (hostPath /sys/fs/cgroup); each"
        " rbd-fuse server moves to its root cgroups, so that it outlives this container",
    )
    parser.add_argument(
        "--registration-dir",
        default="/var/lib/kubelet/plugins_registry",
        help="node: kubelet's plugin registration directory (<kubelet root>/plugins_registry)",
    )
