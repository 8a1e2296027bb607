"""Warm port pools: per tenant network on this node, Neutron ports already created,
bound, plugged (host end attached, pod end parked) and ACTIVE, so that an ADD only
moves the pod end into the pod's netns. The bookkeeping and the recovery decisions
are pure; the daemon does the I/O."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

# A pool port's Neutron device_id until a pod takes it.
POOL_DEVICE_ID = "kubestack-pool"


def pool_port_name(node: str) -> str:
    return f"kubestack-pool-{node}"[:255]


@dataclass(frozen=True)
class ReadyPort:
    """A pooled port: everything an ADD needs without asking Neutron."""

    id: str
    network_id: str
    mac: str
    ip: str


@dataclass
class _NetworkPool:
    ready: list[ReadyPort] = field(default_factory=list)
    filling: int = 0


class PortPools:
    """Ready ports per network (thread-safe). `take` never blocks; `want` says how many
    more ports to start making for a network, counting those already being made."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pools: dict[str, _NetworkPool] = {}
        self._lock = threading.Lock()

    def networks(self) -> list[str]:
        with self._lock:
            return list(self._pools)

    def track(self, network_id: str) -> None:
        with self._lock:
            self._pools.setdefault(network_id, _NetworkPool())

    def take(self, network_id: str) -> ReadyPort | None:
        with self._lock:
            pool = self._pools.setdefault(network_id, _NetworkPool())
            return pool.ready.pop(0) if pool.ready else None

    def want(self, network_id: str) -> int:
        """Reserve and return the number of ports to make now for this network."""
        with self._lock:
            pool = self._pools.get(network_id)
            if pool is None:
                return 0
            missing = refill_count(self.size, len(pool.ready), pool.filling)
            pool.filling += missing
            return missing

    def filled(self, port: ReadyPort | None, network_id: str) -> bool:
        """A reserved port is ready (or failed: None). False if the network's pool went
        away meanwhile: the caller must then delete the port."""
        with self._lock:
            pool = self._pools.get(network_id)
            if pool is None:
                return False
            pool.filling = max(0, pool.filling - 1)
            if port is not None:
                pool.ready.append(port)
            return True

    def adopt(self, port: ReadyPort) -> None:
        with self._lock:
            self._pools.setdefault(port.network_id, _NetworkPool()).ready.append(port)

    def discard(self, port_id: str) -> bool:
        """Take a ready port out of its pool; False if no pool has it (a pod took it)."""
        with self._lock:
            for pool in self._pools.values():
                for port in pool.ready:
                    if port.id == port_id:
                        pool.ready.remove(port)
                        return True
            return False

    def drop(self, network_id: str) -> list[ReadyPort]:
        """Forget a network's pool; returns its ready ports for deletion."""
        with self._lock:
            pool = self._pools.pop(network_id, None)
            return pool.ready if pool else []

    def ready(self, network_id: str) -> int:
        with self._lock:
            pool = self._pools.get(network_id)
            return len(pool.ready) if pool else 0

    def sizes(self) -> dict[str, int]:
        with self._lock:
            return {net: len(pool.ready) for net, pool in self._pools.items()}


def refill_count(size: int, ready: int, filling: int) -> int:
    return max(0, size - ready - filling)
