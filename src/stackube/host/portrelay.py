"""Userspace TCP and UDP relays: a local address and port (a frontend) passed on to an
address and port elsewhere (a backend). stackube-proxy serves NodePorts with them (the
node's address -> the tenant router's external address) and the CNI daemon serves
hostPorts (the node's address -> a pod), see docs/decisions/0011-node-ports.md for why
not DNAT on the node.

One asyncio loop in a thread of its own runs every relay; `apply` (any thread) makes
the set of relays equal to what it is given and returns the frontends it could not
open, with the reason (e.g. the port is taken on this node). A frontend whose backend
changes keeps its listener: new TCP connections and new UDP flows go to the new
backend, UDP flows to the old backend are dropped (as kube-proxy clears their conntrack
entries). A removed frontend stops listening; TCP connections already relayed live on
until either side closes them.

UDP: one socket per client address and frontend, connected to the backend; replies go
back from the frontend's socket, so the client sees the address it sent to. A flow
idle for `udp_idle_seconds` is closed (conntrack's UDP stream timeout is 120 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import threading
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, cast

log = logging.getLogger(__name__)

PROTOCOLS = ("TCP", "UDP")
CHUNK = 65536


@dataclass(frozen=True, order=True)
class Frontend:
    protocol: str  # TCP or UDP
    address: str  # a local IPv4 address
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}/{self.protocol}"


@dataclass(frozen=True, order=True)
class Backend:
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


def bind_problem(exc: OSError) -> str:
    """A listener's bind error in words an operator acts on."""
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use on this node"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "the address is not one of this node's"
    return exc.strerror or str(exc)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copies until EOF, then half-closes the other side (TCP keeps the other direction)."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.transport.abort()


class _UdpFlow(asyncio.DatagramProtocol):
    """One client's datagrams to one backend, and the backend's replies back."""

    def __init__(self, front: _UdpFrontend, client: tuple[str, int]) -> None:
        self.front = front
        self.client = client
        self.transport: asyncio.DatagramTransport | None = None
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        self.last_used = time.monotonic()
        if self.front.transport is not None:
            self.front.transport.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable from the backend: nothing to tell a UDP client.
        log.debug("udp flow %s -> %s: %s", self.client, self.front.frontend, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpFrontend(asyncio.DatagramProtocol):
    def __init__(self, relay: PortRelay, frontend: Frontend) -> None:
        self.relay = relay
        self.frontend = frontend
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[tuple[str, int], _UdpFlow] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        client = (str(addr[0]), int(addr[1]))
        flow = self.flows.get(client)
        if flow is not None and flow.transport is not None:
            flow.last_used = time.monotonic()
            flow.transport.sendto(data)
            return
        if client in self.pending:
            self.pending[client].append(data)
            return
        backend = self.relay.backend_of(self.frontend)
        if backend is None:
            return
        self.pending[client] = [data]
        self.relay.spawn(self._open_flow(client, backend))

    async def _open_flow(self, client: tuple[str, int], backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        queued = self.pending.get(client, [])
        try:
            transport, flow = await loop.create_datagram_endpoint(
                lambda: _UdpFlow(self, client), remote_addr=(backend.address, backend.port)
            )
        except OSError as exc:
            log.debug("udp %s -> %s: %s", self.frontend, backend, exc)
            self.pending.pop(client, None)
            return
        self.flows[client] = flow
        for data in self.pending.pop(client, queued):
            transport.sendto(data)

    def drop_flows(self) -> None:
        for flow in self.flows.values():
            flow.close()
        self.flows.clear()

    def expire(self, idle_seconds: float) -> None:
        now = time.monotonic()
        for client, flow in list(self.flows.items()):
            if now - flow.last_used > idle_seconds:
                flow.close()
                del self.flows[client]

    def close(self) -> None:
        self.drop_flows()
        if self.transport is not None:
            self.transport.close()


class PortRelay:
    """The relays of one program (see the module's docstring). Thread-safe `apply`;
    `stop` closes every listener and flow."""

    def __init__(
        self,
        name: str,
        *,
        connect_timeout: float = 5.0,
        udp_idle_seconds: float = 120.0,
        apply_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.connect_timeout = connect_timeout
        self.udp_idle_seconds = udp_idle_seconds
        self.apply_timeout = apply_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"{name}-relay", daemon=True)
        self._backends: dict[Frontend, Backend] = {}
        self._tcp: dict[Frontend, asyncio.Server] = {}
        self._udp: dict[Frontend, _UdpFrontend] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread.start()

    # ---- any thread ----------------------------------------------------------------------
    def apply(self, wanted: Mapping[Frontend, Backend]) -> dict[Frontend, str]:
        """Makes the relays exactly `wanted`; returns {frontend: why it is not open}.
        Raises TimeoutError if the loop does not answer within apply_timeout."""
        future = asyncio.run_coroutine_threadsafe(self._apply(dict(wanted)), self._loop)
        return future.result(timeout=self.apply_timeout)

    def frontends(self) -> set[Frontend]:
        """The frontends that listen now."""
        return set(self._tcp) | set(self._udp)

    def stop(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError):
            self.apply({})
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # ---- the loop's thread ---------------------------------------------------------------
    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(lambda: self.spawn(self._expire_udp()))
        try:
            self._loop.run_forever()
        except Exception:  # a bug: say so; the program's health checks see the relays gone
            log.exception("%s relay loop stopped", self.name)

    def spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """(Loop thread.) Runs a coroutine, keeping a reference until it ends; its
        unexpected errors are logged, never lost."""
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%s relay: %r", self.name, task.exception(), exc_info=task.exception())

    def backend_of(self, frontend: Frontend) -> Backend | None:
        return self._backends.get(frontend)

    async def _expire_udp(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.udp_idle_seconds))
            for front in list(self._udp.values()):
                front.expire(self.udp_idle_seconds)

    async def _apply(self, wanted: dict[Frontend, Backend]) -> dict[Frontend, str]:
        for frontend in [f for f in self._tcp if f not in wanted]:
            self._tcp.pop(frontend).close()
            log.info("%s relay: %s closed", self.name, frontend)
        for frontend in [f for f in self._udp if f not in wanted]:
            self._udp.pop(frontend).close()
            log.info("%s relay: %s closed", self.name, frontend)
        for frontend, backend in wanted.items():
            old = self._backends.get(frontend)
            if old is not None and old != backend and frontend in self._udp:
                self._udp[frontend].drop_flows()
            if old != backend and frontend in self.frontends():
                log.info("%s relay: %s -> %s (was %s)", self.name, frontend, backend, old)
        self._backends = wanted
        failed: dict[Frontend, str] = {}
        for frontend, backend in sorted(wanted.items()):
            if frontend in self.frontends():
                continue
            try:
                await self._listen(frontend)
            except OSError as exc:
                failed[frontend] = bind_problem(exc)
                continue
            log.info("%s relay: %s -> %s", self.name, frontend, backend)
        return failed

    async def _listen(self, frontend: Frontend) -> None:
        loop = asyncio.get_running_loop()
        if frontend.protocol == "TCP":

            async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await self._relay_tcp(frontend, reader, writer)

            self._tcp[frontend] = await asyncio.start_server(
                serve, frontend.address, frontend.port, reuse_address=True
            )
        elif frontend.protocol == "UDP":
            front = _UdpFrontend(self, frontend)
            await loop.create_datagram_endpoint(
                lambda: front, local_addr=(frontend.address, frontend.port)
            )
            self._udp[frontend] = front
        else:
            raise OSError(errno.EPROTONOSUPPORT, f"protocol {frontend.protocol} is not relayed")

    async def _relay_tcp(
        self, frontend: Frontend, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        backend = self._backends.get(frontend)
        if backend is None:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(backend.address, backend.port), self.connect_timeout
            )
        except (OSError, TimeoutError) as exc:
            # The client gets a reset, as from a port without endpoints.
            log.debug("%s relay: %s -> %s: %s", self.name, frontend, backend, exc)
            writer.transport.abort()
            return
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                side.close()
