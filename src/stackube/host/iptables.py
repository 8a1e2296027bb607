"""iptables and conntrack inside a router's network namespace (the tools Neutron's L3
agent uses there too, so both see the same tables)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from stackube.errors import TemporaryError
from stackube.host import netlink

NETNS_DIR = "/var/run/netns"
TIMEOUT = 60
RESTORE_TIMEOUT = 600  # a full sync of a very large tenant can take minutes with iptables-nft


def run_in(
    netns: str,
    argv: Sequence[str],
    input_text: str | None = None,
    check: bool = True,
    timeout: float = TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """`argv` inside the named netns (a name under NETNS_DIR, or a path: a pod's), or in
    this (the node's) one when `netns` is ""."""
    path = netns if netns.startswith("/") else f"{NETNS_DIR}/{netns}"
    enter = ["nsenter", f"--net={path}"] if netns else []
    try:
        done = subprocess.run(
            [*enter, *argv],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TemporaryError(f"{argv[0]} in {netns}: {exc}") from exc
    if check and done.returncode != 0:
        raise TemporaryError(f"{' '.join(argv[:3])} in {netns}: {done.stderr.strip()[-500:]}")
    return done


def chains(netns: str, table: str) -> set[str]:
    """The chains of one table (from iptables-save: `:NAME POLICY [counters]` lines)."""
    saved = run_in(netns, ["iptables-save", "-t", table]).stdout
    return {line[1:].split()[0] for line in saved.splitlines() if line.startswith(":")}


def rules(netns: str, table: str) -> list[str]:
    saved = run_in(netns, ["iptables-save", "-t", table]).stdout
    return [line for line in saved.splitlines() if line.startswith("-A ")]


def restore(netns: str, text: str) -> None:
    """Apply `text` atomically per table, leaving every chain it does not name alone."""
    run_in(
        netns,
        ["iptables-restore", "--noflush", "-w", "5"],
        input_text=text,
        timeout=RESTORE_TIMEOUT,
    )


def ensure_jump(netns: str, table: str, chain: str, target: str, match: Sequence[str] = ()) -> bool:
    """`[match] -j target` first in `chain`, once. Returns True if it had to be added."""
    spec = ["-t", table, *match, "-j", target]
    if run_in(netns, ["iptables", "-w", "5", "-C", chain, *spec], check=False).returncode == 0:
        return False
    run_in(netns, ["iptables", "-w", "5", "-I", chain, "1", *spec])
    return True


def remove_jump(netns: str, table: str, chain: str, target: str) -> bool:
    """Remove every `-j target` rule without a match from `chain`. Returns whether one
    was there."""
    removed = False
    spec = ["-t", table, "-j", target]
    while run_in(netns, ["iptables", "-w", "5", "-D", chain, *spec], check=False).returncode == 0:
        removed = True
    return removed


def jump_position_ok(rules: Sequence[str], jump: str, ahead_of: str) -> bool:
    """Whether `jump` (an `iptables -S` line) is among `rules` and comes before every
    rule that jumps to `ahead_of` (pure)."""
    if jump not in rules:
        return False
    theirs = [i for i, rule in enumerate(rules) if rule.endswith(f"-j {ahead_of}")]
    return not theirs or rules.index(jump) < min(theirs)


def ensure_jump_ahead_of(
    netns: str, table: str, chain: str, target: str, *, match: Sequence[str], ahead_of: str
) -> bool:
    """`[match] -j target` in `chain`, before any jump to `ahead_of` (which someone
    else may put first at any time: the kubelet re-inserts KUBE-FIREWALL). Moved to
    the top when it is behind. Returns True if it had to be added or moved."""
    listed = run_in(netns, ["iptables", "-w", "5", "-t", table, "-S", chain]).stdout.splitlines()
    jump = " ".join(["-A", chain, *match, "-j", target])
    if jump_position_ok(listed, jump, ahead_of):
        return False
    spec = ["-t", table, *match, "-j", target]
    if jump in listed:
        run_in(netns, ["iptables", "-w", "5", "-D", chain, *spec])
    run_in(netns, ["iptables", "-w", "5", "-I", chain, "1", *spec])
    return True


def forget_udp_flows(netns: str, cluster_ip: str, port: int, endpoint_ip: str) -> None:
    """Drop conntrack entries of UDP flows to a ClusterIP that were DNATed to an
    endpoint that is gone (exit status 1 means there were none)."""
    run_in(
        netns,
        [
            "conntrack",
            "-D",
            "-p",
            "udp",
            "--orig-dst",
            cluster_ip,
            "--orig-port-dst",
            str(port),
            "--reply-src",
            endpoint_ip,
        ],
        check=False,
    )


def namespace_exists(netns: str) -> bool:
    return Path(NETNS_DIR, netns).exists()


def ensure_local_route(netns: str, cidr: str) -> bool:
    return netlink.ensure_local_route(f"{NETNS_DIR}/{netns}", cidr)


# A Neutron router's gateway port (on the external network).
GATEWAY_PREFIX = "qg-"


def load_balancer_addresses(netns: str) -> dict[str, str]:
    """{address: cidr} of the extra addresses on the router's gateway port (ours: a
    floating IP Neutron's agent put there is a /32, never listed)."""
    return netlink.gateway_secondaries(f"{NETNS_DIR}/{netns}", GATEWAY_PREFIX)


def add_load_balancer_address(netns: str, address: str) -> bool:
    """The address on the router's gateway port (it then answers ARP for it), and a
    gratuitous ARP so neighbours forget an older owner. True if it was added."""
    added = netlink.ensure_gateway_secondary(f"{NETNS_DIR}/{netns}", GATEWAY_PREFIX, address)
    if added:
        _announce(netns, address)
    return added


def delete_load_balancer_address(netns: str, cidr: str) -> bool:
    return netlink.delete_gateway_secondary(f"{NETNS_DIR}/{netns}", GATEWAY_PREFIX, cidr)


def _announce(netns: str, address: str) -> None:
    device = next(
        (
            name
            for name in netlink.link_names_in(f"{NETNS_DIR}/{netns}")
            if name.startswith(GATEWAY_PREFIX)
        ),
        None,
    )
    if device is None:
        return
    subprocess.run(
        ["ip", "netns", "exec", netns, "arping", "-U", "-c", "1", "-w", "1", "-I", device, address],
        capture_output=True,
        timeout=10,
        check=False,
    )
