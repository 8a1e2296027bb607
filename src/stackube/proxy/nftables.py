"""A tenant's Services as one native nftables table in its Neutron router (pure).

The table `ip stackube` holds sets and maps keyed by destination (address . protocol .
port) and a handful of rules that look them up, as kube-proxy's nftables mode does, so
a change is a few element updates whatever the number of Services. No chain per
Service: listing and dumping a table slows down with its number of chains (measured in
docs/benchmarks.md), and a Service without session affinity needs none.

    prerouting (nat, dstnat - 1):
      restricted destination . source not in @allowed  -> return (loadBalancerSourceRanges)
      destination vmap @services -> goto dispatch-<n> (n endpoints) or aff-<hash>
    dispatch-<n> (one per endpoint count in use, never edited):
      mark 0x2/0xffff, dnat to @endpoints-<n>[destination . numgen random mod n]
    input (filter): destination in @no-endpoints -> reject; the service range -> reject;
          a load balancer address (what was not DNATed) -> drop
    postrouting (nat, srcnat - 1): DNATed from the service range or @masqueraded -> masquerade

A destination is a ClusterIP:port, a load balancer or external address:port (on the
router's gateway) or the router's external address:nodePort, each with the same
endpoints. ClientIP affinity: a chain per such Service port (`aff-<hash>`) with a
dynamic set per endpoint remembering its clients for the timeout, as
kube-proxy's nftables mode does.

Why the pieces (the service range routed `local`, the masquerade, the Neutron mark) are
as in the iptables renderer: stackube.proxy.render. Our chains run at priorities
next to Neutron's iptables-nft chains (`ip nat`, `ip filter`): dstnat - 1 and srcnat - 1
run before Neutron's, so our DNAT and masquerade take effect whatever Neutron writes
(the first NAT binding of a connection wins); the 0x2 mark keeps Neutron's SNAT off
service traffic anyway.

Sources: nft(8) (sets, maps, concatenations, numgen, dynamic sets, `update`), and
kube-proxy's nftables proxier (KEP-3866) for the layout.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from stackube.proxy.model import Endpoint, ServicePort

FAMILY = "ip"
TABLE = "stackube"
PREROUTING = "prerouting"
INPUT = "input"
POSTROUTING = "postrouting"
BASE_CHAINS = {
    PREROUTING: "type nat hook prerouting priority dstnat - 1; policy accept;",
    INPUT: "type filter hook input priority filter; policy accept;",
    POSTROUTING: "type nat hook postrouting priority srcnat - 1; policy accept;",
}
DESTINATION = "ip daddr . meta l4proto . th dport"
DESTINATION_TYPE = "ipv4_addr . inet_proto . inet_service"
# Neutron's L3 agent SNATs DNATed connections unless they carry this mark (render.py).
NEUTRON_MARK = "meta mark set meta mark & 0xffff0000 | 0x00000002"
# Sets and maps every table has (name -> declaration).
FIXED_SETS = {
    "services": f"type {DESTINATION_TYPE} : verdict;",
    "restricted": f"type {DESTINATION_TYPE};",
    "allowed": f"type {DESTINATION_TYPE} . ipv4_addr; flags interval;",
    "no-endpoints": f"type {DESTINATION_TYPE};",
    "masqueraded": "type ipv4_addr;",
    "load-balancers": "type ipv4_addr;",
}

GATEWAY_SETS = ("load-balancers", "masqueraded")
Element = tuple[str, str]  # (set or map, key)
ServiceKey = tuple[str, str]  # (namespace, name)
PortKey = tuple[str, str, str]  # (namespace, Service name, ServicePort.key + ClusterIP)


def dispatch_chain(count: int) -> str:
    return f"dispatch-{count}"


def endpoints_map(count: int) -> str:
    return f"endpoints-{count}"


def count_declarations(count: int) -> dict[str, str]:
    """The map of the Service ports with `count` endpoints: destination and a number
    below `count` -> endpoint."""
    return {
        endpoints_map(count): (
            f"typeof {DESTINATION} . numgen random mod {count} : ip daddr . th dport;"
        )
    }


def count_chain(count: int) -> tuple[str, ...]:
    """The rules of dispatch-<count>: one of the destination's endpoints, each with the
    same chance. (A chain of its own, made with its map in one transaction and never
    edited: nft 1.0.6 refuses a rule naming a `typeof` map that it reads back from the
    kernel, "conflicting protocols specified: tcp vs. th".)"""
    return (
        f"{NEUTRON_MARK} meta l4proto {{ tcp, udp }} "
        f"dnat to {DESTINATION} . numgen random mod {count} map @{endpoints_map(count)}",
    )


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def affinity_chain(port: ServicePort) -> str:
    """The Service port's chain (ClientIP affinity): the same name whatever its
    endpoints (its rules are rewritten when they change)."""
    return f"aff-{_hash(f'{port.key}|{port.cluster_ip}')}"


def affinity_set(port: ServicePort, endpoint: Endpoint) -> str:
    """The dynamic set of the clients an endpoint got, and the chain that adds to it:
    named after the endpoint and the timeout, so an endpoint that stays keeps its
    clients when others come or go (as kube-proxy's per-endpoint affinity sets)."""
    text = f"{port.key}|{port.cluster_ip}|{port.affinity_seconds}|{endpoint.ip}:{endpoint.port}"
    return f"aff-{_hash(text)}"


def allowed_sources(ranges: Iterable[str]) -> list[str]:
    """loadBalancerSourceRanges as the interval set takes them: IPv4 only (an IPv6
    range admits no IPv4 client), merged (nft refuses overlapping intervals, and one
    refused element fails the router's whole transaction)."""
    networks = []
    for text in ranges:
        try:
            network = ipaddress.ip_network(str(text).strip(), strict=False)
        except ValueError:
            continue
        if isinstance(network, ipaddress.IPv4Network):
            networks.append(network)
    return [str(n) for n in ipaddress.collapse_addresses(networks)]


def _destination(address: str, protocol: str, number: int) -> str:
    return f"{address} . {protocol.lower()} . {number}"


def _dnat(protocol: str, endpoint: Endpoint) -> str:
    return f"meta l4proto {protocol.lower()} dnat to {endpoint.ip}:{endpoint.port}"


@dataclass(frozen=True)
class PortRules:
    """What one Service port puts in the table: elements, the endpoint count whose
    dispatch chain serves it (0: none), its own chains and dynamic sets (ClientIP
    affinity only), and the addresses it needs on the router's gateway."""

    elements: tuple[tuple[Element, str], ...] = ()
    count: int = 0
    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sets: tuple[tuple[str, str], ...] = ()
    addresses: tuple[str, ...] = ()  # load balancer and external addresses (gateway)


def port_rules(port: ServicePort, external_ip: str) -> PortRules:
    """The elements, chains and sets of one Service port (`external_ip`: the router's
    address on the external network, where its nodePort is served; "" unknown)."""
    destinations = [_destination(port.cluster_ip, port.protocol, port.port)]
    if port.node_port is not None and external_ip:
        destinations.append(_destination(external_ip, port.protocol, port.node_port))
    restricted = []
    for address in port.addresses:
        destination = _destination(address, port.protocol, port.port)
        destinations.append(destination)
        if port.source_ranges and address in port.load_balancer_ips:
            restricted.append(destination)
    # The router answers for these addresses: what is DNATed there is masqueraded,
    # what is not is dropped.
    elements: list[tuple[Element, str]] = [
        ((name, address), "") for address in port.addresses for name in GATEWAY_SETS
    ]
    ranges = allowed_sources(port.source_ranges)
    for destination in restricted:
        elements.append((("restricted", destination), ""))
        elements += [(("allowed", f"{destination} . {r}"), "") for r in ranges]
    if not port.endpoints:
        elements += [(("no-endpoints", d), "") for d in destinations]
        return PortRules(tuple(elements), addresses=port.addresses)
    if port.affinity_seconds:
        return _affinity_rules(port, destinations, elements)
    count = len(port.endpoints)
    for destination in destinations:
        elements.append((("services", destination), f"goto {dispatch_chain(count)}"))
        elements += [
            ((endpoints_map(count), f"{destination} . {index}"), f"{e.ip} . {e.port}")
            for index, e in enumerate(port.endpoints)
        ]
    return PortRules(tuple(elements), count, addresses=port.addresses)


def _affinity_rules(
    port: ServicePort, destinations: list[str], elements: list[tuple[Element, str]]
) -> PortRules:
    chain = affinity_chain(port)
    elements += [(("services", d), f"goto {chain}") for d in destinations]
    remembered = [affinity_set(port, endpoint) for endpoint in port.endpoints]
    rules = [NEUTRON_MARK]
    rules += [
        f"ip saddr @{name} {_dnat(port.protocol, endpoint)}"
        for name, endpoint in zip(remembered, port.endpoints, strict=True)
    ]
    choices = ", ".join(f"{index} : goto {name}" for index, name in enumerate(remembered))
    rules.append(f"numgen random mod {len(remembered)} vmap {{ {choices} }}")
    chains = [(chain, tuple(rules))]
    chains += [
        (name, (f"update @{name} {{ ip saddr }} {_dnat(port.protocol, endpoint)}",))
        for name, endpoint in zip(remembered, port.endpoints, strict=True)
    ]
    timeout = f"type ipv4_addr; flags dynamic,timeout; timeout {port.affinity_seconds}s;"
    sets = tuple((name, timeout) for name in remembered)
    return PortRules(tuple(elements), 0, tuple(chains), sets, port.addresses)


def base_chains(counts: Iterable[int], service_cidr: str) -> dict[str, tuple[str, ...]]:
    """The three base chains' rules, and a dispatch chain per endpoint count in use."""
    prerouting = (
        f"{DESTINATION} @restricted {DESTINATION} . ip saddr != @allowed return",
        f"{DESTINATION} vmap @services",
    )
    return {
        **{dispatch_chain(n): count_chain(n) for n in counts},
        PREROUTING: prerouting,
        INPUT: (
            f"meta l4proto tcp {DESTINATION} @no-endpoints reject with tcp reset",
            f"{DESTINATION} @no-endpoints reject",
            f"ip daddr {service_cidr} meta l4proto tcp reject with tcp reset",
            f"ip daddr {service_cidr} reject",
            "ip daddr @load-balancers drop",
        ),
        POSTROUTING: (
            f"ct status dnat ct original ip daddr {service_cidr} masquerade",
            "ct status dnat ct original ip daddr @masqueraded masquerade",
        ),
    }


def port_key(port: ServicePort) -> PortKey:
    return (port.namespace, port.service, f"{port.key}@{port.cluster_ip}")


def router_elements(external_ip: str) -> dict[Element, str]:
    """The elements the router itself needs, apart from any port's: its external
    address, where NodePorts enter, is masqueraded."""
    return {("masqueraded", external_ip): ""} if external_ip else {}


@dataclass
class TableState:
    """What is in one router's table: each port's rules, the ports of each Service, the
    elements with the ports that want each (the first port's value wins: two Services
    may name the same external address), the router's own elements, how many ports use
    each endpoint count's dispatch chain, and the ports that have chains of their own or
    addresses on the gateway."""

    service_cidr: str
    ports: dict[PortKey, PortRules] = field(default_factory=dict)
    services: dict[ServiceKey, set[PortKey]] = field(default_factory=dict)
    owners: dict[Element, dict[PortKey, str]] = field(default_factory=dict)
    router: dict[Element, str] = field(default_factory=dict)
    uses: dict[int, int] = field(default_factory=dict)
    special: dict[PortKey, PortRules] = field(default_factory=dict)

    def value(self, element: Element) -> str | None:
        if element in self.router:
            return self.router[element]
        owners = self.owners.get(element)
        return owners[min(owners)] if owners else None

    def counts(self) -> set[int]:
        return {n for n, ports in self.uses.items() if ports}

    def sets(self) -> dict[str, str]:
        found = dict(FIXED_SETS)
        for n in self.counts():
            found.update(count_declarations(n))
        for rules in self.special.values():
            found.update(rules.sets)
        return found

    def chains(self) -> dict[str, tuple[str, ...]]:
        found = base_chains(self.counts(), self.service_cidr)
        for rules in self.special.values():
            found.update(rules.chains)
        return found

    def addresses(self) -> set[str]:
        """Every load balancer and external address the router serves."""
        return {a for rules in self.special.values() for a in rules.addresses}


def change(
    state: TableState,
    wanted: Mapping[ServiceKey, Mapping[PortKey, PortRules]],
    router: Mapping[Element, str],
    complete: bool,
) -> str:
    """Makes `state` hold the ports of each Service in `wanted` as given (a Service with
    no ports: none left) and the router's elements; `complete`: `wanted` is every
    Service (the others are removed). Returns the `nft -f` script (one transaction) from
    what the state was to what it is ("" when nothing changed). In place, for an
    identity check per port given plus work for the ports that changed: if the script
    is not applied, the state no longer says what the kernel has (start again whole)."""
    sets, chains = state.sets(), state.chains()
    edit = _Edit(state)
    for element in router.keys() | state.router.keys():
        edit.old.setdefault(element, state.value(element))
    state.router = dict(router)
    gone = [k for k in state.services if k not in wanted] if complete else []
    for service in gone:
        for key in state.services.pop(service):
            edit.drop(key)
    for service, ports in wanted.items():
        had = state.services.get(service, set())
        for key in had - ports.keys():
            edit.drop(key)
        for key, rules in ports.items():
            if state.ports.get(key) is not rules:
                if key in had:
                    edit.drop(key)
                edit.add(key, rules)
        if ports:
            state.services[service] = set(ports)
        else:
            state.services.pop(service, None)
    edit.finish()
    return _change_script(sets, chains, edit.old, state)


class _Edit:
    """Changes to a TableState's ports, with each touched element's value from before."""

    def __init__(self, state: TableState) -> None:
        self.state = state
        self.old: dict[Element, str | None] = {}

    def _owners(self, element: Element) -> dict[PortKey, str]:
        if element not in self.old:
            self.old[element] = self.state.value(element)
        return self.state.owners.setdefault(element, {})

    def drop(self, key: PortKey) -> None:
        rules = self.state.ports.pop(key)
        for element, _ in rules.elements:
            self._owners(element).pop(key, None)
        if rules.count:
            self.state.uses[rules.count] -= 1
        self.state.special.pop(key, None)

    def add(self, key: PortKey, rules: PortRules) -> None:
        for element, value in rules.elements:
            self._owners(element)[key] = value
        if rules.count:
            self.state.uses[rules.count] = self.state.uses.get(rules.count, 0) + 1
        if rules.chains or rules.sets or rules.addresses:
            self.state.special[key] = rules
        self.state.ports[key] = rules

    def finish(self) -> None:
        for element in self.old:
            if element in self.state.owners and not self.state.owners[element]:
                del self.state.owners[element]


def _elements_text(op: str, items: Iterable[tuple[Element, str]]) -> list[str]:
    """`add element` / `delete element` lines, grouped by set (values only for adds)."""
    grouped: dict[str, list[str]] = {}
    for (name, key), value in items:
        grouped.setdefault(name, []).append(f"{key} : {value}" if value and op == "add" else key)
    return [
        f"{op} element {FAMILY} {TABLE} {name} {{ {', '.join(entries)} }}"
        for name, entries in sorted(grouped.items())
    ]


def _declare_set(name: str, declaration: str) -> str:
    kind = "map" if " : " in declaration else "set"
    return f"add {kind} {FAMILY} {TABLE} {name} {{ {declaration} }}"


def full_script(state: TableState) -> str:
    """An `nft -f` script that replaces the whole table with `state`, atomically (the
    table is made, deleted and made again in one transaction)."""
    lines = [f"add table {FAMILY} {TABLE}", f"delete table {FAMILY} {TABLE}"]
    lines.append(f"add table {FAMILY} {TABLE}")
    lines += [_declare_set(name, decl) for name, decl in sorted(state.sets().items())]
    chains = state.chains()
    # Every chain before any rule: rules and the affinity map name other chains.
    for name in sorted(chains):
        header = f" {{ {BASE_CHAINS[name]} }}" if name in BASE_CHAINS else ""
        lines.append(f"add chain {FAMILY} {TABLE} {name}{header}")
    for name in sorted(chains):
        lines += [f"add rule {FAMILY} {TABLE} {name} {rule}" for rule in chains[name]]
    values = {e: state.value(e) for e in [*state.owners, *state.router]}
    lines += _elements_text("add", [(e, v) for e, v in values.items() if v is not None])
    return "\n".join(lines) + "\n"


def _change_script(
    sets_before: Mapping[str, str],
    chains_before: Mapping[str, tuple[str, ...]],
    old: Mapping[Element, str | None],
    after: TableState,
) -> str:
    """The transaction from a table with `sets_before`, `chains_before` and the element
    values in `old` to `after` (only the elements in `old` may differ)."""
    removed: list[tuple[Element, str]] = []
    added: list[tuple[Element, str]] = []
    for element, was in old.items():
        now = after.value(element)
        if was == now:
            continue
        if was is not None:
            removed.append((element, was))
        if now is not None:
            added.append((element, now))
    sets_after, chains_after = after.sets(), after.chains()
    lines = [_declare_set(n, d) for n, d in sorted(sets_after.items()) if n not in sets_before]
    new_chains = sorted(n for n in chains_after if n not in chains_before)
    lines += [f"add chain {FAMILY} {TABLE} {name}" for name in new_chains]
    for name in sorted(chains_after):
        rules = chains_after[name]
        if name in new_chains or chains_before.get(name) != rules:
            if name not in new_chains:
                lines.append(f"flush chain {FAMILY} {TABLE} {name}")
            lines += [f"add rule {FAMILY} {TABLE} {name} {rule}" for rule in rules]
    lines += _elements_text("delete", removed)
    lines += _elements_text("add", added)
    # Emptied first, so that none is still named by a rule of another when deleted.
    gone = sorted(name for name in chains_before if name not in chains_after)
    lines += [f"flush chain {FAMILY} {TABLE} {name}" for name in gone]
    lines += [f"delete chain {FAMILY} {TABLE} {name}" for name in gone]
    lines += [
        f"delete {'map' if ' : ' in sets_before[n] else 'set'} {FAMILY} {TABLE} {n}"
        for n in sorted(sets_before)
        if n not in sets_after
    ]
    return "\n".join(lines) + "\n" if lines else ""
