"""Open vSwitch for the devbox's ML2/OVS backend: ovsdb-server and ovs-vswitchd as
supervised foreground processes (no systemd, no ovs-ctl daemonizing), the userspace
`netdev` datapath (there is no openvswitch kernel module here), and the bridges the
Neutron agent expects: br-int, and br-ex holding the external segment's veth end."""

from __future__ import annotations

from pathlib import Path

from stackube.devbox import health
from stackube.devbox.commands import run
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings

# OVS's own default runtime directory: ovs-vsctl, the agents and the CNI daemon find
# the database socket there without options.
OVS_RUN = Path("/var/run/openvswitch")
SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
OVSDB_TCP = "ptcp:6640:127.0.0.1"  # Neutron's default ovsdb_connection
# Tap devices of the netdev datapath (its bridges' internal ports).
NETDEV_LINKS = ("br-int", "br-ex", "br-tun", "ovs-netdev")


def vsctl(*args: str, timeout: int = 10) -> str:
    return run(["ovs-vsctl", f"--timeout={timeout}", *args], timeout=timeout + 5).stdout


def ovsdb_service(settings: DevboxSettings) -> Service:
    db = settings.ovs_db

    def prepare() -> None:
        OVS_RUN.mkdir(parents=True, exist_ok=True)
        db.parent.mkdir(parents=True, exist_ok=True)
        if not db.exists():
            run(["ovsdb-tool", "create", str(db), str(SCHEMA)])

    def after_start() -> None:
        # Before vswitchd runs, `set` needs --no-wait or it waits forever. Without
        # userspace TSO, TCP and UDP from veths is dropped (bad checksums) while ICMP
        # passes, which misleads.
        vsctl("--no-wait", "init")
        vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")

    return Service(
        name="ovsdb-server",
        process=lambda: ProcessSpec(
            "ovsdb-server",
            [
                "ovsdb-server",
                str(db),
                f"--remote=punix:{OVS_RUN / 'db.sock'}",
                f"--remote={OVSDB_TCP}",
                f"--pidfile={OVS_RUN / 'ovsdb-server.pid'}",
            ],
        ),
        probe=health.command_ok(["ovs-vsctl", "--timeout=2", "show"]),
        start_timeout=30,
        prepare=prepare,
        after_start=after_start,
    )


def vswitchd_service() -> Service:
    return Service(
        name="ovs-vswitchd",
        process=lambda: ProcessSpec(
            "ovs-vswitchd",
            [
                "ovs-vswitchd",
                f"unix:{OVS_RUN / 'db.sock'}",
                f"--pidfile={OVS_RUN / 'ovs-vswitchd.pid'}",
            ],
        ),
        probe=health.command_ok(["ovs-appctl", "-T", "2", "-t", "ovs-vswitchd", "version"]),
        start_timeout=30,
    )


def ensure_bridges(external_port: str) -> None:
    """br-int and br-ex on the netdev datapath, the external segment on br-ex (the agent
    adds br-tun and the patch ports)."""
    for bridge in ("br-int", "br-ex"):
        vsctl(
            "--may-exist", "add-br", bridge, "--", "set", "Bridge", bridge, "datapath_type=netdev"
        )
    vsctl("--may-exist", "add-port", "br-ex", external_port)
