"""Command-line options of `stackube cni-daemon`."""

from __future__ import annotations

import argparse
import os
import socket
from pathlib import Path

from stackube.cni.tenancy import NETWORK_PATIENCE_SECONDS
from stackube.host import cri

DEFAULT_STATE_DIR = Path("/var/lib/stackube/cni")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", type=Path, help="default: in-cluster or $KUBECONFIG")
    parser.add_argument(
        "--config-dir", type=Path, required=True, help="the stackube-config ConfigMap, mounted"
    )
    parser.add_argument("--secret-dir", type=Path, help="a Secret with the password, mounted")
    parser.add_argument(
        "--node-name",
        default=os.environ.get("NODE_NAME") or socket.gethostname(),
        help="this node's name in Kubernetes (default $NODE_NAME): pods bound to it, the "
        "daemon's Lease, and the mark on its ports",
    )
    parser.add_argument(
        "--binding-host",
        default="",
        help="this host as Neutron's agents know it (binding:host_id); default: --node-name",
    )
    parser.add_argument(
        "--cri-endpoint",
        default=os.environ.get("CONTAINER_RUNTIME_ENDPOINT") or cri.DEFAULT_ENDPOINT,
        help="the container runtime's CRI socket: recovery asks it which sandboxes live",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE") or "kube-system",
        help="where the daemon's Lease (stackube-cni-<node>) lives: one daemon per node",
    )
    parser.add_argument("--socket", type=Path, default=Path("/run/stackube/cni.sock"))
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="the journal of attachments (must survive daemon restarts: a hostPath)",
    )
    parser.add_argument(
        "--plug-driver",
        choices=("linuxbridge", "openvswitch"),
        help="default: stackube-config plugin-name",
    )
    parser.add_argument(
        "--pool-size", type=int, default=3, help="ready ports per tenant network (0: no pools)"
    )
    parser.add_argument(
        "--pool-eager",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="keep pools for every Active Network, not only those with pods on this node",
    )
    parser.add_argument(
        "--cluster-dns", action="append", default=[], help="DNS server(s) in CNI results"
    )
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--port-active-timeout", type=float, default=60.0)
    parser.add_argument("--resync-seconds", type=float, default=5.0)
    parser.add_argument(
        "--network-wait-seconds",
        type=float,
        default=NETWORK_PATIENCE_SECONDS,
        help="how long an ADD waits for its namespace's Network to become Active",
    )
    parser.add_argument(
        "--probe-relay-port",
        type=int,
        default=0,
        help="the probe relay's port on 127.0.0.1 (0: any free one)",
    )
    parser.add_argument(
        "--runsc",
        default="",
        help="gVisor's runsc, as the node's containerd shim runs it: kubelet probes and "
        "port-forward then reach gVisor pods inside their sandboxes; empty: runc only",
    )
    parser.add_argument(
        "--runsc-root",
        type=Path,
        default=Path("/run/containerd/runsc/k8s.io"),
        help="runsc's state directory for the CRI's containerd namespace (the shim's "
        "runsc.toml root, then the namespace)",
    )
    parser.add_argument(
        "--node-link",
        default="stackube0",
        help="the host's link on the system network (the node's address there, through "
        "which the host and the API server reach system pods); empty: none",
    )
    parser.add_argument(
        "--repair-seconds",
        type=float,
        default=5.0,
        help="how often pods' ports, bindings and host links are checked and mended",
    )
    parser.add_argument(
        "--network-policy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="enforce NetworkPolicy for traffic between pods of one subnet, in their "
        "network namespaces (stackube-proxy enforces the routed rest)",
    )
    parser.add_argument(
        "--hostports",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="serve hostPorts of pods on the system network (relayed from this node's "
        "addresses; the conflist's portMappings capability); --no-hostports: refuse them",
    )
