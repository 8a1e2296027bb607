"""`kubectl port-forward` (and anything else that connects to 127.0.0.1 in a pod's network
namespace) for gVisor pods.

containerd's CRI serves PortForward by joining the pod sandbox's network namespace and
connecting to `localhost:<port>` there (containerd 1.6
pkg/cri/server/sandbox_portforward_linux.go). A gVisor pod's processes listen inside the
sandbox's own network stack, so that connection is refused: upstream, port-forward does
not work for gVisor (google/gvisor#3811, containerd/containerd#6638).

For each gVisor pod on the node the CNI daemon therefore keeps, in the pod's (kernel)
network namespace:
- a listener on 127.0.0.1:LISTEN_PORT, a socket the daemon made from a thread that
  joined the namespace (nothing else of the daemon is in there);
- chain STKB-PORT-FORWARD in the namespace's `nat OUTPUT`: TCP to 127.0.0.1, any other
  port, REDIRECT to LISTEN_PORT;
and relays each connection to the original port inside the sandbox with `runsc
port-forward` (host/runsc.py). The tenant's processes never see either: they live in
the sandbox, whose loopback is netstack's own, and the kernel drops 127.0.0.0/8 arriving
from the pod's interface.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace

from stackube.cni.probe_relay import SO_ORIGINAL_DST, LoggingServer, Upstream, relay
from stackube.cni.probes import original_destination
from stackube.errors import StackubeError
from stackube.host import iptables, netlink

log = logging.getLogger("stackube.cni.portforward")

CHAIN = "STKB-PORT-FORWARD"
LISTEN_PORT = 65535  # in each gVisor pod's kernel netns; connecting to it directly works too
# A forwarded connection may idle as long as the kubelet's streaming connections may
# (--streaming-connection-idle-timeout, 4 h by default).
IDLE_TIMEOUT = 4 * 3600.0  # seconds

# (sandbox id, port) -> how to reach that port inside the sandbox
UpstreamFor = Callable[[str, int], Upstream]


def render_rules(listen_port: int = LISTEN_PORT) -> str:
    """iptables-restore input for a gVisor pod's kernel netns: every TCP connection made
    there to 127.0.0.1 goes to the daemon's listener (its own port excepted)."""
    return (
        "*nat\n"
        f":{CHAIN} - [0:0]\n"
        f"-F {CHAIN}\n"
        f"-A {CHAIN} -d 127.0.0.1/32 -p tcp -m tcp ! --dport {listen_port} "
        f"-j REDIRECT --to-ports {listen_port}\n"
        "COMMIT\n"
    )


class _Handler(socketserver.BaseRequestHandler):
    server: _Forwarder

    def handle(self) -> None:
        client: socket.socket = self.request
        try:
            _, port = original_destination(client.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16))
        except OSError:  # not redirected: a connection to the listener's own port
            port = int(client.getsockname()[1])
        what = f"port-forward {self.server.sandbox_id[:12]}:{port}"
        log.debug("%s: connection", what)
        upstream = self.server.upstream_for(self.server.sandbox_id, port)
        relay(client, replace(upstream, idle_timeout=IDLE_TIMEOUT), what)


class _Forwarder(LoggingServer):
    """One pod's listener, on a socket made inside its netns."""

    def __init__(self, listener: socket.socket, sandbox_id: str, upstream_for: UpstreamFor):
        super().__init__(listener.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = listener
        self.sandbox_id = sandbox_id
        self.upstream_for = upstream_for


class SandboxForwards:
    """The listeners and rules of this node's gVisor pods (sandbox id -> netns path)."""

    def __init__(self, upstream_for: UpstreamFor, listen_port: int = LISTEN_PORT) -> None:
        self.upstream_for = upstream_for
        self.listen_port = listen_port
        self._servers: dict[str, tuple[str, _Forwarder]] = {}
        self._lock = threading.Lock()

    def apply(self, wanted: Mapping[str, str]) -> list[str]:
        """Listeners and rules for exactly the sandboxes in `wanted`; a gone pod's
        listener is closed (it would keep the namespace alive). Returns the problems met
        (one per sandbox that could not be served this pass; the next pass retries)."""
        problems = []
        with self._lock:
            for sandbox_id in [s for s in self._servers if s not in wanted]:
                self._stop(sandbox_id)
            for sandbox_id, netns in wanted.items():
                have = self._servers.get(sandbox_id)
                if have is not None and have[0] == netns:
                    continue
                if have is not None:
                    self._stop(sandbox_id)
                try:
                    self._start(sandbox_id, netns)
                except (OSError, StackubeError) as exc:
                    problems.append(f"port-forward into gVisor pod {sandbox_id[:12]}: {exc}")
        return problems

    def close(self) -> None:
        with self._lock:
            for sandbox_id in list(self._servers):
                self._stop(sandbox_id)

    def _start(self, sandbox_id: str, netns: str) -> None:
        port = self.listen_port
        listener = netlink.in_netns(netns, lambda: socket.create_server(("127.0.0.1", port)))
        try:
            iptables.restore(netns, render_rules(port))
            iptables.ensure_jump(netns, "nat", "OUTPUT", CHAIN)
        except BaseException:
            listener.close()
            raise
        server = _Forwarder(listener, sandbox_id, self.upstream_for)
        threading.Thread(
            target=server.serve_forever, name=f"port-forward-{sandbox_id[:12]}", daemon=True
        ).start()
        self._servers[sandbox_id] = (netns, server)
        log.info("port-forward into gVisor pod %s served (in %s)", sandbox_id[:12], netns)

    def _stop(self, sandbox_id: str) -> None:
        """Ends the listener without waiting (serve_forever notices within its 0.5 s
        poll; the socket, and with it the netns, is closed right after)."""
        _, server = self._servers.pop(sandbox_id)

        def close() -> None:
            server.shutdown()
            server.server_close()
            log.info("port-forward into gVisor pod %s closed", sandbox_id[:12])

        threading.Thread(target=close, name=f"port-forward-close-{sandbox_id[:12]}").start()
