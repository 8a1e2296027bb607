"""How pods reach the API server on the devbox.

kube-apiserver listens on loopback only. Pods live behind their tenant's Neutron
router, whose gateway port is on the external segment; the host owns one address there
(kept out of Neutron's pool), where a relay (socat) passes the API port to loopback.
Nothing else is exposed. (A DNAT rule cannot do it here: the external segment is
bridged on the host with bridge-nf-call-iptables on, so the connection's NAT decision
is taken, empty, while it crosses the bridge, before it reaches the host's address.)
"""

from __future__ import annotations

import ipaddress

from stackube.devbox import health
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.host import netlink

SERVICE_NAME = "apiserver-pod-access"


def host_cidr(settings: DevboxSettings) -> str:
    prefix = ipaddress.ip_network(settings.external_cidr).prefixlen
    return f"{settings.external_host_address}/{prefix}"


def relay_argv(settings: DevboxSettings) -> list[str]:
    port = settings.ports.kube_apiserver
    return [
        "socat",
        f"TCP-LISTEN:{port},bind={settings.external_host_address},reuseaddr,fork",
        f"TCP:{settings.host}:{port}",
    ]


def service(settings: DevboxSettings) -> Service:
    """The relay, once the host has its address on the external veth (which the L2
    agent's preparation creates)."""
    return Service(
        name=SERVICE_NAME,
        process=lambda: ProcessSpec(SERVICE_NAME, relay_argv(settings)),
        probe=health.tcp_open(settings.external_host_address, settings.ports.kube_apiserver),
        start_timeout=10,
        prepare=lambda: _ensure_host_address(settings),
    )


def _ensure_host_address(settings: DevboxSettings) -> None:
    netlink.ensure_address(settings.external_host_veth, host_cidr(settings))
