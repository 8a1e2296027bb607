"""Command-line options of `stackube controller` (kept apart so `stackube --help` does
not import kopf)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster or $KUBECONFIG")
    parser.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="the stackube-config ConfigMap, mounted (one file per key)",
    )
    parser.add_argument(
        "--secret-dir",
        type=Path,
        help="a Secret with password/keyring, mounted; wins over the ConfigMap",
    )
    parser.add_argument("--bind-address", default="0.0.0.0")  # noqa: S104 - pod ports
    parser.add_argument("--health-port", type=int, default=8081)
    parser.add_argument("--metrics-port", type=int, default=9091)
    parser.add_argument("--leader-elect", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lease-namespace", default="kube-system")
    parser.add_argument("--lease-name", default="stackube-controller")
    parser.add_argument(
        "--neutron-concurrency",
        type=int,
        default=4,
        help="Network passes and teardowns talking to Neutron at once (more wait their "
        "turn, rather than time out together)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=60.0,
        help="re-check every object this often, repairing drift (e.g. resources deleted by hand)",
    )
    parser.add_argument(
        "--wait-for-dns",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a Tenant is Active only once its DNS server answers (off: once its network "
        "is; for clusters whose nodes take no pods yet)",
    )
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="log every reconcile pass: its steps with their durations and its outcome "
        "(logger stackube.controller.timeline, at debug level)",
    )
    parser.add_argument(
        "--load-balancers",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve LoadBalancer Services with Neutron floating IPs (off: leave them to "
        "another controller)",
    )
