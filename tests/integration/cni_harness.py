"""Running the real stackube-cni-daemon against the devbox, and invoking the installed
`kubestack` exactly as containerd does: CNI_* variables, CNI_ARGS with the pod, the
plugin's configuration from the conflist on stdin (name and cniVersion injected, the
previous result for CHECK and DEL), CNI_PATH pointing at the plugin directory."""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client as k8s
from openstack.connection import Connection

from stackube.api.naming import POD_PORT_DEVICE_OWNER
from stackube.api.types import GROUP, VERSION
from stackube.cni.attachments import AttachmentStore
from stackube.cni.install import CONFLIST_NAME, install
from stackube.cni.pool import POOL_DEVICE_ID
from stackube.devbox.box import Devbox
from stackube.devbox.node import NodePaths
from stackube.host import netlink
from tests.integration.controller_harness import custom, stop_processes

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class PodIdentity:
    namespace: str
    name: str
    uid: str
    container_id: str

    @classmethod
    def new(cls, namespace: str, prefix: str = "pod") -> PodIdentity:
        token = secrets.token_hex(4)
        return cls(namespace, f"{prefix}-{token}", f"uid-{token}", secrets.token_hex(32))


@dataclass
class PluginRun:
    code: int
    output: dict[str, Any]
    stderr: str

    @property
    def error_code(self) -> int | None:
        return self.output.get("code") if self.code else None


@dataclass
class CniNode:
    """The plugin installed like the DaemonSet's init container does, and the daemon."""

    root: Path
    kubeconfig: Path
    config_dir: Path
    secret_dir: Path
    node: str  # the daemon's node identity: its own, never the devbox node's
    binding_host: str = ""  # Neutron's name for this host (the agent's)
    cri_endpoint: str = ""  # the devbox's containerd: recovery asks it what is alive
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def __post_init__(self) -> None:
        self.bin_dir, self.conf_dir = self.root / "bin", self.root / "net.d"
        self.socket = self.root / "cni.sock"
        self.state_dir = self.root / "state"
        install(self.bin_dir, self.conf_dir, str(self.socket))
        self.conflist = json.loads((self.conf_dir / CONFLIST_NAME).read_text())

    @property
    def store(self) -> AttachmentStore:
        return AttachmentStore(self.state_dir / "attachments")

    # ---- the daemon ----------------------------------------------------------------------
    def start(
        self,
        *,
        pool_size: int = 0,
        pool_eager: bool = False,
        crash_after: str | None = None,
        network_wait: float = 2.0,  # seconds; short: most tests ADD where Networks are Active
    ) -> subprocess.Popen[bytes]:
        self.runs += 1
        env = {"PATH": BASE_PATH}
        if crash_after:
            env["STACKUBE_CRASH_AFTER"] = crash_after
        self.log = self.root / f"daemon-{self.runs}.log"
        argv = [
            sys.executable,
            "-m",
            "stackube",
            "cni-daemon",
            f"--kubeconfig={self.kubeconfig}",
            f"--config-dir={self.config_dir}",
            f"--secret-dir={self.secret_dir}",
            f"--node-name={self.node}",
            f"--binding-host={self.binding_host or self.node}",
            *([f"--cri-endpoint={self.cri_endpoint}"] if self.cri_endpoint else []),
            f"--socket={self.socket}",
            f"--state-dir={self.state_dir}",
            f"--pool-size={pool_size}",
            "--pool-eager" if pool_eager else "--no-pool-eager",
            "--cluster-dns=10.96.0.10",
            "--resync-seconds=1",
            "--node-link=",  # the devbox's daemon owns the node link
            "--port-active-timeout=45",
            f"--network-wait-seconds={network_wait}",
        ]
        with self.log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"daemon exited {proc.returncode}:\n{self.logs()[-3000:]}")
            if self.status().code == 0:
                return proc
            time.sleep(0.2)
        raise AssertionError(f"daemon not ready in 60 s:\n{self.logs()[-3000:]}")

    def stop(self) -> None:
        stop_processes(self.procs)

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*.log"))
        )

    # ---- the plugin, as containerd calls it ------------------------------------------------
    def plugin_stdin(self, prev_result: Mapping[str, Any] | None = None) -> bytes:
        plugin = dict(self.conflist["plugins"][0])
        plugin["name"] = self.conflist["name"]
        plugin["cniVersion"] = self.conflist["cniVersion"]
        if prev_result is not None:
            plugin["prevResult"] = dict(prev_result)
        return json.dumps(plugin).encode()

    def invoke(
        self,
        command: str,
        pod: PodIdentity | None,
        netns: str = "",
        *,
        ifname: str = "eth0",
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        prev_result: Mapping[str, Any] | None = None,
        timeout: float = 120,
    ) -> PluginRun:
        variables = {"PATH": BASE_PATH, "CNI_COMMAND": command, "CNI_PATH": str(self.bin_dir)}
        if pod is not None:
            variables |= {
                "CNI_CONTAINERID": pod.container_id,
                "CNI_NETNS": netns,
                "CNI_IFNAME": ifname,
                "CNI_ARGS": (
                    f"IgnoreUnknown=1;K8S_POD_NAMESPACE={pod.namespace};"
                    f"K8S_POD_NAME={pod.name};K8S_POD_INFRA_CONTAINER_ID={pod.container_id};"
                    f"K8S_POD_UID={pod.uid}"
                ),
            }
        variables |= dict(env or {})
        done = subprocess.run(
            [str(self.bin_dir / "kubestack")],
            input=stdin if stdin is not None else self.plugin_stdin(prev_result),
            env=variables,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        text = done.stdout.decode()
        return PluginRun(
            done.returncode, json.loads(text) if text.strip() else {}, done.stderr.decode()
        )

    def status(self) -> PluginRun:
        return self.invoke("STATUS", None, timeout=10)


def our_ports(conn: Connection, network_ids: set[str]) -> list[Any]:
    return [
        p
        for p in conn.network.ports(device_owner=POD_PORT_DEVICE_OWNER)
        if p.network_id in network_ids
    ]


def pool_ports(conn: Connection, network_id: str) -> list[Any]:
    return [
        p
        for p in conn.network.ports(device_owner=POD_PORT_DEVICE_OWNER, network_id=network_id)
        if p.device_id == POOL_DEVICE_ID
    ]


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


# ---- tenants and netns "pods" ---------------------------------------------------------------
def create_tenant(kube: k8s.ApiClient, name: str) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"username": name, "password": f"{name}-pw-{secrets.token_hex(4)}"},
    }
    custom(kube).create_cluster_custom_object(GROUP, VERSION, "tenants", body)


def _active_status(kube: k8s.ApiClient, namespace: str, field: str) -> str | None:
    """A field of the tenant Network's status, once it is Active."""
    try:
        net = custom(kube).get_namespaced_custom_object(
            GROUP, VERSION, namespace, "networks", namespace
        )
    except k8s.ApiException:
        return None
    status = net.get("status") or {}
    return str(status[field]) if status.get("state") == "Active" else None


def network_id_of(kube: k8s.ApiClient, namespace: str) -> str | None:
    return _active_status(kube, namespace, "networkID")


def delete_tenant(kube: k8s.ApiClient, name: str, timeout: float = 120) -> None:
    custom(kube).delete_cluster_custom_object(GROUP, VERSION, "tenants", name)

    def gone() -> bool:
        try:
            custom(kube).get_cluster_custom_object(GROUP, VERSION, "tenants", name)
        except k8s.ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout, f"Tenant {name} to be deleted")


class Sandboxes:
    """Network namespaces standing in for pod sandboxes (containerd makes them the same
    way: a bind-mounted netns under /var/run/netns)."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def new(self) -> str:
        name = f"stkb-cni-{secrets.token_hex(4)}"
        netlink.create_namespace(name)
        self.made.append(name)
        return f"/var/run/netns/{name}"

    def remove_all(self) -> None:
        for name in self.made:
            netlink.delete_namespace(name)
        self.made.clear()


def in_netns(netns: str, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={netns}", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def reaches(netns: str, ip: str, tries: int = 3) -> bool:
    return any(
        in_netns(netns, "ping", "-c", "1", "-W", "1", ip).returncode == 0 for _ in range(tries)
    )


def address_of(result: dict[str, object]) -> str:
    ips = result["ips"]
    assert isinstance(ips, list)
    return str(ips[0]["address"]).split("/")[0]


def router_id_of(kube: k8s.ApiClient, namespace: str) -> str | None:
    return _active_status(kube, namespace, "routerID")


def node_of_its_own(
    devbox: Devbox, root: Path, kubeconfig: Path, config_dir: Path, secret_dir: Path, prefix: str
) -> CniNode:
    """A CNI daemon for a test or benchmark beside the devbox's own: its own node
    identity (Lease, port marks: it never sees the devbox's pods), this host's Neutron
    agent, the devbox's containerd."""
    return CniNode(
        root,
        kubeconfig,
        config_dir,
        secret_dir,
        f"{prefix}-{secrets.token_hex(3)}",
        binding_host=socket.gethostname(),
        cri_endpoint=f"unix://{NodePaths(devbox.settings.node_dir).containerd_socket}",
    )
