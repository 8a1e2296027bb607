"""A real Kubernetes node on the devbox: an image registry (containerd's mirror for
docker.io and registry.k8s.io, holding the images we build), containerd with runc,
the Stackube CNI daemon with kubestack as the node's CNI plugin, stackube-proxy, and
kubelet. Rendering (configs, command lines) is pure; the services do the I/O.

Identities are client certificates from the devbox CA: kubelet is `system:node:<name>`
(the Node authorizer limits it to its own node), the CNI daemon and the proxy are
their ServiceAccounts (`system:serviceaccount:kube-system:...`), so the manifests'
least-privilege RBAC is what they run with.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from stackube.api.manifests import cluster_dns, cni_rbac, csi, proxy_rbac, runtime_classes
from stackube.devbox import csi as csi_devbox
from stackube.devbox import gvisor, health, images, nginx_image
from stackube.devbox.commands import StepError, run
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.kubeconfig import render_kubeconfig
from stackube.devbox.kubernetes import APISERVER_KUBELET_CLIENT
from stackube.devbox.pki import CertSpec, PkiStore
from stackube.devbox.process import ProcessSpec, ProcessTable
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.host import cri
from stackube.kube import apply
from stackube.kube import resources as kube
from stackube.kube.client import session

log = logging.getLogger(__name__)

# Registries whose names the images carry; containerd asks our registry instead.
MIRRORED_REGISTRIES = ("docker.io", "registry.k8s.io")
CRI_NAMESPACE = "k8s.io"  # containerd's namespace of the CRI's containers
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static
LOOPBACK_PLUGIN = Path("/usr/lib/cni/loopback")  # containernetworking-plugins
NETNS_DIR = Path("/run/netns")  # iproute2's named network namespaces (CNI_NETNS)
REGISTRY_BIN = "docker-registry"
NODE_READY_TIMEOUT = 90.0


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def containerd_dir(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd_dir / "config.toml"

    @property
    def containerd_socket(self) -> Path:
        return self.containerd_dir / "containerd.sock"

    @property
    def runsc_config(self) -> Path:
        return self.containerd_dir / "runsc.toml"

    @property
    def runtime_bin(self) -> Path:
        """Shims containerd finds on its PATH (devbox.gvisor.shim_wrapper)."""
        return self.root / "runtime" / "bin"

    @property
    def runsc_root(self) -> Path:
        return self.containerd_dir / "runsc"

    @property
    def certs_d(self) -> Path:
        return self.containerd_dir / "certs.d"

    @property
    def cni_bin(self) -> Path:
        return self.root / "cni" / "bin"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_socket(self) -> Path:
        return self.root / "cni" / "cni.sock"

    @property
    def cni_state(self) -> Path:
        return self.root / "cni" / "state"

    @property
    def kubelet_dir(self) -> Path:
        return self.root / "kubelet"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    @property
    def registry_config(self) -> Path:
        return self.root / "registry.yaml"


# ---- pure rendering -----------------------------------------------------------------------
def containerd_config(settings: DevboxSettings, paths: NodePaths) -> str:
    """containerd 1.6 (config version 2) as ../shared/TESTBED.md found working: cgroupfs,
    no negative oom_score_adj, our CNI directories, our registry as the mirror; runc by
    default and gVisor's runsc for pods of RuntimeClass gvisor (devbox.gvisor)."""
    return f"""version = 2
root = "{paths.containerd_dir / "root"}"
state = "{paths.containerd_dir / "state"}"
oom_score = 0

[grpc]
  address = "{paths.containerd_socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:{images.PAUSE_TAG}"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = false

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

{gvisor.containerd_runtime(paths.runsc_config)}
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{paths.cni_bin}"
    conf_dir = "{paths.cni_conf}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{paths.certs_d}"
"""


def containerd_path(paths: NodePaths, environ_path: str | None = None) -> str:
    """containerd's PATH: the node's shims first, then the devbox's own PATH."""
    rest = (
        os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        if environ_path is None
        else environ_path
    )
    return f"{paths.runtime_bin}:{rest}"


def mirror_hosts_toml(registry: str, settings: DevboxSettings) -> str:
    """certs.d/<registry>/hosts.toml: pull from our registry (plain HTTP on loopback)."""
    upstream = "https://registry-1.docker.io" if registry == "docker.io" else f"https://{registry}"
    return (
        f'server = "{upstream}"\n\n'
        f'[host."{settings.registry_url}"]\n'
        '  capabilities = ["pull", "resolve"]\n'
        "  skip_verify = true\n"
    )


def registry_config(settings: DevboxSettings, paths: NodePaths) -> dict[str, Any]:
    return {
        "version": 0.1,
        "log": {"level": "warn"},
        "storage": {
            "filesystem": {"rootdirectory": str(paths.registry_dir)},
            "delete": {"enabled": True},
        },
        "http": {"addr": f"{settings.host}:{settings.ports.registry}"},
    }


def kubelet_config(settings: DevboxSettings, paths: NodePaths) -> dict[str, Any]:
    pki = PkiStore(settings.pki_dir)
    serving = pki.paths("kubelet-serving")
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # The node's address is the host's on the external segment (Kubernetes refuses a
        # loopback node IP); the apiserver reaches the kubelet API there.
        "address": settings.external_host_address,
        "port": settings.ports.kubelet,
        "readOnlyPort": 0,
        "healthzBindAddress": settings.host,
        "healthzPort": settings.ports.kubelet_healthz,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki.ca_paths.cert)},
        },
        "authorization": {"mode": "Webhook"},
        "tlsCertFile": str(serving.cert),
        "tlsPrivateKeyFile": str(serving.key),
        # This machine: cgroup v1, no systemd, no CAP_SYS_RESOURCE (TESTBED.md).
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "failSwapOn": False,
        "oomScoreAdj": 0,
        "clusterDNS": [settings.cluster_dns_ip],
        "clusterDomain": settings.cluster_domain,
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        "imageServiceEndpoint": f"unix://{paths.containerd_socket}",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        # A devbox disk is small and shared: evict only when it is really full, and never
        # garbage-collect the images we built.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": 110,
        # FlexVolume drivers (the seed's cinder~flexvolume_driver: docs/volumes.md).
        "volumePluginDir": str(settings.volume_plugin_dir),
        "registerNode": True,
    }


def kubelet_argv(settings: DevboxSettings, paths: NodePaths) -> list[str]:
    return [
        str(settings.kube_bin_dir / "kubelet"),
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={settings.kube_dir / 'kubelet.kubeconfig'}",
        f"--root-dir={paths.kubelet_dir}",
        f"--hostname-override={settings.node_name}",
        f"--node-ip={settings.external_host_address}",
        "--v=1",
    ]


def cni_daemon_argv(settings: DevboxSettings, paths: NodePaths) -> list[str]:
    stackube = settings.state_dir / "stackube"
    return [
        sys.executable, "-m", "stackube", "cni-daemon",
        f"--kubeconfig={settings.kube_dir / 'stackube-cni.kubeconfig'}",
        f"--config-dir={stackube / 'config'}",
        f"--secret-dir={stackube / 'secret'}",
        f"--node-name={settings.node_name}",
        f"--socket={paths.cni_socket}",
        f"--state-dir={paths.cni_state}",
        f"--cri-endpoint=unix://{paths.containerd_socket}",
        f"--cluster-dns={settings.cluster_dns_ip}",
        f"--cluster-domain={settings.cluster_domain}",
        f"--runsc={settings.gvisor_bin_dir / gvisor.RUNSC}",
        f"--runsc-root={paths.runsc_root / CRI_NAMESPACE}",
    ]  # fmt: skip


def proxy_argv(settings: DevboxSettings) -> list[str]:
    return [
        sys.executable, "-m", "stackube", "proxy",
        f"--kubeconfig={settings.kube_dir / 'stackube-proxy.kubeconfig'}",
        f"--cluster-dns={settings.cluster_dns_ip}",
        f"--service-cidr={settings.service_cidr}",
        f"--node-name={settings.node_name}",
        # The node's InternalIP only: never the machine's uplink.
        f"--nodeport-addresses={settings.external_host_address}/32",
    ]  # fmt: skip


def node_certs(settings: DevboxSettings) -> list[CertSpec]:
    def service_account(name: str) -> CertSpec:
        return CertSpec(
            name,
            f"system:serviceaccount:kube-system:{name}",
            organizations=["system:serviceaccounts", "system:serviceaccounts:kube-system"],
            client=True,
        )

    return [
        CertSpec(
            "kubelet",
            f"system:node:{settings.node_name}",
            organizations=["system:nodes"],
            client=True,
        ),
        CertSpec(
            "kubelet-serving",
            settings.node_name,
            dns_names=[settings.node_name, "localhost"],
            ip_addresses=[settings.external_host_address, settings.host],
            server=True,
        ),
        service_account("stackube-cni"),
        service_account("stackube-proxy"),
        service_account("stackube-csi"),
    ]


# (kubeconfig file stem, certificate name)
NODE_KUBECONFIGS = (
    ("kubelet", "kubelet"),
    ("stackube-cni", "stackube-cni"),
    ("stackube-proxy", "stackube-proxy"),
    ("stackube-csi", "stackube-csi"),
)


def kubelet_api_binding() -> dict[str, Any]:
    """The apiserver may use the kubelet API (logs, exec, attach) as its client cert."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "stackube-devbox:apiserver-kubelet-api"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "User",
                "name": APISERVER_KUBELET_CLIENT,
            }
        ],
    }


def apiserver_endpoint_slice(settings: DevboxSettings) -> dict[str, Any]:
    """The `kubernetes` Service's endpoint where pods reach the API server (the host's
    relay on the external segment): the devbox's apiserver listens on loopback only and
    publishes no endpoint itself (endpoint-reconciler-type none)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": "kubernetes",
                "endpointslice.kubernetes.io/managed-by": "stackube-devbox",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [settings.pod_apiserver_host], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": settings.ports.kube_apiserver, "protocol": "TCP"}],
    }


def apiserver_endpoints(settings: DevboxSettings) -> dict[str, Any]:
    """The same endpoint as (legacy) Endpoints, which clients and the conformance suite
    still read; not mirrored into a second EndpointSlice."""
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": "kubernetes",
            "namespace": "default",
            "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"},
        },
        "subsets": [
            {
                "addresses": [{"ip": settings.pod_apiserver_host}],
                "ports": [
                    {"name": "https", "port": settings.ports.kube_apiserver, "protocol": "TCP"}
                ],
            }
        ],
    }


def system_addons(settings: DevboxSettings) -> list[dict[str, Any]]:
    """What the system network's pods need from the cluster: its DNS, and the API
    server behind the `kubernetes` Service."""
    return [
        *cluster_dns(settings.coredns_image),
        apiserver_endpoint_slice(settings),
        apiserver_endpoints(settings),
    ]


# ---- the node -----------------------------------------------------------------------------
def shared_netns_dir() -> None:
    """Make NETNS_DIR a shared mount, as `ip netns add` does the first time: the CNI
    daemon's and proxy's Pods mount it with HostToContainer propagation, which the
    runtime refuses for a directory that is not a shared or slave mount ("path
    /run/netns is mounted on / but it is not a shared or slave mount": on a fresh
    machine, until a Neutron agent made its first namespace). Left in place, as
    iproute2 leaves it."""
    NETNS_DIR.mkdir(parents=True, exist_ok=True)
    if run(["mount", "--make-shared", str(NETNS_DIR)], check=False).returncode == 0:
        return
    run(["mount", "--bind", str(NETNS_DIR), str(NETNS_DIR)])
    run(["mount", "--make-shared", str(NETNS_DIR)])


class NodeDevbox:
    def __init__(self, settings: DevboxSettings) -> None:
        self.settings = settings
        self.paths = NodePaths(settings.node_dir)

    def prepare_identities(self) -> None:
        store = PkiStore(self.settings.pki_dir)
        ca = store.ensure_ca()
        for spec in node_certs(self.settings):
            store.ensure_leaf(spec)
        for stem, cert in NODE_KUBECONFIGS:
            paths = store.paths(cert)
            write_atomic(
                self.settings.kube_dir / f"{stem}.kubeconfig",
                render_kubeconfig(
                    self.settings.apiserver_url,
                    ca.cert_pem,
                    user=cert,
                    cert_pem=paths.cert.read_bytes(),
                    key_pem=paths.key.read_bytes(),
                ),
                0o600,
            )
        with session(self.settings.admin_kubeconfig) as api:
            documents = [
                *cni_rbac(), *proxy_rbac(), *csi(), *runtime_classes(), kubelet_api_binding()
            ]  # fmt: skip
            apply.server_side_apply(api, documents, "stackube-devbox")

    def apply_system_addons(self) -> None:
        with session(self.settings.admin_kubeconfig) as api:
            apply.server_side_apply(api, system_addons(self.settings), "stackube-devbox")

    # -- registry and images
    def _registry_prepare(self) -> None:
        self.paths.registry_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(registry_config(self.settings, self.paths), sort_keys=False)
        write_atomic(self.paths.registry_config, text)

    def image_specs(self) -> list[images.ImageSpec]:
        """The devbox's images made of files on this machine: busybox, pause and CoreDNS
        (nginx, a Debian root file system, is nginx_image's)."""
        coredns = self.settings.coredns_bin_dir / "coredns"
        if not BUSYBOX.exists():
            raise StepError(f"{BUSYBOX} is missing (Debian package busybox-static)")
        applets = run([str(BUSYBOX), "--list-full"]).stdout.split()
        return images.devbox_images(
            BUSYBOX.read_bytes(), applets, coredns.read_bytes(), self.settings.coredns_image
        )

    def push_images(self) -> None:
        """Build the images and push what the registry lacks (cheap when nothing changed:
        nginx is built once per recipe)."""
        for spec in self.image_specs():
            images.push(images.build(spec), self.settings.registry_url)
        # The CSI sidecars' versions are pinned: a tag there is the build of that version.
        for spec in csi_devbox.sidecar_image_specs(self.settings):
            if images.tag_digest(self.settings.registry_url, spec.repository, spec.tag) is None:
                images.push(images.build(spec), self.settings.registry_url)
        nginx_image.push(self.settings.cache_dir, self.settings.registry_url, log.info)

    # -- containerd
    def _containerd_prepare(self) -> None:
        shared_netns_dir()
        write_atomic(self.paths.containerd_config, containerd_config(self.settings, self.paths))
        write_atomic(
            self.paths.runsc_config, gvisor.shim_config(self.settings, self.paths.runsc_root)
        )
        write_atomic(
            self.paths.runtime_bin / gvisor.SHIM,
            gvisor.shim_wrapper(self.settings, sys.executable),
            0o755,
        )
        for registry in MIRRORED_REGISTRIES:
            write_atomic(
                self.paths.certs_d / registry / "hosts.toml",
                mirror_hosts_toml(registry, self.settings),
            )

    def _ctr(self, *argv: str) -> list[str]:
        return ["ctr", "--address", str(self.paths.containerd_socket), *argv]

    def _containerd_stop(self, table: ProcessTable) -> None:
        """Containers outlive containerd (their shims are daemons): kill them first."""
        if table.pid("containerd") is not None:
            listed = run(self._ctr("-n", CRI_NAMESPACE, "tasks", "ls", "-q"), check=False)
            for task in listed.stdout.split():
                run(
                    self._ctr("-n", CRI_NAMESPACE, "tasks", "kill", "-s", "SIGKILL", task),
                    check=False,
                )
            for task in listed.stdout.split():
                run(self._ctr("-n", CRI_NAMESPACE, "tasks", "delete", "-f", task), check=False)
            table.stop("containerd")

    def mounts(self) -> list[str]:
        root = str(self.paths.root) + "/"
        return sorted(
            {
                line.split()[4]
                for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if line.split()[4].startswith(root)
            }
        )

    def unmount_all(self) -> list[str]:
        """Unmount what kubelet and containerd mounted under the node's directory
        (volumes, rootfs overlays, sandbox /dev/shm), deepest first. Returns what is
        still mounted afterwards (nothing, normally)."""
        for point in sorted(self.mounts(), key=len, reverse=True):
            run(["umount", "-l", point], check=False)
        return self.mounts()

    # -- CNI
    def _cni_prepare(self) -> None:
        # As the DaemonSet's init container does it.
        run(
            [
                sys.executable, "-m", "stackube", "cni-install",
                f"--bin-dir={self.paths.cni_bin}",
                f"--conf-dir={self.paths.cni_conf}",
                f"--socket={self.paths.cni_socket}",
            ]
        )  # fmt: skip
        self._install_loopback()

    def _install_loopback(self) -> None:
        """The reference `loopback` plugin containerd needs, beside kubestack."""
        if not LOOPBACK_PLUGIN.exists():
            raise StepError(f"{LOOPBACK_PLUGIN} is missing (containernetworking-plugins)")
        loopback = self.paths.cni_bin / "loopback"
        if not loopback.exists():
            loopback.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(LOOPBACK_PLUGIN, loopback)

    def _cni_daemon_prepare(self) -> None:
        self.prepare_identities()
        self._cni_prepare()

    def _cni_status(self) -> bool:
        plugin = self.paths.cni_bin / "kubestack"
        conflists = sorted(self.paths.cni_conf.glob("*.conflist"))
        if not conflists or not plugin.exists():
            return False
        conf = json.loads(conflists[0].read_text())
        stdin = json.dumps({**conf["plugins"][0], "name": conf["name"], "cniVersion": "1.1.0"})
        done = subprocess.run(
            [str(plugin)],
            input=stdin.encode(),
            env={
                "CNI_COMMAND": "STATUS",
                "CNI_PATH": str(self.paths.cni_bin),
                "PATH": "/usr/bin:/bin",
            },
            capture_output=True,
            timeout=10,
            check=False,
        )
        return done.returncode == 0

    def _cni_ready(self) -> bool:
        """The probe: an installed plugin whose daemon answers STATUS."""
        try:
            return self._cni_status()
        except (OSError, ValueError, subprocess.TimeoutExpired):
            return False

    # -- kubelet
    def _kubelet_prepare(self) -> None:
        self.paths.kubelet_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(kubelet_config(self.settings, self.paths), sort_keys=False)
        write_atomic(self.paths.kubelet_config, text)

    def wait_node_ready(self, since: datetime | None = None) -> None:
        """The Node Ready, in a status the kubelet posted after `since` (if given)."""
        self._wait_node(registered_only=False, since=since)

    def wait_node_registered(self) -> None:
        """The kubelet's Node exists (Ready needs a CNI configuration: in the Pods mode the
        CNI DaemonSet's pod installs it after this)."""
        self._wait_node(registered_only=True)

    def _wait_node(self, registered_only: bool, since: datetime | None = None) -> None:
        deadline = time.monotonic() + NODE_READY_TIMEOUT
        reason = "not registered"
        with session(self.settings.admin_kubeconfig) as api:
            while time.monotonic() < deadline:
                ready, reason = kube.node_readiness(api, self.settings.node_name, since)
                if ready or (registered_only and reason != "not registered"):
                    return
                time.sleep(1)
        raise StepError(
            f"node {self.settings.node_name} not {'registered' if registered_only else 'Ready'}"
            f" in {NODE_READY_TIMEOUT:.0f}s: {reason}"
        )

    def _kubelet_prepare_for_pods(self) -> None:
        # What the CNI daemon's prepare does in the host mode, but the plugin and its
        # configuration: the CNI DaemonSet's init container installs those.
        self.prepare_identities()
        self._install_loopback()
        self._kubelet_prepare()

    def services(self) -> list[Service]:
        """The node's host processes. In the Pods mode (`settings.components`) the CNI
        daemon and stackube-proxy are not among them: the devbox deploys them as
        DaemonSets once the kubelet runs (devbox.components)."""
        services = self._services()
        if self.settings.components != "pods":
            return services
        kept = [s for s in services if s.name not in ("stackube-cni-daemon", "stackube-proxy")]
        return [
            replace(
                s, prepare=self._kubelet_prepare_for_pods, after_start=self.wait_node_registered
            )
            if s.name == "kubelet"
            else s
            for s in kept
        ]

    def _services(self) -> list[Service]:
        s, paths = self.settings, self.paths
        return [
            Service(
                name="registry",
                process=lambda: ProcessSpec(
                    "registry",
                    [REGISTRY_BIN, "serve", str(paths.registry_config)],
                    inputs=(paths.registry_config,),
                ),
                probe=health.http_ok(f"{s.registry_url}/v2/"),
                start_timeout=30,
                prepare=self._registry_prepare,
                after_start=self.push_images,
            ),
            Service(
                name="containerd",
                process=lambda: ProcessSpec(
                    "containerd",
                    ["containerd", "--config", str(paths.containerd_config)],
                    # containerd finds a runtime's shim (containerd-shim-runsc-v1) on PATH.
                    env={"PATH": containerd_path(paths)},
                    inputs=(paths.containerd_config, paths.runsc_config),
                ),
                # Its CRI plugin ready, not only its API: kubelet exits on "server is
                # not initialized yet".
                probe=lambda: cri.runtime_ready(f"unix://{paths.containerd_socket}", timeout=2),
                start_timeout=30,
                prepare=self._containerd_prepare,
                stop=self._containerd_stop,
            ),
            Service(
                name="stackube-cni-daemon",
                process=lambda: ProcessSpec("stackube-cni-daemon", cni_daemon_argv(s, paths)),
                probe=self._cni_ready,
                start_timeout=60,
                prepare=self._cni_daemon_prepare,
            ),
            Service(
                name="stackube-proxy",
                process=lambda: ProcessSpec("stackube-proxy", proxy_argv(s)),
                probe=lambda: True,
                start_timeout=10,
            ),
            Service(
                name="kubelet",
                process=lambda: ProcessSpec(
                    "kubelet", kubelet_argv(s, paths), inputs=(paths.kubelet_config,)
                ),
                probe=health.http_ok(f"http://{s.host}:{s.ports.kubelet_healthz}/healthz"),
                start_timeout=60,
                prepare=self._kubelet_prepare,
                after_start=self.wait_node_ready,
            ),
        ]
