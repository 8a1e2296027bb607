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
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import dataclass

from stackube.cni.probes import original_destination

log = logging.getLogger("stackube.cni.probes")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CONNECT_TIMEOUT = 5.0  # seconds; a probe's own timeout is 1 s by default
IDLE_TIMEOUT = 60.0  # seconds without a byte either way ends a relayed connection
CHUNK = 65536
# After the client's EOF, how long the answer may still take where the upstream cannot
# be half-closed (gVisor's stream ends the connection on EOF).
ANSWER_GRACE = 2.0  # seconds


@dataclass(frozen=True)
class Upstream:
    """How to reach one pod port: `connect()` makes the connection (raises OSError);
    `half_close` says whether the client's EOF may be passed on as one (False for a
    gVisor sandbox's stream, which ends the whole connection on EOF)."""

    connect: Callable[[], socket.socket]
    description: str
    half_close: bool = True


# (pod address, port) -> how to reach it, or None when it is not a probe target
Resolve = Callable[[str, int], Upstream | None]


def _pump(source: socket.socket, sink: socket.socket, half_close: bool = True) -> None:
    """Copy until EOF or an error, then half-close the sink (if `half_close`)."""
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            sink.sendall(data)
    if half_close:
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


def relay(client: socket.socket, upstream: Upstream, what: str) -> None:
    """Connect `upstream` and copy bytes between it and `client` until both directions
    end (or IDLE_TIMEOUT passes without a byte). A failed connect closes nothing but
    returns: the caller closes `client`, which the peer sees as a failed connection."""
    try:
        sink = upstream.connect()
    except OSError as exc:
        log.debug("%s: %s: %s", what, upstream.description, exc)
        return
    with sink:
        client.settimeout(IDLE_TIMEOUT)
        sink.settimeout(IDLE_TIMEOUT)
        back = threading.Thread(target=_pump, args=(sink, client), daemon=True)
        back.start()
        _pump(client, sink, upstream.half_close)
        back.join(IDLE_TIMEOUT if upstream.half_close else ANSWER_GRACE)


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


class ProbeRelay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, resolve: Resolve, port: int = 0) -> None:
        self.resolve = resolve
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
