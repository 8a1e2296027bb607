"""hostPort for pods on the system network (pure): the runtime's port mappings, and the
relays they become.

The runtime passes a pod's hostPorts as the CNI `portMappings` capability
(runtimeConfig.portMappings: hostPort, containerPort, protocol, hostIP; CNI
CONVENTIONS.md). The CNI daemon relays each to the pod's address from the node (which
reaches the system network through its node link); see docs/decisions/0011-node-ports.md.
Tenants' pods never get one: admission refuses hostPort in tenant namespaces, and the
daemon refuses it there too (their networks are not the node's to reach).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from stackube.cni.spec import INVALID_NETWORK_CONFIG, CniError
from stackube.host.portrelay import Backend, Frontend

# hostIP "" (the default): every address of the node, loopback included.
ANY_ADDRESS = "0.0.0.0"  # noqa: S104 (what hostIP "" means: every address)
RELAYED_PROTOCOLS = ("TCP", "UDP")


@dataclass(frozen=True, order=True)
class PortMapping:
    protocol: str  # TCP or UDP
    host_ip: str  # "" = every address
    host_port: int
    container_port: int

    def __str__(self) -> str:
        where = self.host_ip or "*"
        return f"{where}:{self.host_port}/{self.protocol} -> {self.container_port}"


def _port_number(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise CniError(
            INVALID_NETWORK_CONFIG,
            f"runtimeConfig.portMappings: {field} {value!r} is not a port number (1-65535)",
        )
    return value


def parse_port_mappings(config: Mapping[str, Any]) -> tuple[PortMapping, ...]:
    """The `portMappings` of a CNI network configuration's runtimeConfig (none: ()).
    Raises CniError (INVALID_NETWORK_CONFIG) for a malformed or unsupported entry."""
    raw = (config.get("runtimeConfig") or {}).get("portMappings") or []
    if not isinstance(raw, list):
        raise CniError(INVALID_NETWORK_CONFIG, "runtimeConfig.portMappings must be a list")
    found = []
    for item in raw:
        if not isinstance(item, Mapping):
            raise CniError(INVALID_NETWORK_CONFIG, f"runtimeConfig.portMappings: {item!r}")
        # containerd (go-cni) sends HostPort, ContainerPort, ...: Go's JSON matches keys
        # case-insensitively, and so do we.
        entry = {str(key).lower(): value for key, value in item.items()}
        protocol = str(entry.get("protocol") or "tcp").upper()
        if protocol not in RELAYED_PROTOCOLS:
            raise CniError(
                INVALID_NETWORK_CONFIG,
                f"hostPort {entry.get('hostport')}/{protocol}: only TCP and UDP hostPorts "
                "are served",
            )
        host_ip = str(entry.get("hostip") or "")
        if host_ip and ":" in host_ip:
            raise CniError(INVALID_NETWORK_CONFIG, f"hostIP {host_ip}: IPv6 is not served")
        found.append(
            PortMapping(
                protocol,
                "" if host_ip == ANY_ADDRESS else host_ip,
                _port_number(entry.get("hostport"), "hostPort"),
                _port_number(entry.get("containerport"), "containerPort"),
            )
        )
    return tuple(sorted(set(found)))


def frontend(mapping: PortMapping) -> Frontend:
    return Frontend(mapping.protocol, mapping.host_ip or ANY_ADDRESS, mapping.host_port)


def host_port_relays(
    pods: Iterable[tuple[str, Iterable[PortMapping]]],
) -> dict[Frontend, Backend]:
    """(pod address, its mappings) of this node's pods -> the relays. A frontend two
    pods claim goes to the first (the scheduler keeps hostPorts apart)."""
    relays: dict[Frontend, Backend] = {}
    for ip, mappings in pods:
        for mapping in mappings:
            relays.setdefault(frontend(mapping), Backend(ip, mapping.container_port))
    return relays


def input_chain(node: str) -> str:
    """The filter chain of one daemon's loopback hostPorts (node identity: a test's
    daemon never touches the node's). iptables allows 28 characters."""
    return f"STKB-HOSTPORTS-{hashlib.sha256(node.encode()).hexdigest()[:10]}"


# Where the chain is jumped to, first: packets on loopback only (made on this node).
LOOPBACK_JUMPS = (("INPUT", ("-i", "lo")), ("OUTPUT", ("-o", "lo")))
# The kubelet's chain our loopback accepts must come before (render_loopback_accepts).
KUBELET_FIREWALL = "KUBE-FIREWALL"


def render_loopback_accepts(mappings: Iterable[PortMapping], chain: str) -> str:
    """iptables-restore input for the node's filter table: `chain` (jumped to first in
    INPUT and OUTPUT for loopback traffic, LOOPBACK_JUMPS) accepts what local processes
    send to hostPorts bound on loopback. The kubelet's KUBE-FIREWALL (in both) drops a
    connection from a non-loopback source to 127.0.0.0/8 unless it was DNATed (its
    guard against route_localnet, CVE-2020-8558); a local process that binds the
    node's address first (`curl --interface <node IP> http://127.0.0.1:<hostPort>`)
    sends just that."""
    lines = ["*filter", f":{chain} - [0:0]", f"-F {chain}"]
    for mapping in sorted(set(mappings)):
        if mapping.host_ip and not ipaddress.ip_address(mapping.host_ip).is_loopback:
            continue
        destination = mapping.host_ip + "/32" if mapping.host_ip else "127.0.0.0/8"
        proto = mapping.protocol.lower()
        lines.append(
            f"-A {chain} -d {destination} -p {proto} -m {proto} "
            f"--dport {mapping.host_port} -j ACCEPT"
        )
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"
