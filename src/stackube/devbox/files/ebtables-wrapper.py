#!/usr/bin/python3
"""ebtables for the Neutron Linux bridge agent on a host with only ebtables-nft.

ebtables-nft 1.8.9 cannot delete an `--among-src` rule by its specification, which
sends the agent into a retry loop that also stalls security-group updates. This
wrapper deletes such rules by their number instead and passes everything else on.
Standalone on purpose: it runs under the system Python that the agent uses.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

REAL_EBTABLES = "/usr/sbin/ebtables-nft"
_NUMBERED_RULE = re.compile(r"^\s*(\d+)\.?\s+(.*)$")


def mac_set(text: str) -> frozenset[tuple[int, ...]]:
    """'fa:16:3e:0a:0b:0c,fa:16:...' -> a set of MACs, so that '0a' equals 'a'."""
    macs = set()
    for item in text.split(","):
        mac = item.strip().split("=")[0]
        if mac:
            macs.add(tuple(int(octet, 16) for octet in mac.split(":")))
    return frozenset(macs)


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def rule_number(args: list[str], listing: str) -> str | None:
    """The number of the listed rule that `-D <chain> ... --among-src X` means."""
    want_macs = mac_set(_option(args, "--among-src") or "")
    want_if = _option(args, "-i")
    want_target = _option(args, "-j")
    for line in listing.splitlines():
        match = _NUMBERED_RULE.match(line)
        if not match or "--among-src" not in match.group(2):
            continue
        words = match.group(2).split()
        if want_if is not None and _option(words, "-i") != want_if:
            continue
        if want_target is not None and _option(words, "-j") != want_target:
            continue
        if mac_set(_option(words, "--among-src") or "") == want_macs:
            return match.group(1)
    return None


def main(args: list[str]) -> int:
    if "-D" in args and "--among-src" in args:
        table = _option(args, "-t") or "filter"
        chain = _option(args, "-D") or ""
        listing = subprocess.run(
            [REAL_EBTABLES, "-t", table, "-L", chain, "--Ln"],
            capture_output=True,
            text=True,
            check=False,
        )
        number = rule_number(args, listing.stdout)
        if number is None:
            print(f"ebtables wrapper: no such rule in {table}/{chain}", file=sys.stderr)
            return 1
        return subprocess.run(
            [REAL_EBTABLES, "-t", table, "-D", chain, number], check=False
        ).returncode
    os.execv(REAL_EBTABLES, [REAL_EBTABLES, *args])  # noqa: S606 - a wrapper passes on
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
