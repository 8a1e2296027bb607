"""`up` restarts what died; `down` leaves nothing behind; `up` again restores all.

Named to run last in the session: `down` stops the devbox the other tests use
(and `up` at its end leaves it running again for whoever comes next).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from stackube.devbox import cleanup, podaccess
from stackube.devbox.box import HELPER_COMMANDS, Devbox
from stackube.devbox.node import NodeDevbox
from stackube.devbox.openstack import WATCHED_SYSCTLS
from stackube.devbox.process import pids_mentioning
from stackube.host import netlink, sysctl

pytestmark = pytest.mark.integration


def live_process_names() -> set[str]:
    """Command names of live processes (zombies awaiting their reaper do not count)."""
    names = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            comm, rest = stat.split("(", 1)[1].rsplit(")", 1)
            if rest.split()[0] != "Z":
                names.add(comm)
    return names


@pytest.mark.parametrize("victim", ["kube-scheduler", "neutron-dhcp-agent"])
def test_up_restarts_a_service_that_died(devbox: Devbox, victim: str) -> None:
    old = devbox.table.pid(victim)
    assert old is not None
    os.killpg(old, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while devbox.table.pid(victim) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert devbox.table.pid(victim) is None

    devbox.up()

    new = devbox.table.pid(victim)
    assert new is not None and new != old
    assert [row.name for row in devbox.status() if not row.healthy] == []


def test_down_removes_everything_and_up_brings_it_back(devbox: Devbox) -> None:
    state = devbox.settings.state_dir
    recorded = json.loads((state / "sysctl-snapshot.json").read_text())

    devbox.down()

    assert all(row.pid is None for row in devbox.status())
    assert pids_mentioning(str(state), HELPER_COMMANDS) == []
    assert not {"epmd", "beam.smp", "dnsmasq", "mariadbd"} & live_process_names()
    assert cleanup.namespaces_to_remove(netlink.namespaces()) == []
    own = [devbox.settings.external_host_veth, devbox.settings.external_agent_veth]
    assert cleanup.links_to_remove(netlink.link_names(), own) == []
    for save, _ in cleanup.FIREWALLS:
        text = subprocess.run([save], capture_output=True, text=True, check=False).stdout
        assert cleanup.strip_chains(text, (*cleanup.CHAIN_PREFIXES, "STKB-DEVBOX")) is None, save
    sets = subprocess.run(["ipset", "list", "-n"], capture_output=True, text=True, check=False)
    assert cleanup.ipsets_to_remove(sets.stdout.split()) == []
    for key in WATCHED_SYSCTLS:
        assert sysctl.read(key) == recorded[key], key
    # The node: no container process, mount, pod sandbox or host route is left.
    assert NodeDevbox(devbox.settings).mounts() == []
    assert not {"containerd", "kubelet", "docker-registry", "socat"} & live_process_names()
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True, check=True).stdout
    assert not any(cidr in routes for cidr in podaccess.host_routes(devbox.settings)), routes

    devbox.up()
    assert [row.name for row in devbox.status() if not row.healthy] == []
