"""The devbox node's configuration: containerd, registry mirrors, kubelet (pure)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from stackube.devbox import node
from stackube.devbox.settings import DevboxSettings

pytestmark = pytest.mark.unit

SETTINGS = DevboxSettings(state_dir=Path("/state"), cache_dir=Path("/cache"), node_name="n1")
PATHS = node.NodePaths(SETTINGS.node_dir)


def test_containerd_config_is_the_testbed_shape_with_our_cni_and_mirrors() -> None:
    config = tomllib.loads(node.containerd_config(SETTINGS, PATHS))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert config["version"] == 2
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"].startswith("registry.k8s.io/pause:")
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"] == {
        "bin_dir": "/state/node/cni/bin",
        "conf_dir": "/state/node/cni/net.d",
        "max_conf_num": 1,
    }
    assert cri["registry"]["config_path"] == "/state/node/containerd/certs.d"
    assert config["grpc"]["address"] == "/state/node/containerd/containerd.sock"


def test_mirrors_send_docker_hub_and_registry_k8s_io_to_our_registry() -> None:
    hub = tomllib.loads(node.mirror_hosts_toml("docker.io", SETTINGS))
    assert hub["server"] == "https://registry-1.docker.io"
    assert hub["host"]["http://127.0.0.1:5001"]["capabilities"] == ["pull", "resolve"]
    k8s_io = tomllib.loads(node.mirror_hosts_toml("registry.k8s.io", SETTINGS))
    assert k8s_io["server"] == "https://registry.k8s.io"


def test_kubelet_config_fits_this_machine_and_the_cluster() -> None:
    config = node.kubelet_config(SETTINGS, PATHS)
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["oomScoreAdj"] == 0  # no CAP_SYS_RESOURCE: nothing negative
    assert config["clusterDNS"] == ["10.96.0.10"]
    assert config["authentication"]["anonymous"]["enabled"] is False
    assert config["authorization"]["mode"] == "Webhook"
    assert config["readOnlyPort"] == 0
    assert config["address"] == SETTINGS.external_host_address  # the node's InternalIP
    assert config["containerRuntimeEndpoint"] == "unix:///state/node/containerd/containerd.sock"


def test_node_identities_are_the_node_and_the_service_accounts() -> None:
    certs = {c.name: c for c in node.node_certs(SETTINGS)}
    assert certs["kubelet"].common_name == "system:node:n1"
    assert certs["kubelet"].organizations == ["system:nodes"]
    assert certs["stackube-cni"].common_name == "system:serviceaccount:kube-system:stackube-cni"
    assert certs["stackube-proxy"].common_name == "system:serviceaccount:kube-system:stackube-proxy"
    assert SETTINGS.external_host_address in certs["kubelet-serving"].ip_addresses


def test_daemons_run_as_this_node_with_the_cluster_dns() -> None:
    argv = node.cni_daemon_argv(SETTINGS, PATHS)
    assert "--node-name=n1" in argv
    assert "--socket=/state/node/cni/cni.sock" in argv
    assert "--cluster-dns=10.96.0.10" in argv
    assert "--cluster-dns=10.96.0.10" in node.proxy_argv(SETTINGS)
    kubelet = node.kubelet_argv(SETTINGS, PATHS)
    assert kubelet[0] == "/cache/kubernetes/v1.37.2/bin/kubelet"
    assert "--hostname-override=n1" in kubelet
