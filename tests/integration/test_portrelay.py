"""The userspace relays that serve NodePorts and hostPorts, on real sockets (loopback
only: 127.0.0.0/8 gives distinct addresses for frontend, backend and client)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from stackube.host.portrelay import Backend, Frontend, PortRelay

pytestmark = pytest.mark.integration

FRONT = "127.0.0.1"


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        tag = self.server.tag  # type: ignore[attr-defined]
        if isinstance(self.request, socket.socket):
            self.request.sendall(tag)
            while data := self.request.recv(4096):
                self.request.sendall(data)
        else:
            data, sock = self.request
            sock.sendto(tag + data, self.client_address)


def _serve(server: socketserver.BaseServer, tag: bytes) -> socketserver.BaseServer:
    server.tag = tag  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def backends() -> Iterator[dict[str, Backend]]:
    """Two echo servers, each TCP and UDP on one port, that tag their replies."""
    servers = []
    found = {}
    for name, address in (("a", "127.0.0.2"), ("b", "127.0.0.3")):
        tcp = socketserver.ThreadingTCPServer((address, 0), _Echo)
        udp = socketserver.ThreadingUDPServer((address, tcp.server_address[1]), _Echo)
        servers += [_serve(tcp, name.encode() + b":"), _serve(udp, name.encode() + b":")]
        found[name] = Backend(address, tcp.server_address[1])
    yield found
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def relay() -> Iterator[PortRelay]:
    relay = PortRelay("test", udp_idle_seconds=30)
    yield relay
    relay.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((FRONT, 0))
        return int(probe.getsockname()[1])


def tcp_ask(port: int, payload: bytes = b"ping") -> bytes:
    with socket.create_connection((FRONT, port), timeout=5) as conn:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while data := conn.recv(4096):
            chunks.append(data)
        return b"".join(chunks)


def udp_ask(port: int, sock: socket.socket, payload: bytes = b"ping") -> bytes:
    sock.sendto(payload, (FRONT, port))
    data, source = sock.recvfrom(4096)
    assert source == (FRONT, port)  # the reply comes from the address the client asked
    return data


def test_tcp_and_udp_are_relayed_and_follow_a_backend_change(
    relay: PortRelay, backends: dict[str, Backend]
) -> None:
    port = free_port()
    tcp, udp = Frontend("TCP", FRONT, port), Frontend("UDP", FRONT, port)
    # Positive control: nothing listens before the relay does.
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(port)
    assert relay.apply({tcp: backends["a"], udp: backends["a"]}) == {}
    assert tcp_ask(port, b"x" * 200_000) == b"a:" + b"x" * 200_000
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(5)
        assert udp_ask(port, client) == b"a:ping"
        assert relay.apply({tcp: backends["b"], udp: backends["b"]}) == {}
        assert tcp_ask(port) == b"b:ping"
        # The UDP flow to the old backend was dropped: the same client now reaches b.
        assert udp_ask(port, client) == b"b:ping"
    assert relay.frontends() == {tcp, udp}


def test_a_removed_frontend_stops_listening_and_a_taken_port_is_reported(
    relay: PortRelay, backends: dict[str, Backend]
) -> None:
    port = free_port()
    tcp = Frontend("TCP", FRONT, port)
    assert relay.apply({tcp: backends["a"]}) == {}
    assert relay.apply({}) == {}
    with pytest.raises(ConnectionRefusedError):
        tcp_ask(port)
    with socket.socket() as squatter:
        squatter.bind((FRONT, port))
        squatter.listen()
        failed = relay.apply({tcp: backends["a"]})
    assert failed == {tcp: "the port is already in use on this node"}
    # Retried by the next apply once the port is free.
    assert relay.apply({tcp: backends["a"]}) == {}
    assert tcp_ask(port) == b"a:ping"


def test_an_unreachable_backend_resets_the_client(relay: PortRelay) -> None:
    port = free_port()
    assert relay.apply({Frontend("TCP", FRONT, port): Backend("127.0.0.4", free_port())}) == {}
    with socket.create_connection((FRONT, port), timeout=5) as conn:
        conn.settimeout(5)
        with pytest.raises(ConnectionResetError):
            conn.sendall(b"ping")
            if not conn.recv(1):
                raise ConnectionResetError("closed")
