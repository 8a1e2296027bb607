"""nft inside a router's network namespace (stackube-proxy's table there:
stackube.proxy.nftables renders what goes in it)."""

from __future__ import annotations

from stackube.host.iptables import RESTORE_TIMEOUT, run_in


def apply(netns: str, script: str) -> None:
    """Run an `nft -f` script in `netns` as one transaction (all or nothing). Raises
    TemporaryError with nft's message (which names the line) if nft refuses it."""
    run_in(netns, ["nft", "-f", "-"], input_text=script, timeout=RESTORE_TIMEOUT)


def table_exists(netns: str, family: str, table: str) -> bool:
    """Whether `family table` is in `netns`. Raises TemporaryError if nft fails."""
    listed = run_in(netns, ["nft", "list", "tables", family]).stdout
    return f"table {family} {table}" in listed.splitlines()


def delete_table(netns: str, family: str, table: str) -> bool:
    """Remove `family table` from `netns`. Returns whether it was there."""
    if not table_exists(netns, family, table):
        return False
    run_in(netns, ["nft", "delete", "table", family, table])
    return True
