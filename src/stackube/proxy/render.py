"""A tenant's Services as iptables rules for its Neutron router (pure).

In the router's namespace, nat PREROUTING jumps to STKB-SERVICES, which dispatches by
the ClusterIP's /24 to a small chain (STKB-IP-<hex of the /24>), which matches the
exact ClusterIP, protocol and port and jumps to the service port's chain
(STKB-SVC-<hash>): ClientIP affinity, then an equal-probability choice of endpoint,
each a DNAT rule. NodePorts arrive at the router's external address (relayed there by
stackube-proxy on every node, see docs/services.md): STKB-SERVICES sends that address to
STKB-NODEPORTS, which matches protocol and node port and jumps to the same SVC chain.
In POSTROUTING, connections whose original destination was in the service range or the
router's external address are masqueraded, so replies from an endpoint come back
through the router (and the endpoint's security group admits them: see
SERVICES_RULE_DESCRIPTION in the controller).

The service range is routed `local` in the router (a tenant router has no route for it,
and an unroutable destination only earns an ICMP "net unreachable", which TCP treats
as a soft error: clients would hang until their timeout). So whatever was not DNATed,
a port without endpoints or an address that is no Service, is delivered to the router
itself, where filter INPUT refuses it at once (TCP reset, ICMP port unreachable).

The two-level dispatch keeps a change to one Service to a few short chains: the sync
rewrites only chains whose rules changed (`iptables-restore --noflush`), so a change is
live in milliseconds even with 10k Services, and packets walk two short lists, not one
long one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from stackube.netpol.compiler import PodRules
from stackube.netpol.render import ROUTER_CHAIN as NETWORK_POLICY
from stackube.netpol.render import chain_hash, comment, router_chains
from stackube.proxy.model import Endpoint, ServicePort, TenantServices

PREFIX = "STKB-"
SERVICES = "STKB-SERVICES"
POSTROUTING = "STKB-POSTROUTING"
REJECT = "STKB-REJECT"
NODE_PORTS = "STKB-NODEPORTS"
SERVICE_CIDR = "10.96.0.0/12"
# Neutron's L3 agent SNATs every DNATed connection to the router's external address
# (meant for floating IPs) unless it carries the mark of traffic that entered through
# the gateway; its rules come before ours whenever it rewrites the table. Service
# connections carry that mark, so they reach our MASQUERADE whatever the order.
NEUTRON_EXTERNAL_MARK = "0x2/0xffff"

# table -> chain -> rules (each rule without the "-A <chain> " prefix)
Chains = dict[str, tuple[str, ...]]
Tables = dict[str, Chains]

# Where our chains hook into the router's built-in chains (kept in place separately:
# appending them in a --noflush restore would add one more on every sync).
JUMPS: tuple[tuple[str, str, str], ...] = (
    ("nat", "PREROUTING", SERVICES),
    ("nat", "POSTROUTING", POSTROUTING),
    ("filter", "INPUT", REJECT),
    # NetworkPolicy for routed traffic: after DNAT, before masquerade (decision 0013).
    ("filter", "FORWARD", NETWORK_POLICY),
)


def svc_chain(port: ServicePort) -> str:
    return f"STKB-SVC-{chain_hash(port.key + port.cluster_ip)}"


def affinity_list(port: ServicePort, ip: str, number: int) -> str:
    """The `recent` list remembering which clients an endpoint got (ClientIP affinity)."""
    return f"STKB-{chain_hash(f'{port.key}{port.cluster_ip}>{ip}:{number}')}"


def bucket_chain(cluster_ip: str) -> str:
    packed = ipaddress.IPv4Address(cluster_ip).packed
    return f"STKB-IP-{packed[:3].hex()}"


def _bucket_cidr(cluster_ip: str) -> str:
    return str(ipaddress.ip_network(f"{cluster_ip}/24", strict=False))


def _ports_match(protocol: str, number: int) -> str:
    proto = protocol.lower()
    return f"-p {proto} -m {proto} --dport {number}"


def _match(port: ServicePort) -> str:
    return f"-d {port.cluster_ip}/32 {_ports_match(port.protocol, port.port)}"


def _load_balancer_matches(port: ServicePort, address: str) -> list[str]:
    """One match per allowed source range (one without -s when any source may come:
    no loadBalancerSourceRanges, or an externalIP)."""
    dest = f"-d {address}/32 {_ports_match(port.protocol, port.port)}"
    if not port.source_ranges or address not in port.load_balancer_ips:
        return [dest]
    return [f"-s {source} {dest}" for source in port.source_ranges]


def _node_port_match(port: ServicePort, external_ip: str) -> str:
    return f"-d {external_ip}/32 {_ports_match(port.protocol, port.node_port or 0)}"


def _service_rules(
    port: ServicePort, nat: Chains, filter_: Chains, external_ip: str
) -> list[tuple[str, str]]:
    """Adds the port's SVC chain (and its NodePort's dispatch rule when the router's
    external address is known); returns its dispatch rules by address: the ClusterIP's
    and its load balancer addresses' (none: rejected). The DNATs sit in the SVC chain
    itself (no chain per endpoint: iptables-nft slows down sharply with the number of
    chains, and an endpoint change then rewrites one chain)."""
    node_port = port.node_port is not None and bool(external_ip)
    if not port.endpoints:
        reject = "tcp-reset" if port.protocol == "TCP" else "icmp-port-unreachable"
        matches = [_match(port)] + ([_node_port_match(port, external_ip)] if node_port else [])
        matches += [
            f"-d {address}/32 {_ports_match(port.protocol, port.port)}"
            for address in port.addresses
        ]
        filter_[REJECT] += tuple(
            f"{match} {comment(port.key + ' has no endpoints')} -j REJECT --reject-with {reject}"
            for match in matches
        )
        return []
    proto = port.protocol.lower()
    rules = [f"{comment('not for Neutron SNAT')} -j MARK --set-xmark {NEUTRON_EXTERNAL_MARK}"]
    named = [(affinity_list(port, e.ip, e.port), e) for e in port.endpoints]

    def dnat(endpoint: Endpoint) -> str:
        return f"-p {proto} -j DNAT --to-destination {endpoint.ip}:{endpoint.port}"

    if port.affinity_seconds:
        rules += [
            f"-m recent --name {name} --mask 255.255.255.255 --rsource --rcheck "
            f"--seconds {port.affinity_seconds} --reap {dnat(endpoint)}"
            for name, endpoint in named
        ]
    remaining = len(named)
    for name, endpoint in named:
        chance = (
            f"-m statistic --mode random --probability {1 / remaining:.10f} "
            if remaining > 1
            else ""
        )
        remember = (
            f"-m recent --name {name} --mask 255.255.255.255 --rsource --set "
            if port.affinity_seconds
            else ""
        )
        rules.append(
            f"{comment(f'{endpoint.ip}:{endpoint.port}')} {chance}{remember}{dnat(endpoint)}"
        )
        remaining -= 1
    svc = svc_chain(port)
    nat[svc] = tuple(rules)
    if node_port:
        nat[NODE_PORTS] += (f"{_node_port_match(port, external_ip)} {comment(port.key)} -j {svc}",)
    dispatch = [(port.cluster_ip, f"{_match(port)} {comment(port.key)} -j {svc}")]
    for address in port.addresses:
        dispatch += [
            (address, f"{match} {comment(port.key + ' load balancer')} -j {svc}")
            for match in _load_balancer_matches(port, address)
        ]
    return dispatch


def desired_tables(
    tenant: TenantServices,
    service_cidr: str = SERVICE_CIDR,
    policies: Mapping[str, PodRules] | None = None,
) -> Tables:
    """Every STKB chain of one tenant router, with its rules, in a stable order;
    `policies` ({pod IP: PodRules}, stackube.netpol) fill the NetworkPolicy chains."""
    masquerade = comment("service traffic, masqueraded so replies come back via the router")
    nat: Chains = {
        POSTROUTING: (
            f"-m conntrack --ctstate DNAT --ctorigdst {service_cidr} {masquerade} -j MASQUERADE",
        ),
        NODE_PORTS: (),
    }
    if tenant.external_ip:
        nat[POSTROUTING] += (
            f"-m conntrack --ctstate DNAT --ctorigdst {tenant.external_ip}/32 "
            f"{masquerade} -j MASQUERADE",
        )
    filter_: Chains = {REJECT: (), **router_chains(policies or {})}
    buckets: dict[str, list[str]] = {}
    for port in sorted(tenant.ports):
        for address, rule in _service_rules(port, nat, filter_, tenant.external_ip):
            buckets.setdefault(address, []).append(rule)
    for address in load_balancer_ips(tenant):
        nat[POSTROUTING] += (
            f"-m conntrack --ctstate DNAT --ctorigdst {address}/32 {masquerade} -j MASQUERADE",
        )
    by_chain: dict[str, list[str]] = {}
    cidrs: dict[str, str] = {}
    for cluster_ip, rules in buckets.items():
        chain = bucket_chain(cluster_ip)
        by_chain.setdefault(chain, []).extend(rules)
        cidrs[chain] = _bucket_cidr(cluster_ip)
    nat[SERVICES] = tuple(f"-d {cidrs[chain]} -j {chain}" for chain in sorted(by_chain))
    if tenant.external_ip:
        nat[SERVICES] += (f"-d {tenant.external_ip}/32 -j {NODE_PORTS}",)
    # Whatever was not DNATed arrives locally (see LOCAL_ROUTE): refuse it at once.
    filter_[REJECT] += (
        f"-d {service_cidr} -p tcp {comment('no such service port')} "
        "-j REJECT --reject-with tcp-reset",
        f"-d {service_cidr} {comment('no such service port')} "
        "-j REJECT --reject-with icmp-port-unreachable",
    )
    # A load balancer address is routed to the router itself (on its gateway port): what was
    # not DNATed (another port, a source outside loadBalancerSourceRanges) is dropped.
    filter_[REJECT] += tuple(
        f"-d {address}/32 {comment('load balancer: no such port, or source not allowed')} -j DROP"
        for address in load_balancer_ips(tenant)
    )
    for chain, rules in by_chain.items():
        nat[chain] = tuple(rules)
    return {"nat": nat, "filter": filter_}


def load_balancer_ips(tenant: TenantServices) -> list[str]:
    """Every load balancer (and external) address the router serves: each sits on its
    gateway port."""
    return sorted({address for port in tenant.ports for address in port.addresses})


@dataclass(frozen=True)
class Restore:
    text: str
    changed_chains: int
    deleted_chains: int

    @property
    def empty(self) -> bool:
        return not self.changed_chains and not self.deleted_chains


def restore_input(
    desired: Tables, applied: Tables | None, existing: Mapping[str, Iterable[str]]
) -> Restore:
    """`iptables-restore --noflush` input that makes the router's STKB chains `desired`:
    chains whose rules differ from `applied` (all of them when None: after a start) are
    declared (which flushes them) and refilled; STKB chains that exist but are not
    desired are flushed and deleted. Other chains (Neutron's) are never mentioned."""
    lines: list[str] = []
    changed = deleted = 0
    for table in ("nat", "filter"):
        want = desired.get(table, {})
        had = (applied or {}).get(table, {})
        stale = sorted(
            c
            for c in set(existing.get(table, ())) | set(had)
            if c.startswith(PREFIX) and c not in want
        )
        write = [c for c in want if applied is None or had.get(c) != want[c]]
        if not write and not stale:
            continue
        lines.append(f"*{table}")
        lines += [f":{chain} - [0:0]" for chain in (*write, *stale)]
        for chain in write:
            lines += [f"-A {chain} {rule}" for rule in want[chain]]
        lines += [f"-X {chain}" for chain in stale]
        lines.append("COMMIT")
        changed += len(write)
        deleted += len(stale)
    return Restore("\n".join(lines) + "\n" if lines else "", changed, deleted)


def udp_endpoints_removed(
    before: TenantServices | None, after: TenantServices
) -> list[tuple[str, int, str]]:
    """(ClusterIP, port, endpoint IP) of UDP endpoints that went away: their conntrack
    entries would keep sending datagrams to the old endpoint."""
    if before is None:
        return []
    return udp_flows_removed(before.ports, after.ports)


def udp_flows_removed(
    before: Iterable[ServicePort], after: Iterable[ServicePort]
) -> list[tuple[str, int, str]]:
    """udp_endpoints_removed between two sets of ports (those of the Services that
    changed)."""

    def flows(ports: Iterable[ServicePort]) -> set[tuple[str, int, str]]:
        return {
            (p.cluster_ip, p.port, e.ip) for p in ports if p.protocol == "UDP" for e in p.endpoints
        }

    return sorted(flows(before) - flows(after))
