"""`stackube csi`'s command line (kept apart: the CLI parser must not load gRPC)."""

from __future__ import annotations

import argparse

DEFAULT_CLOUD_CONFIG = "/etc/kubernetes/cinder.conf"


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
        help="cinder.conf in the seed's format (credentials, keyring, kubeconfig, node name)",
    )
    parser.add_argument(
        "--registration-dir",
        default="/var/lib/kubelet/plugins_registry",
        help="node: kubelet's plugin registration directory (<kubelet root>/plugins_registry)",
    )
