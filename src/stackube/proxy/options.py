"""Command-line options of `stackube proxy`."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from stackube.proxy.sync import BACKENDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster or $KUBECONFIG")
    parser.add_argument(
        "--cluster-dns", default="10.96.0.10", help="the DNS IP pods use (kubelet --cluster-dns)"
    )
    parser.add_argument("--service-cidr", default="10.96.0.0/12", help="the ClusterIP range")
    parser.add_argument(
        "--dns-namespace",
        default="stackube-dns",
        help="where each tenant's DNS Service is, named after the tenant's namespace: "
        "the cluster DNS IP goes there",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=BACKENDS[0],
        help="how Services are written into tenant routers: a native nftables table "
        "(element updates per change) or iptables chains (the earlier renderer, kept as "
        "a fallback: docs/proxy.md)",
    )
    parser.add_argument(
        "--min-sync-seconds",
        type=float,
        default=0.05,
        help="at most one sync pass this often (changes meanwhile are batched)",
    )
    parser.add_argument(
        "--housekeeping-seconds",
        type=float,
        default=10.0,
        help="re-check hooks and routers that appeared this often",
    )
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name (externalTrafficPolicy: Local serves only its endpoints)",
    )
    parser.add_argument(
        "--nodeport-addresses",
        type=lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
        default=("0.0.0.0/0",),
        help="comma-separated CIDRs: NodePorts are served on this node's addresses in "
        "them (never loopback). Default: every address",
    )
