"""Pod networking is never lost silently: on the devbox's node, with its own CNI daemon
and real pods (a tenant with DNS, nginx and a client), a port deleted behind the
daemon's back comes back with the same address and MAC, a host link deleted is
re-plugged, what cannot be mended is told to the pod, a wiped journal loses no pod, and
a second daemon for the node refuses to start."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.cni.result import host_ifname
from stackube.devbox.box import Devbox
from stackube.devbox.node import NodePaths, cni_daemon_argv
from stackube.host import netlink
from tests.e2e.kubectl import Kubectl
from tests.integration.cni_harness import wait_for
from tests.integration.conftest import unique
from tests.integration.controller_harness import devbox_services_paused
from tests.live_tenant import LiveTenant

pytestmark = pytest.mark.integration

DAEMON = "stackube-cni-daemon"
PING_INTERVAL = 0.2  # seconds between the client's pings


@pytest.fixture(scope="module", autouse=True)
def devbox_node_cordoned() -> Iterator[None]:
    """Overrides the tier's cordon: this module's pods are real pods on the node."""
    yield


@pytest.fixture(scope="module")
def tenant(devbox: Devbox, os_admin: Connection) -> Iterator[LiveTenant]:
    made = LiveTenant(Kubectl(devbox.settings.admin_kubeconfig), os_admin, unique("durable"))
    try:
        yield made.start()
    finally:
        made.delete()


def nginx_pod(tenant: LiveTenant) -> dict[str, Any]:
    pods = tenant.kubectl.json("-n", tenant.name, "get", "pods", "-l", "app=nginx")["items"]
    assert len(pods) == 1, pods
    return dict(pods[0])


class PingLoop:
    """`ping` from the tenant's client pod to an address, in flight while a test breaks
    and mends things; the longest run of lost replies is the outage."""

    def __init__(self, tenant: LiveTenant, address: str, seconds: float) -> None:
        count = int(seconds / PING_INTERVAL)
        self.proc = subprocess.Popen(
            tenant.kubectl.argv(
                "-n", tenant.name, "exec", "client", "--",
                "ping", "-c", str(count), "-i", str(PING_INTERVAL), "-W", "1", address,
            ),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.count = count

    def finish(self) -> tuple[set[int], float]:
        """(sequence numbers answered, the longest outage in seconds)."""
        out, _ = self.proc.communicate(timeout=self.count * PING_INTERVAL + 60)
        answered = {int(n) for n in re.findall(r"seq=(\d+)", out)}
        assert answered, f"no ping was answered:\n{out}"
        longest = run = 0
        for seq in range(min(answered), self.count):
            run = 0 if seq in answered else run + 1
            longest = max(longest, run)
        return answered, longest * PING_INTERVAL


def pod_ports(os_admin: Connection, uid: str) -> list[Any]:
    return list(os_admin.network.ports(device_owner="compute:kubestack", device_id=uid))


def network_ready(tenant: LiveTenant, pod: str) -> dict[str, Any] | None:
    status = tenant.kubectl.json("-n", tenant.name, "get", "pod", pod)["status"]
    for condition in status.get("conditions") or []:
        if condition["type"] == "stackube.kubernetes.io/network-ready":
            return dict(condition)
    return None


def events(tenant: LiveTenant, pod: str, reason: str, saying: str = "") -> list[str]:
    """Messages of the pod's Events with this reason (and text)."""
    found = tenant.kubectl.json(
        "-n", tenant.name, "get", "events",
        "--field-selector", f"involvedObject.name={pod},reason={reason}",
    )  # fmt: skip
    return [e["message"] for e in found["items"] if saying in e["message"]]


def test_a_deleted_port_comes_back_with_its_address_and_mac(
    tenant: LiveTenant, os_admin: Connection
) -> None:
    pod = nginx_pod(tenant)
    uid, ip, name = pod["metadata"]["uid"], pod["status"]["podIP"], pod["metadata"]["name"]
    old = os_admin.network.get_port(tenant.ports[uid])
    ping = PingLoop(tenant, ip, seconds=30)
    time.sleep(3)
    deleted = time.monotonic()
    os_admin.network.delete_port(old.id)

    def replaced() -> Any:
        ports = [p for p in pod_ports(os_admin, uid) if p.id != old.id and p.status == "ACTIVE"]
        return ports[0] if ports else None

    new = wait_for(replaced, 30, "the pod's port re-created and ACTIVE", interval=0.2)
    repaired_in = time.monotonic() - deleted
    answered, outage = ping.finish()
    print(f"port re-created and ACTIVE {repaired_in:.1f} s after its deletion", end="; ")
    print(f"ping outage {outage:.1f} s")

    assert new.mac_address == old.mac_address
    assert [i["ip_address"] for i in new.fixed_ips] == [ip]
    holders = list(os_admin.network.ports(network_id=old.network_id, fixed_ips=f"ip_address={ip}"))
    assert [p.id for p in holders] == [new.id]  # the address went to nobody else
    assert new.name == old.name and new.binding_host_id == old.binding_host_id
    # Traffic flows again: the last 5 s of pings were all answered.
    tail = range(ping.count - int(5 / PING_INTERVAL), ping.count)
    assert set(tail) <= answered, sorted(set(tail) - answered)
    assert events(tenant, name, "NetworkRepaired")
    assert (network_ready(tenant, name) or {}).get("status") == "True"
    tenant.ports[uid] = new.id  # the live tenant's record follows the repair
    assert tenant.answers() == []


def test_a_port_deleted_again_while_being_repaired_comes_back(
    tenant: LiveTenant, os_admin: Connection
) -> None:
    """The replacement is deleted too, before the daemon has seen it ACTIVE: the next
    pass still finds the pod's host end (renamed once already) and mends it."""
    pod = nginx_pod(tenant)
    uid, ip = pod["metadata"]["uid"], pod["status"]["podIP"]
    first = os_admin.network.get_port(tenant.ports[uid])
    os_admin.network.delete_port(first.id)
    second = wait_for(
        lambda: [p for p in pod_ports(os_admin, uid) if p.id != first.id], 30, "a replacement",
        interval=0.1,
    )[0]  # fmt: skip
    os_admin.network.delete_port(second.id)

    def third() -> Any:
        found = [
            p for p in pod_ports(os_admin, uid)
            if p.id not in (first.id, second.id) and p.status == "ACTIVE"
        ]  # fmt: skip
        return found[0] if found else None

    port = wait_for(third, 45, "a second replacement, ACTIVE", interval=0.2)
    assert port.mac_address == first.mac_address
    assert [i["ip_address"] for i in port.fixed_ips] == [ip]
    tenant.ports[uid] = port.id
    wait_for(lambda: not tenant.answers(), 30, "nginx answering")
    assert host_ifname(port.id) in netlink.link_names()


def test_a_deleted_host_link_is_plugged_again(tenant: LiveTenant) -> None:
    pod = nginx_pod(tenant)
    uid, name = pod["metadata"]["uid"], pod["metadata"]["name"]
    tap = host_ifname(tenant.ports[uid])
    assert tap in netlink.link_names()
    netlink.delete_links([tap])  # the pod's eth0 goes with its veth peer
    wait_for(lambda: tap in netlink.link_names(), 30, f"{tap} plugged again", interval=0.2)
    wait_for(lambda: not tenant.answers(), 30, "nginx answering again")
    wait_for(lambda: events(tenant, name, "NetworkRepaired", tap), 30, "the repair told")


def test_what_cannot_be_mended_is_told_to_the_pod(tenant: LiveTenant, os_admin: Connection) -> None:
    """The address is taken by someone else's port before the daemon can re-create the
    pod's: a Warning Event and network-ready False; once it is free, the pod gets it."""
    pod = nginx_pod(tenant)
    uid, ip, name = pod["metadata"]["uid"], pod["status"]["podIP"], pod["metadata"]["name"]
    old = os_admin.network.get_port(tenant.ports[uid])
    subnet = old.fixed_ips[0]["subnet_id"]
    os_admin.network.delete_port(old.id)
    squatter = os_admin.network.create_port(
        network_id=old.network_id,
        project_id=old.project_id,
        name=unique("squatter"),
        fixed_ips=[{"subnet_id": subnet, "ip_address": ip}],
    )
    try:
        # (earlier tests leave NetworkBroken Events of their own: this one names the address)
        told = wait_for(lambda: events(tenant, name, "NetworkBroken", ip), 30, "NetworkBroken")
        assert told[0].startswith("port-gone: "), told
        wait_for(
            lambda: (c := network_ready(tenant, name)) and c["reason"] == "PortGone",
            30,
            "network-ready False, PortGone",
        )
        assert (network_ready(tenant, name) or {})["status"] == "False"
    finally:
        os_admin.network.delete_port(squatter.id)
    new = wait_for(
        lambda: [p for p in pod_ports(os_admin, uid) if p.status == "ACTIVE"], 30, "repaired"
    )[0]
    assert new.mac_address == old.mac_address and new.fixed_ips[0]["ip_address"] == ip
    wait_for(
        lambda: (network_ready(tenant, name) or {}).get("status") == "True", 30, "network-ready"
    )
    tenant.ports[uid] = new.id
    assert tenant.answers() == []


def test_a_wiped_journal_loses_no_pod(
    devbox: Devbox, tenant: LiveTenant, os_admin: Connection
) -> None:
    state = NodePaths(devbox.settings.node_dir).cni_state
    pod = nginx_pod(tenant)
    ping = PingLoop(tenant, pod["status"]["podIP"], seconds=25)
    host = pod["spec"]["nodeName"]
    before = {p.id for p in os_admin.network.ports(device_owner="compute:kubestack")
              if p.binding_host_id == host}  # fmt: skip
    earlier = devbox.service_log(DAEMON)
    time.sleep(2)
    with devbox_services_paused(devbox, DAEMON):
        shutil.rmtree(state)

    def since_restart() -> str:  # a host process appends to its file; a new pod starts afresh
        text = devbox.service_log(DAEMON)
        return text[len(earlier) :] if text.startswith(earlier) else text

    recovered = wait_for(lambda: "recovered:" in (text := since_restart()) and text, 60, "recovery")
    _, outage = ping.finish()
    print(f"daemon restarted on a wiped journal; ping outage {outage:.1f} s")
    after = {p.id for p in os_admin.network.ports(device_owner="compute:kubestack")
             if p.binding_host_id == host}  # fmt: skip
    assert before <= after, f"ports deleted: {sorted(before - after)}"
    assert "journal entry rebuilt" in recovered
    journaled = {p.name for p in (state / "attachments").glob("*.json")}
    assert len(journaled) >= 3, journaled  # the tenant's DNS, nginx and client at least
    assert outage <= 1.0  # the data path does not depend on the daemon
    assert tenant.problems() == []


def test_a_second_daemon_for_the_node_refuses_to_start(
    devbox: Devbox, tenant: LiveTenant, tmp_path: Path
) -> None:
    paths = NodePaths(devbox.settings.node_dir)
    argv = cni_daemon_argv(devbox.settings, paths)

    def run(**replace: str) -> subprocess.CompletedProcess[str]:
        changed = [
            next((f"--{k.replace('_', '-')}={v}" for k, v in replace.items()
                  if arg.startswith(f"--{k.replace('_', '-')}=")), arg)
            for arg in argv
        ]  # fmt: skip
        return subprocess.run(changed, capture_output=True, text=True, timeout=90, check=False)

    # Its own state directory and socket, the devbox node's name: the Lease says no.
    other = run(state_dir=str(tmp_path / "state"), socket=str(tmp_path / "cni.sock"))
    assert other.returncode == 1, other.stderr[-2000:]
    assert f"node {devbox.settings.node_name} is served by another stackube-cni-daemon" in (
        other.stderr
    )
    # The devbox's own state directory: the lock on it says no, before anything else.
    same = run(socket=str(tmp_path / "cni2.sock"))
    assert same.returncode == 1 and "uses the state directory" in same.stderr, same.stderr
    assert not list(tmp_path.glob("*.sock"))
    assert tenant.problems() == []
