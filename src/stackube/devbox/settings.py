"""Where the devbox keeps its state and which versions, ports and ranges it uses.

Everything here is pure: paths are derived from two roots (the state directory and
the user's cache directory), which environment variables may move.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
COREDNS_VERSION = "v1.14.7"
# gVisor publishes no semver tags to the module proxy; `@latest` resolved to this
# pseudo-version (../shared/TESTBED.md), pinned here.
GVISOR_VERSION = "v0.0.0-20260905035102-160fafc42237"
GVISOR_PLATFORMS = ("systrap", "ptrace", "kvm")

ENV_STATE_DIR = "STACKUBE_DEVBOX_DIR"
ENV_CACHE_DIR = "STACKUBE_CACHE_DIR"
ENV_KUBE_BIN_DIR = "STACKUBE_KUBE_BIN_DIR"
ENV_ETCD_BIN_DIR = "STACKUBE_ETCD_BIN_DIR"
ENV_NEUTRON_BACKEND = "STACKUBE_DEVBOX_NEUTRON"
ENV_GVISOR_PLATFORM = "STACKUBE_DEVBOX_GVISOR_PLATFORM"
NEUTRON_BACKENDS = ("linuxbridge", "openvswitch")
ENV_COMPONENTS = "STACKUBE_DEVBOX_COMPONENTS"
ENV_NEUTRON_API_WORKERS = "STACKUBE_DEVBOX_NEUTRON_API_WORKERS"
# How Stackube's own components run: as Pods from deploy/ (an operator's way, the
# default), or as host processes (kept for the Open vSwitch tier; decision 0018).
COMPONENT_MODES = ("pods", "host")

DEFAULT_STATE_DIR = Path("/var/lib/stackube-devbox")


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """$name, one of `choices` (unset or empty: the first). Raises ValueError otherwise."""
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


def _count(env: Mapping[str, str], name: str, default: int, most: int) -> int:
    """$name, a whole number from 1 to `most` (unset or empty: `default`). Raises
    ValueError otherwise."""
    value = env.get(name) or str(default)
    if not value.isdecimal() or not 1 <= int(value) <= most:
        raise ValueError(f"{name}={value!r}: use a whole number from 1 to {most}")
    return int(value)


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """The user's cache directory for Stackube (XDG rules)."""
    if env.get(ENV_CACHE_DIR):
        return Path(env[ENV_CACHE_DIR])
    xdg = env.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(env.get("HOME", "/root")) / ".cache"
    return base / "stackube"


def allocation_pools_without(cidr: str, reserved: str) -> list[tuple[str, str]]:
    """The host addresses of `cidr` as (first, last) ranges that skip `reserved`."""
    network = ipaddress.IPv4Network(cidr)
    hole = ipaddress.IPv4Address(reserved)
    if hole not in network:
        raise ValueError(f"{reserved} is not in {cidr}")
    first, last = network[1], network[-2]
    pools = []
    if first < hole:
        pools.append((str(first), str(hole - 1)))
    if hole < last:
        pools.append((str(hole + 1), str(last)))
    return pools


@dataclass(frozen=True)
class Ports:
    etcd_client: int = 2379
    etcd_peer: int = 2380
    kube_apiserver: int = 6443
    kubelet: int = 10250
    kubelet_healthz: int = 10248
    registry: int = 5001  # (5000 is Keystone)
    kube_controller_manager: int = 10257
    kube_scheduler: int = 10259
    mariadb: int = 3306
    rabbitmq: int = 5672
    keystone: int = 5000
    neutron: int = 9696
    cinder: int = 8776
    ceph_mon: int = 6789
    ceph_mon_v2: int = 3300
    csi_provisioner: int = 9810  # diagnostics (health, metrics) of the CSI sidecars
    csi_attacher: int = 9811


@dataclass(frozen=True)
class DevboxSettings:
    state_dir: Path
    cache_dir: Path
    kube_bin_override: Path | None = None
    etcd_bin_override: Path | None = None
    kubernetes_version: str = KUBERNETES_VERSION
    etcd_version: str = ETCD_VERSION
    coredns_version: str = COREDNS_VERSION
    gvisor_version: str = GVISOR_VERSION
    # gVisor's platform (how the Sentry traps the sandbox's system calls): systrap works
    # everywhere; kvm is fastest on bare metal but hangs in this nested VM (TESTBED.md).
    gvisor_platform: str = "systrap"
    components: str = "pods"
    host: str = "127.0.0.1"
    ports: Ports = field(default_factory=Ports)
    service_cidr: str = "10.96.0.0/12"
    # Tenants' default Network (the controller's user-cidr/user-gateway).
    user_cidr: str = "10.244.0.0/16"  # the system network
    user_gateway: str = "10.244.0.1"
    tenant_cidr: str = "10.245.0.0/16"  # Tenants' default Networks
    tenant_gateway: str = "10.245.0.1"
    cluster_domain: str = "cluster.local"
    region: str = "RegionOne"
    # TEST-NET-2 (RFC 5737): documentation-only addresses. Not TEST-NET-3: these machines
    # reach their package registries at 203.0.113.80 (checked before the host takes an
    # address here: devbox.podaccess).
    external_cidr: str = "198.51.100.0/24"
    external_physnet: str = "external"
    external_network_name: str = "stackube-external"
    # The host end of the external segment; the agent bridges the other end.
    external_host_veth: str = "stkbext0"
    external_agent_veth: str = "stkbext1"
    # The host's own address on the external segment, kept out of Neutron's pool: pods
    # reach the API server there (through their tenant router's SNAT).
    external_host_address: str = "198.51.100.254"
    # ML2 mechanism: Linux bridge (kernel) or Open vSwitch on its userspace datapath.
    neutron_backend: str = "linuxbridge"
    # neutron-server's API worker processes (api_workers; its RPC workers stay at one).
    neutron_api_workers: int = 1
    # The node: its name is the host's, as Neutron's agents know it (binding:host_id).
    node_name: str = "localhost"
    cluster_dns_ip: str = "10.96.0.10"
    # The seed's FlexVolume paths: kubelet's volume plugin directory and the nodes'
    # cinder.conf (docs/volumes.md).
    volume_plugin_dir: Path = Path("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
    cinder_conf: Path = Path("/etc/kubernetes/cinder.conf")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DevboxSettings:
        env = os.environ if env is None else env
        state = Path(env[ENV_STATE_DIR]) if env.get(ENV_STATE_DIR) else DEFAULT_STATE_DIR
        kube_bin = env.get(ENV_KUBE_BIN_DIR)
        etcd_bin = env.get(ENV_ETCD_BIN_DIR)
        backend = _choice(env, ENV_NEUTRON_BACKEND, NEUTRON_BACKENDS)
        platform = _choice(env, ENV_GVISOR_PLATFORM, GVISOR_PLATFORMS)
        components = _choice(env, ENV_COMPONENTS, COMPONENT_MODES)
        api_workers = _count(env, ENV_NEUTRON_API_WORKERS, cls.neutron_api_workers, 8)
        return cls(
            state_dir=state,
            components=components,
            cache_dir=default_cache_dir(env),
            kube_bin_override=Path(kube_bin) if kube_bin else None,
            etcd_bin_override=Path(etcd_bin) if etcd_bin else None,
            neutron_backend=backend,
            neutron_api_workers=api_workers,
            gvisor_platform=platform,
            node_name=socket.gethostname(),
        )

    # ---- derived paths -------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "log"

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def kube_dir(self) -> Path:
        return self.state_dir / "kubernetes"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kube_dir / "admin.kubeconfig"

    @property
    def openstack_dir(self) -> Path:
        return self.state_dir / "openstack"

    @property
    def clouds_yaml(self) -> Path:
        return self.openstack_dir / "clouds.yaml"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.json"

    @property
    def kube_cache_dir(self) -> Path:
        return self.cache_dir / "kubernetes" / self.kubernetes_version

    @property
    def etcd_cache_dir(self) -> Path:
        return self.cache_dir / "etcd" / self.etcd_version

    @property
    def coredns_image(self) -> str:
        """Our CoreDNS build as the registry serves it (the name CoreDNS publishes)."""
        return f"coredns/coredns:{self.coredns_version.removeprefix('v')}"

    @property
    def gvisor_bin_dir(self) -> Path:
        return self.cache_dir / "gvisor" / self.gvisor_version / "bin"

    @property
    def coredns_bin_dir(self) -> Path:
        return self.cache_dir / "coredns" / self.coredns_version / "bin"

    @property
    def kube_bin_dir(self) -> Path:
        return self.kube_bin_override or self.kube_cache_dir / "bin"

    @property
    def etcd_bin_dir(self) -> Path:
        return self.etcd_bin_override or self.etcd_cache_dir / "bin"

    @property
    def openvswitch(self) -> bool:
        return self.neutron_backend == "openvswitch"

    @property
    def node_dir(self) -> Path:
        """containerd, kubelet, the CNI daemon and the image registry of the node."""
        return self.state_dir / "node"

    @property
    def registry_url(self) -> str:
        return f"http://{self.host}:{self.ports.registry}"

    @property
    def ovs_db(self) -> Path:
        return self.state_dir / "openvswitch" / "conf.db"

    # ---- derived addresses -----------------------------------------------------------
    @property
    def kubernetes_service_ip(self) -> str:
        """The first address of the service range: the `kubernetes` Service's ClusterIP."""
        return str(ipaddress.ip_network(self.service_cidr)[1])

    @property
    def external_allocation_pools(self) -> list[tuple[str, str]]:
        """Neutron's share of the external segment: every host address but the host's."""
        return allocation_pools_without(self.external_cidr, self.external_host_address)

    @property
    def pod_apiserver_host(self) -> str:
        """Where pods reach the API server: the host's address on the external segment."""
        return self.external_host_address

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.host}:{self.ports.kube_apiserver}"

    @property
    def service_account_issuer(self) -> str:
        """kube-apiserver's --service-account-issuer, hence its API audience."""
        return f"https://kubernetes.default.svc.{self.cluster_domain}"

    @property
    def keystone_url(self) -> str:
        return f"http://{self.host}:{self.ports.keystone}/v3"

    @property
    def cinder_url(self) -> str:
        """Cinder's block-storage v3 endpoint, as Keystone's catalog holds it."""
        return f"http://{self.host}:{self.ports.cinder}/v3/%(project_id)s"

    @property
    def neutron_url(self) -> str:
        return f"http://{self.host}:{self.ports.neutron}"
