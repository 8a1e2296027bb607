"""The node's probe relay: takes the kubelet's probe connections that the node's
netfilter redirected to it (probes.py), and makes each one again from inside the target
pod's network namespace, to the pod's own address and port (for a gVisor pod: inside its
sandbox, through runsc), then copies bytes both ways until either side closes. TCP only
(httpGet, tcpSocket and grpc probes are TCP).

Listens on 127.0.0.1 only: nothing but the node itself can reach it.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import socketserver
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from stackube.cni.probes import original_destination

log = logging.getLogger("stackube.cni.probes")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CONNECT_TIMEOUT = 5.0  # seconds; a probe's own timeout is 1 s by default
IDLE_TIMEOUT = 60.0  # seconds without a byte either way end a relayed probe connection
POLL = 1.0  # seconds between looks at the other direction's activity
CHUNK = 65536
# After the client's EOF, how long the answer may still take where the upstream cannot
# be half-closed (gVisor's stream ends the connection on EOF).
ANSWER_GRACE = 2.0  # seconds


@dataclass(frozen=True)
class Upstream:
    """How to reach one pod port: `connect()` makes the connection (raises OSError);
    `half_close` says whether the client's EOF may be passed on as one (False for a
    gVisor sandbox's stream, which ends the whole connection on EOF); `idle_timeout`
    (seconds without a byte either way) ends the relayed connection."""

    connect: Callable[[], socket.socket]
    description: str
    half_close: bool = True
    idle_timeout: float = IDLE_TIMEOUT


# (pod address, port) -> how to reach it, or None when it is not a probe target
Resolve = Callable[[str, int], Upstream | None]


class _Activity:
    """When a byte last moved, either way (both directions' pumps share one)."""

    def __init__(self) -> None:
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def idle_for(self) -> float:
        return time.monotonic() - self.last


def _pump(
    source: socket.socket,
    sink: socket.socket,
    activity: _Activity,
    idle_timeout: float,
    half_close: bool = True,
) -> None:
    """Copy until EOF, an error, or `idle_timeout` without a byte either way; then
    half-close the sink (if `half_close`)."""
    with contextlib.suppress(OSError):
        while True:
            readable, _, _ = select.select([source], [], [], POLL)
            if not readable:
                if activity.idle_for() >= idle_timeout:
                    break
                continue
            data = source.recv(CHUNK)
            if not data:
                break
            activity.touch()
            sink.sendall(data)
    if half_close:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def relay(client: socket.socket, upstream: Upstream, what: str) -> None:
    """Connect `upstream` and copy bytes between it and `client` until both directions
    end (or `upstream.idle_timeout` passes without a byte either way). When the connect
    fails, `client` is set to be reset when the caller closes it: the peer sees a
    refused connection, not an empty answer."""
    try:
        sink = upstream.connect()
    except OSError as exc:
        log.debug("%s: %s: %s", what, upstream.description, exc)
        with contextlib.suppress(OSError):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return
    activity = _Activity()
    with sink:
        # Blocking sends wait at most this long for a peer that does not read.
        client.settimeout(upstream.idle_timeout)
        sink.settimeout(upstream.idle_timeout)
        back = threading.Thread(
            target=_pump, args=(sink, client, activity, upstream.idle_timeout), daemon=True
        )
        back.start()
        _pump(client, sink, activity, upstream.idle_timeout, upstream.half_close)
        back.join(None if upstream.half_close else ANSWER_GRACE)


class LoggingServer(socketserver.ThreadingTCPServer):
    """A threading TCP server whose handlers' unexpected errors go to the log (the
    standard one prints them to stderr)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        log.exception("%s: a connection's handler failed", type(self).__name__)


class _Handler(socketserver.BaseRequestHandler):
    server: ProbeRelay

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            ip, port = original_destination(client.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
        except OSError as exc:
            log.warning("probe relay: a connection without its original address: %s", exc)
            return
        upstream = self.server.resolve(ip, port)
        if upstream is None:
            log.info("probe relay: %s:%d is no probe target here: refused", ip, port)
            return
        # A failed connect: the kubelet sees the connection closed and the probe fails.
        relay(client, upstream, f"probe relay {ip}:{port}")


class ProbeRelay(LoggingServer):
    allow_reuse_address = True

    def __init__(self, resolve: Resolve, port: int = 0) -> None:
        self.resolve = resolve
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
