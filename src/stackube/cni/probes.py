"""Kubelet probes into tenant networks (pure part).

The kubelet probes `podIP:port` from the node (httpGet, tcpSocket, grpc), but a tenant
pod's address lives only on its tenant's Neutron network, which the node cannot reach
(and two tenants may use the same addresses). The CNI daemon therefore:

1. keeps every pod address unique on its node, across tenants (a port whose address
   another pod here has is not used);
2. sends, in the node's own netfilter `nat` OUTPUT hook, connections from the node to
   `podIP:port` for exactly the ports the pod's probes name, to its relay on
   127.0.0.1 (REDIRECT in OUTPUT: only traffic made on the node itself passes there,
   nothing of a tenant's is routed anywhere); a /32 route through `lo` per such
   address lets the node's connect() get that far (a node may route tenant ranges
   nowhere, as the devbox does with `unreachable` routes);
3. relays each such connection from inside the pod's own network namespace, to its own
   address (probe_relay.py): the pod sees a connection from itself, and no path to the
   node or to another tenant exists.

This module says which ports a pod's probes use and renders the DNAT chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

CHAIN_PREFIX = "STKB-PROBES-"
PROBE_KINDS = ("livenessProbe", "readinessProbe", "startupProbe")
PROBE_HANDLERS = ("httpGet", "tcpSocket", "grpc")


def _port_number(value: Any, named: Mapping[str, int]) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value if 0 < value < 65536 else None
    if isinstance(value, str):
        if value.isdigit():
            return _port_number(int(value), named)
        return named.get(value)
    return None


def probe_ports(
    pod: Mapping[str, Any],
    kinds: tuple[str, ...] = PROBE_HANDLERS,
    probes: tuple[str, ...] = PROBE_KINDS,
) -> set[int]:
    """TCP ports the kubelet will connect to on the pod's address for its httpGet,
    tcpSocket and grpc probes, or those of the handlers in `kinds` only, of the probes in
    `probes` only (named ports resolved against the container's ports, as the kubelet
    does; an httpGet with its own `host` probes that host, not the pod; so does a
    tcpSocket with one). Exec probes run inside the container and need nothing."""
    spec = pod.get("spec") or {}
    found: set[int] = set()
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    for container in containers:
        named = {
            str(p["name"]): int(p["containerPort"])
            for p in container.get("ports") or []
            if p.get("name") and p.get("containerPort")
        }
        for kind in probes:
            probe = container.get(kind) or {}
            for handler_kind in kinds:
                handler = probe.get(handler_kind) or {}
                if not handler or (handler_kind != "grpc" and handler.get("host")):
                    continue
                port = _port_number(handler.get("port"), named)
                if port is not None:
                    found.add(port)
    return found


def liveness_only_tcp_ports(pod: Mapping[str, Any]) -> set[int]:
    """tcpSocket liveness probe ports that no readiness or startup probe uses: a wrong
    "closed" there restarts a container, a wrong "open" only delays a restart."""
    liveness = probe_ports(pod, ("tcpSocket",), ("livenessProbe",))
    return liveness - probe_ports(pod, probes=("readinessProbe", "startupProbe"))


def chain_name(node: str) -> str:
    """The nat chain of one daemon (node identity): a test's daemon beside the node's
    never touches the node's rules. iptables allows 28 characters."""
    return f"{CHAIN_PREFIX}{hashlib.sha256(node.encode()).hexdigest()[:10]}"


def render_chain(targets: Iterable[tuple[str, int]], relay_port: int, chain: str) -> str:
    """iptables-restore input for the node's nat table: `chain` holds one REDIRECT (to
    the relay on 127.0.0.1) per (pod address, probe port), and nothing else (the whole
    chain is replaced; other chains are left alone with --noflush)."""
    lines = ["*nat", f":{chain} - [0:0]", f"-F {chain}"]
    for ip, port in sorted(set(targets)):
        lines.append(
            f"-A {chain} -d {ip}/32 -p tcp -m tcp --dport {port} "
            f"-j REDIRECT --to-ports {relay_port}"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def original_destination(sockaddr: bytes) -> tuple[str, int]:
    """Decode getsockopt(SOL_IP, SO_ORIGINAL_DST)'s struct sockaddr_in."""
    port = int.from_bytes(sockaddr[2:4], "big")
    ip = ".".join(str(b) for b in sockaddr[4:8])
    return ip, port
