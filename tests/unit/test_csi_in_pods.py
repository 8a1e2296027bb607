"""The CSI driver as Pods: its configuration from the seed's keys, the rbd-fuse servers
leaving the container's cgroups, the sidecar images the manifests name."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stackube.devbox import csi as csi_devbox
from stackube.devbox.ceph import keyring_key
from stackube.devbox.commands import StepError
from stackube.host import blockdev, cgroups
from stackube.volume.config import VolumeConfigError, from_seed

pytestmark = pytest.mark.unit

SEED = {
    "auth-url": "http://keystone.example:5000",
    "username": "stackube",
    "tenant-name": "service",
    "region": "RegionTwo",
    "user-domain-name": "Default",
}


def test_a_pod_driver_is_configured_from_the_seeds_keys_and_its_service_account() -> None:
    config = from_seed(SEED, {"password": "pw", "keyring": "AQBkey=="}, "node-1", Path("/st"))
    assert (config.auth_url, config.username, config.password) == (
        "http://keystone.example:5000/v3", "stackube", "pw",
    )  # fmt: skip
    assert (config.project_name, config.region, config.keyring) == (
        "service",
        "RegionTwo",
        "AQBkey==",
    )
    assert config.kubeconfig is None  # the pod's service account
    assert (config.node_name, config.state_dir) == ("node-1", Path("/st"))


def test_a_pod_driver_without_its_password_says_so() -> None:
    with pytest.raises(VolumeConfigError, match="password"):
        from_seed(SEED, {}, "node-1", Path("/st"))


def _hierarchy(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "cgroup.procs").write_text("")
    return path


def test_a_fuse_server_moves_to_the_root_of_every_v1_hierarchy(tmp_path: Path) -> None:
    memory = _hierarchy(tmp_path / "memory")
    devices = _hierarchy(tmp_path / "devices")
    (tmp_path / "cpu").symlink_to(memory)  # an alias: written once, through its target
    (tmp_path / "not-a-hierarchy").mkdir()
    assert cgroups.hierarchies(tmp_path) == [devices, memory]
    assert cgroups.move_to_root(4242, tmp_path) == []
    assert (memory / "cgroup.procs").read_text() == "4242\n"
    assert (devices / "cgroup.procs").read_text() == "4242\n"


def test_cgroup_v2_is_one_hierarchy_and_a_refusal_is_reported_not_raised(tmp_path: Path) -> None:
    root = _hierarchy(tmp_path / "unified")
    assert cgroups.hierarchies(root) == [root]
    (root / "cgroup.procs").unlink()
    (root / "cgroup.procs").mkdir()  # writing fails (root may write any mode)
    problems = cgroups.move_to_root(7, root)
    assert len(problems) == 1 and str(root) in problems[0]
    assert cgroups.move_to_root(7, tmp_path / "none") == [
        f"{tmp_path / 'none'}: no cgroup hierarchy found"
    ]


def test_the_fuse_servers_of_a_directory_are_found_by_their_command_line(tmp_path: Path) -> None:
    def process(pid: int, *argv: str) -> None:
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")

    target = Path("/var/lib/kubelet/plugins/d/state/rbd/vol-1")
    process(10, "/usr/bin/rbd-fuse", "-c", "conf", "-p", "volumes", "-r", "img", str(target))
    process(11, "rbd-fuse", "-c", "conf", "-r", "img", f"{target}-2")  # another volume
    process(12, "sh", "-c", f"echo {target}")  # mentions it, serves nothing
    (tmp_path / "self").mkdir()
    (tmp_path / "13").mkdir()  # gone meanwhile: no cmdline
    assert blockdev.fuse_server_pids(target, proc=tmp_path) == [10]


def test_the_cinder_key_is_read_from_its_keyring() -> None:
    assert keyring_key("[client.cinder]\n\tkey = AQB+x/y==\n\tcaps mon = x\n") == "AQB+x/y=="
    with pytest.raises(StepError, match="no key"):
        keyring_key("[client.cinder]\n")


def test_the_manifests_name_the_sidecar_images_the_devbox_builds() -> None:
    workloads = Path(__file__).parents[2] / "deploy" / "csi" / "workloads.yaml"
    named = {
        c["name"]: c["image"]
        for doc in yaml.safe_load_all(workloads.read_text())
        for c in doc["spec"]["template"]["spec"]["containers"]
    }
    for program, image in csi_devbox.SIDECAR_IMAGES.items():
        assert named[program] == image
    assert {p for _, _, p, _ in csi_devbox.SIDECARS} == set(csi_devbox.SIDECAR_IMAGES)
