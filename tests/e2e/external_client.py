"""A client outside the cluster: a network namespace the test makes on the devbox's
external segment (the Linux bridge Neutron's agent keeps for the external network),
with an address Neutron reserves for it (a port on the external network, so no router
or floating IP is ever given the same one)."""

from __future__ import annotations

import ipaddress
import json
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from openstack.connection import Connection

from stackube.devbox.box import Devbox


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass(frozen=True)
class ExternalClient:
    netns: str
    address: str

    def fetch(self, url: str, timeout: float = 5) -> str | None:
        """The body at `url`, fetched from inside the client (None: no answer)."""
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, "curl", "-sS", "-m", str(timeout), url],
            capture_output=True, text=True, check=False, timeout=timeout + 10,
        )  # fmt: skip
        return done.stdout if done.returncode == 0 else None


@contextmanager
def external_client(devbox: Devbox, os_admin: Connection) -> Iterator[ExternalClient]:
    settings = devbox.settings
    network_id = (settings.openstack_dir / "external-network-id").read_text().strip()
    link = json.loads(_ip("-j", "link", "show", settings.external_agent_veth).stdout)[0]
    bridge = link.get("master")
    assert bridge, f"{settings.external_agent_veth} is on no bridge (ML2/OVS devbox?)"
    prefix = ipaddress.ip_network(settings.external_cidr).prefixlen
    suffix = secrets.token_hex(3)
    netns, host_end, client_end = f"stkb-ext-{suffix}", f"stkbc{suffix}", f"stkbd{suffix}"
    port = os_admin.network.create_port(network_id=network_id, name=f"stackube-e2e-client-{suffix}")
    try:
        address = str(port.fixed_ips[0]["ip_address"])
        _ip("netns", "add", netns)
        _ip("link", "add", host_end, "type", "veth", "peer", "name", client_end)
        _ip("link", "set", client_end, "netns", netns)
        _ip("link", "set", host_end, "master", bridge, "up")
        _ip("-n", netns, "addr", "add", f"{address}/{prefix}", "dev", client_end)
        _ip("-n", netns, "link", "set", client_end, "up")
        _ip("-n", netns, "link", "set", "lo", "up")
        yield ExternalClient(netns, address)
    finally:
        _ip("link", "del", host_end, check=False)
        _ip("netns", "del", netns, check=False)
        os_admin.network.delete_port(port.id, ignore_missing=True)
