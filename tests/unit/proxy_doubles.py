"""Test helpers for stackube-proxy: a recording stand-in for the router I/O its engine
does (stackube.proxy.sync.RouterTables: every router present, nothing written for
real), and a ServicePort maker."""

from __future__ import annotations

from typing import Any

from stackube.proxy.model import Endpoint, ServicePort


def port(ip: str = "10.96.0.20", endpoints: tuple[Endpoint, ...] = (), **kw: Any) -> ServicePort:
    """A port of test/nginx (TCP 80 at `ip`); `kw` overrides any field."""
    base: dict[str, Any] = {
        "namespace": "test",
        "service": "nginx",
        "port_name": "",
        "protocol": "TCP",
        "cluster_ip": ip,
        "port": 80,
        "endpoints": endpoints,
    }
    return ServicePort(**(base | kw))


class RecordingTables:
    def __init__(self, existing: dict[str, set[str]] | None = None) -> None:
        self.existing = existing or {}  # table -> chains already in the routers
        self.restored: list[str] = []
        self.jumps_removed: list[str] = []
        self.flows_forgotten: list[tuple[str, int, str]] = []

    def namespace_exists(self, netns: str) -> bool:
        return True

    def chains(self, netns: str, table: str) -> set[str]:
        return set(self.existing.get(table, set()))

    def restore(self, netns: str, text: str) -> None:
        self.restored.append(text)

    def ensure_jump(self, netns: str, table: str, chain: str, target: str) -> bool:
        return False

    def remove_jump(self, netns: str, table: str, chain: str, target: str) -> bool:
        self.jumps_removed.append(target)
        return True

    def forget_udp_flows(self, netns: str, cluster_ip: str, port: int, endpoint_ip: str) -> None:
        self.flows_forgotten.append((cluster_ip, port, endpoint_ip))

    def ensure_local_route(self, netns: str, cidr: str) -> bool:
        return False

    def load_balancer_addresses(self, netns: str) -> dict[str, str]:
        return {}

    def add_load_balancer_address(self, netns: str, address: str) -> bool:
        return False

    def delete_load_balancer_address(self, netns: str, cidr: str) -> bool:
        return False
