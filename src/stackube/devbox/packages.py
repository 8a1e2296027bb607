"""The Debian packages the devbox needs, installed the way that works on these machines:
non-interactive, no recommends, old config files kept, and no service started by the
package scripts (a temporary policy-rc.d): the devbox starts every daemon itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stackube.devbox.commands import run

PACKAGES: tuple[str, ...] = (
    "keystone",
    "neutron-server",
    "neutron-linuxbridge-agent",
    "neutron-dhcp-agent",
    "neutron-l3-agent",
    "mariadb-server",
    "rabbitmq-server",
    "python3-openstackclient",
    "uwsgi-core",
    "uwsgi-plugin-python3",
    "iproute2",
    "iptables",
    "nftables",  # stackube-proxy's default backend (stackube.proxy.nftables)
    "ebtables",
    "ipset",
    "conntrack",
    "dnsmasq-base",
    "iputils-ping",
    "socat",  # relays the API server to pods (devbox.podaccess)
    # The node (devbox.node): runtime, the loopback CNI plugin, the image registry and
    # the static busybox our images are made of.
    "containerd",
    "runc",
    "containernetworking-plugins",
    "docker-registry",
    "busybox-static",
    # Storage (devbox.ceph, devbox.cinder, stackube.volume): a one-OSD Ceph cluster,
    # Cinder with its RBD backend, and what a node needs to put an RBD image under a
    # pod without the rbd kernel module (rbd-fuse + a loop device + ext4).
    "ceph-mon",
    "ceph-mgr",
    "ceph-osd",
    "ceph-common",
    "rbd-fuse",
    "python3-rbd",
    "python3-rados",
    "cinder-api",
    "cinder-scheduler",
    "cinder-volume",
    "e2fsprogs",
)

# ML2/Open vSwitch (userspace datapath) instead of the Linux bridge agent.
OVS_PACKAGES: tuple[str, ...] = ("openvswitch-switch", "neutron-openvswitch-agent", "ethtool")


def packages_for(neutron_backend: str) -> tuple[str, ...]:
    return PACKAGES + (OVS_PACKAGES if neutron_backend == "openvswitch" else ())


POLICY_RC = Path("/usr/sbin/policy-rc.d")


def missing_packages(wanted: Sequence[str] = PACKAGES) -> list[str]:
    proc = run(["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *wanted], check=False)
    installed = {
        line.split()[0] for line in proc.stdout.splitlines() if line.strip().endswith(" installed")
    }
    return [p for p in wanted if p not in installed]


def install(packages: Sequence[str]) -> None:
    if not packages:
        return
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    had_policy = POLICY_RC.exists()
    if not had_policy:
        POLICY_RC.write_text(
            "#!/bin/sh\n# stackube devbox: packages must not start services\nexit 101\n"
        )
        POLICY_RC.chmod(0o755)
    try:
        run(["apt-get", "update", "-q"], env=env, timeout=900)
        run(
            [
                "apt-get",
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "Dpkg::Options::=--force-confdef",
                *packages,
            ],
            env=env,
            timeout=1800,
        )
    finally:
        if not had_policy:
            POLICY_RC.unlink(missing_ok=True)
