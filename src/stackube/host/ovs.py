"""Open vSwitch through `ovs-vsctl` (the database client OVS ships; no Python binding
is packaged for Debian's OVS 3.1 that we could rely on across versions)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence

from stackube.errors import TemporaryError

OVS_VSCTL_TIMEOUT = 10


def add_port_commands(bridge: str, ifname: str, external_ids: Mapping[str, str]) -> list[str]:
    """ovs-vsctl arguments that add (or keep) `ifname` on `bridge` with these
    external ids, in one transaction (pure)."""
    args = ["--may-exist", "add-port", bridge, ifname, "--", "set", "Interface", ifname]
    args += [f"external-ids:{key}={value}" for key, value in sorted(external_ids.items())]
    return args


def del_port_commands(bridge: str, ifname: str) -> list[str]:
    return ["--if-exists", "del-port", bridge, ifname]


def vsctl(args: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            ["ovs-vsctl", f"--timeout={OVS_VSCTL_TIMEOUT}", *args],
            capture_output=True,
            text=True,
            timeout=OVS_VSCTL_TIMEOUT + 5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TemporaryError(f"ovs-vsctl {' '.join(args)}: {exc}") from exc
    if done.returncode != 0:
        raise TemporaryError(f"ovs-vsctl {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def port_bridge(ifname: str) -> str | None:
    """The bridge `ifname` is a port of, or None."""
    try:
        return vsctl(["port-to-br", ifname]).strip() or None
    except TemporaryError:
        return None
