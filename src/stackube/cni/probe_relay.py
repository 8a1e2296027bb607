"""The node's probe relay: takes the kubelet's probe connections that the node's
netfilter redirected to it (probes.py), and makes each one again from inside the target
pod's network namespace, to the pod's own address and port, then copies bytes both ways
until either side closes. TCP only (httpGet, tcpSocket and grpc probes are TCP).

Listens on 127.0.0.1 only: nothing but the node itself can reach it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import socketserver
import threading
from collections.abc import Callable

from stackube.cni.probes import original_destination
from stackube.host import netlink

log = logging.getLogger("stackube.cni.probes")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h
CONNECT_TIMEOUT = 5.0  # seconds; a probe's own timeout is 1 s by default
IDLE_TIMEOUT = 60.0  # seconds without a byte either way ends a relayed connection
CHUNK = 65536

# (pod address, port) -> the pod's netns path, or None when it is not a probe target
Resolve = Callable[[str, int], str | None]


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until EOF or an error, then half-close the sink."""
    with contextlib.suppress(OSError):
        while data := source.recv(CHUNK):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class _Handler(socketserver.BaseRequestHandler):
    server: ProbeRelay

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            ip, port = original_destination(client.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
        except OSError as exc:
            log.warning("probe relay: a connection without its original address: %s", exc)
            return
        netns = self.server.resolve(ip, port)
        if netns is None:
            log.info("probe relay: %s:%d is no probe target here: refused", ip, port)
            return
        try:
            upstream = netlink.connect_in_namespace(netns, (ip, port), CONNECT_TIMEOUT)
        except OSError as exc:
            log.debug("probe relay: %s:%d in %s: %s", ip, port, netns, exc)
            return  # the kubelet sees the connection closed: the probe fails, as it should
        with upstream:
            client.settimeout(IDLE_TIMEOUT)
            upstream.settimeout(IDLE_TIMEOUT)
            back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
            back.start()
            _pump(client, upstream)
            back.join(IDLE_TIMEOUT)


class ProbeRelay(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, resolve: Resolve, port: int = 0) -> None:
        self.resolve = resolve
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])
