"""What `devbox down` removes from the host besides its own processes: the namespaces,
links, firewall chains and ipsets that Neutron's agents (or the devbox) created.

Deciding what to remove is pure (names and *-save text in, plans out); `apply` does it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from stackube.devbox.commands import run
from stackube.host import netlink

log = logging.getLogger(__name__)

# Neutron's, and containerd's pod sandboxes (`cni-<uuid>`).
NEUTRON_NAMESPACE_PREFIXES = ("qrouter-", "qdhcp-", "snat-", "fip-", "cni-")
NEUTRON_LINK_PREFIXES = ("brq", "tap", "vxlan-")
NEUTRON_CHAIN_PREFIX = "neutron"
# Neutron's agents' chains and the kubelet's (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...).
CHAIN_PREFIXES = (NEUTRON_CHAIN_PREFIX, "KUBE-")
NEUTRON_IPSET_PREFIX = "NIPv"
_CHAIN_REF = re.compile(r"(?:^:|-A |-I |-j |-g )(\S+)")


def namespaces_to_remove(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.startswith(NEUTRON_NAMESPACE_PREFIXES))


def links_to_remove(names: Iterable[str], own_links: Iterable[str]) -> list[str]:
    own = set(own_links)
    return sorted(n for n in names if n.startswith(NEUTRON_LINK_PREFIXES) or n in own)


def ipsets_to_remove(names: Iterable[str]) -> list[str]:
    return sorted(n for n in names if n.startswith(NEUTRON_IPSET_PREFIX))


def _mentions_prefix(line: str, prefix: str | tuple[str, ...]) -> bool:
    return any(ref.startswith(prefix) for ref in _CHAIN_REF.findall(line))


def strip_chains(
    save_text: str, prefix: str | tuple[str, ...] = NEUTRON_CHAIN_PREFIX
) -> str | None:
    """From `iptables-save`/`ebtables-save` output, the restore text for just the tables
    that hold chains named `prefix*`, with those chains and every jump to them removed.
    None when there is nothing to remove."""
    tables: list[list[str]] = []
    current: list[str] | None = None
    changed: set[int] = set()
    for line in save_text.splitlines():
        if line.startswith("*"):
            current = [line]
            tables.append(current)
        elif current is None or line.startswith("#"):
            continue
        elif line.strip() == "COMMIT":
            current.append(line)
            current = None
        elif _mentions_prefix(line, prefix):
            changed.add(len(tables) - 1)
        else:
            current.append(line)
    if not changed:
        return None
    return "".join("\n".join(tables[i]) + "\n" for i in sorted(changed))


@dataclass
class CleanupReport:
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    firewall_tables: list[str] = field(default_factory=list)
    ipsets: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"removed {len(self.namespaces)} namespaces, {len(self.links)} links, "
            f"neutron and kubelet chains in {len(self.firewall_tables)} firewall tool(s), "
            f"{len(self.ipsets)} ipsets"
        )


# (save command, restore command) for each firewall whose chains Neutron adds to.
FIREWALLS = (
    ("iptables-save", "iptables-restore"),
    ("ip6tables-save", "ip6tables-restore"),
    ("ebtables-nft-save", "ebtables-nft-restore"),
)


def apply(own_links: Iterable[str]) -> CleanupReport:
    report = CleanupReport()
    for name in namespaces_to_remove(netlink.namespaces()):
        netlink.delete_namespace(name)
        report.namespaces.append(name)
    report.links = netlink.delete_links(links_to_remove(netlink.link_names(), own_links))
    for save, restore in FIREWALLS:
        saved = run([save], check=False)
        if saved.returncode != 0:
            continue
        text = strip_chains(saved.stdout, CHAIN_PREFIXES)
        if text is not None:
            run([restore], input_text=text)
            report.firewall_tables.append(save)
    sets = run(["ipset", "list", "-n"], check=False).stdout.split()
    for name in ipsets_to_remove(sets):
        run(["ipset", "destroy", name], check=False)
        report.ipsets.append(name)
    return report
