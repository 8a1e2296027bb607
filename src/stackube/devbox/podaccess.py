"""How pods reach the API server on the devbox, what else of the host they reach
(nothing), and how the host never reaches out for pod or Service addresses.

kube-apiserver listens on loopback only. Pods live behind their tenant's Neutron
router, whose gateway port is on the external segment; the host owns one address there
(kept out of Neutron's pool), where a relay (socat) passes the API port to loopback
(and stackube-proxy's relays serve NodePorts).
(A DNAT rule cannot do it here: the external segment is bridged on the host with
bridge-nf-call-iptables on, so the connection's NAT decision is taken, empty, while it
crosses the bridge, before it reaches the host's address.) A guard chain rejects
everything else that arrives there from the segment: the kubelet API and any service
the machine runs on all addresses stay out of tenants' reach.

Tenant networks are isolated and overlap, so the host has no route to pods; without
one, traffic the host sends to a pod or Service address (a kubelet probe, a person's
curl) would follow the default route off the machine. `unreachable` routes for the
pod and Service ranges keep it here.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path

from stackube.devbox import health
from stackube.devbox.commands import StepError, run
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.host import netlink

SERVICE_NAME = "apiserver-pod-access"
GUARD_CHAIN = "STKB-DEVBOX-HOST"
# Hosts the devbox and CI must keep reaching (apt, pip, the Go module proxy).
REGISTRY_HOSTS = ("deb.debian.org", "pypi.org", "files.pythonhosted.org", "proxy.golang.org")


def host_cidr(settings: DevboxSettings) -> str:
    prefix = ipaddress.ip_network(settings.external_cidr).prefixlen
    return f"{settings.external_host_address}/{prefix}"


def relay_argv(settings: DevboxSettings) -> list[str]:
    port = settings.ports.kube_apiserver
    return [
        "socat",
        # Pods of every tenant can reach it: bound the processes they can make it fork.
        f"TCP-LISTEN:{port},bind={settings.external_host_address},reuseaddr,fork,max-children=128",
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


# The API server's default --service-node-port-range: stackube-proxy's relays listen
# there on the host's address (docs/services.md).
NODE_PORT_RANGE = "30000:32767"


def guard_rules(settings: DevboxSettings) -> list[list[str]]:
    """The guard chain (pure): replies, the API relay and NodePorts pass, everything
    else is refused."""
    return [
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
        ["-p", "tcp", "--dport", str(settings.ports.kube_apiserver), "-j", "RETURN"],
        ["-p", "tcp", "--dport", NODE_PORT_RANGE, "-j", "RETURN"],
        ["-p", "udp", "--dport", NODE_PORT_RANGE, "-j", "RETURN"],
        ["-p", "icmp", "-j", "RETURN"],
        ["-j", "REJECT"],
    ]


def guard_jump(settings: DevboxSettings) -> list[str]:
    """What arrives for the host's address from anywhere but the host itself goes
    through it. Not `-i <external veth>`: with bridge-nf-call-iptables on, the Linux
    bridge hands such packets to the host straight from the bridge device."""
    return [
        "!", "-i", "lo",
        "-d", f"{settings.external_host_address}/32",
        "-j", GUARD_CHAIN,
    ]  # fmt: skip


def _iptables(*argv: str, check: bool = True) -> bool:
    return run(["iptables", "-w", "5", *argv], check=check).returncode == 0


def ensure_guard(settings: DevboxSettings) -> None:
    _iptables("-N", GUARD_CHAIN, check=False)
    _iptables("-F", GUARD_CHAIN)
    for rule in guard_rules(settings):
        _iptables("-A", GUARD_CHAIN, *rule)
    if not _iptables("-C", "INPUT", *guard_jump(settings), check=False):
        _iptables("-I", "INPUT", "1", *guard_jump(settings))


def remove_guard(settings: DevboxSettings) -> None:
    while _iptables("-D", "INPUT", *guard_jump(settings), check=False):
        pass
    _iptables("-F", GUARD_CHAIN, check=False)
    _iptables("-X", GUARD_CHAIN, check=False)


def inside(cidr: str, addresses: Iterable[str]) -> list[str]:
    """The addresses that fall inside `cidr` (pure)."""
    network = ipaddress.ip_network(cidr)
    found = []
    for text in addresses:
        try:
            if ipaddress.ip_address(text) in network:
                found.append(text)
        except ValueError:
            continue
    return sorted(set(found))


def addresses_in_use() -> list[str]:
    """What this machine talks to: its nameservers and its registries' addresses."""
    found = []
    resolv = Path("/etc/resolv.conf")
    if resolv.exists():
        for line in resolv.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[0] == "nameserver":
                found.append(fields[1])
    for host in REGISTRY_HOSTS:
        try:
            found += [str(info[4][0]) for info in socket.getaddrinfo(host, 443, socket.AF_INET)]
        except OSError:
            continue
    return found


def host_routes(settings: DevboxSettings) -> list[str]:
    """Ranges the host must never send off the machine."""
    return [settings.user_cidr, settings.tenant_cidr, settings.service_cidr]


def remove_host_routes(settings: DevboxSettings) -> list[str]:
    return [cidr for cidr in host_routes(settings) if netlink.delete_unreachable_route(cidr)]


def _ensure_host_address(settings: DevboxSettings) -> None:
    """The host's address on the external segment makes the whole range local: refuse if
    the machine needs an address in it (it would become unreachable)."""
    used = addresses_in_use()
    for cidr in [settings.external_cidr, *host_routes(settings)]:
        clash = inside(cidr, used)
        if clash:
            raise StepError(
                f"the devbox's range {cidr} holds {', '.join(clash)}, which this machine "
                "uses (nameserver or package registry): pick another range"
            )
    netlink.ensure_address(settings.external_host_veth, host_cidr(settings))
    ensure_guard(settings)
    for cidr in host_routes(settings):
        netlink.ensure_unreachable_route(cidr)
