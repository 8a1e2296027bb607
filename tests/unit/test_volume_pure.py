"""The FlexVolume driver's pure parts: kubelet's call convention, the seed's cinder.conf,
Cinder's RBD connection info and the tenant check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackube.openstack.volume import Volume
from stackube.volume import config, flexvolume, rbd
from stackube.volume.install import driver_path, driver_script
from stackube.volume.node import VolumeRefusedError, check_owner, check_pod

pytestmark = pytest.mark.unit

VOLUME = "daa7b4e6-1792-462d-ad47-78e900fed429"
PROJECT = "0123456789abcdef0123456789abcdef"
POD_UID = "5c1f3c3e-2f0e-4bb7-9d0e-1a2b3c4d5e6f"
MOUNT_DIR = f"/var/lib/kubelet/pods/{POD_UID}/volumes/cinder~flexvolume_driver/data"
KUBELET_OPTIONS = {
    "volumeID": VOLUME,
    "kubernetes.io/fsType": "ext4",
    "kubernetes.io/readwrite": "rw",
    "kubernetes.io/pod.namespace": "test",
    "kubernetes.io/pod.name": "web",
    "kubernetes.io/pod.uid": "5c1f3c3e-2f0e-4bb7-9d0e-1a2b3c4d5e6f",
    "kubernetes.io/serviceAccount.name": "default",
}


def test_init_declares_no_attach_step() -> None:
    reply = json.loads(flexvolume.init_result())
    assert reply == {
        "status": "Success",
        "capabilities": {"attach": False, "selinuxRelabel": False},
    }


def test_mount_arguments_as_kubelet_passes_them() -> None:
    req = flexvolume.parse_mount([MOUNT_DIR, json.dumps(KUBELET_OPTIONS)])
    assert (req.volume_id, req.fs_type, req.read_only) == (VOLUME, "ext4", False)
    assert (req.pod_namespace, req.pod_name, req.pod_uid) == (
        "test",
        "web",
        KUBELET_OPTIONS["kubernetes.io/pod.uid"],
    )
    ro = flexvolume.parse_mount(
        [MOUNT_DIR, json.dumps({**KUBELET_OPTIONS, "kubernetes.io/readwrite": "ro"})]
    )
    assert ro.read_only


def test_the_pod_uid_comes_from_kubelets_directory_not_the_options() -> None:
    forged = {**KUBELET_OPTIONS, "kubernetes.io/pod.uid": "00000000-0000-0000-0000-000000000000"}
    assert flexvolume.parse_mount([MOUNT_DIR, json.dumps(forged)]).pod_uid == POD_UID
    csi_target = f"/k/pods/{POD_UID}/volumes/kubernetes.io~csi/pvc-1/mount"
    assert flexvolume.pod_uid_of(csi_target) == POD_UID
    for path in ("/tmp/x", "/k/pods/not-a-uid/volumes/x/y", "/k/pods/volumes"):
        with pytest.raises(flexvolume.FlexVolumeError):
            flexvolume.pod_uid_of(path)


class OnePod:
    """The Kubernetes API as check_pod asks it: one pod, test/web."""

    def project_of(self, namespace: str) -> str | None:
        return PROJECT if namespace == "test" else None

    def pod_uid(self, namespace: str, name: str) -> str | None:
        return POD_UID if (namespace, name) == ("test", "web") else None


def test_a_pod_naming_another_namespace_or_pod_is_refused() -> None:
    check_pod(OnePod(), "test", "web", POD_UID)
    for namespace, name in (("other", "web"), ("test", "db")):
        with pytest.raises(VolumeRefusedError, match="may not name another namespace or pod"):
            check_pod(OnePod(), namespace, name, POD_UID)
    with pytest.raises(VolumeRefusedError):
        check_pod(OnePod(), "test", "web", "00000000-0000-0000-0000-000000000000")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([MOUNT_DIR], "2 arguments"),
        ([MOUNT_DIR, "{not json"], "not JSON"),
        ([MOUNT_DIR, "[]"], "JSON object"),
        (["relative", json.dumps(KUBELET_OPTIONS)], "absolute"),
        ([MOUNT_DIR, json.dumps({**KUBELET_OPTIONS, "volumeID": ""})], "volumeID is required"),
        ([MOUNT_DIR, json.dumps({**KUBELET_OPTIONS, "volumeID": "../x"})], "not a Cinder volume"),
        ([MOUNT_DIR, json.dumps({**KUBELET_OPTIONS, "kubernetes.io/fsType": "ntfs"})], "ntfs"),
        ([MOUNT_DIR, json.dumps({**KUBELET_OPTIONS, "kubernetes.io/readwrite": "x"})], "rw or ro"),
        ([MOUNT_DIR, json.dumps({"volumeID": VOLUME})], "kubernetes.io/pod.namespace"),
        (["/m", json.dumps(KUBELET_OPTIONS)], "not a kubelet pod volume directory"),
    ],
)
def test_bad_mount_arguments_say_what_is_wrong(args: list[str], message: str) -> None:
    with pytest.raises(flexvolume.FlexVolumeError, match=message):
        flexvolume.parse_mount(args)


def test_results_and_exit_codes() -> None:
    assert json.loads(flexvolume.result("Failure", "no")) == {"status": "Failure", "message": "no"}
    assert flexvolume.exit_code("Failure") == 1
    assert flexvolume.exit_code("Success") == 0
    assert flexvolume.exit_code("Not supported") == 0
    with pytest.raises(flexvolume.FlexVolumeError):
        flexvolume.parse_unmount([])


SEED_CONF = """
[Global]
auth-url = http://keystone:5000/v3
username = stackube
password = secret
tenant-name = service
region = RegionTwo
[RBD]
keyring = AQBsomeKey==
"""


def test_the_seeds_cinder_conf() -> None:
    parsed = config.parse(SEED_CONF, hostname="node-1")
    assert parsed.auth_url == "http://keystone:5000/v3"
    assert (parsed.username, parsed.password, parsed.project_name) == (
        "stackube",
        "secret",
        "service",
    )
    assert (parsed.region, parsed.user_domain, parsed.project_domain) == (
        "RegionTwo",
        "Default",
        "Default",
    )
    assert parsed.node_name == "node-1"
    assert parsed.state_dir == config.DEFAULT_STATE_DIR
    assert "secret" not in repr(parsed)
    # A bare key becomes a keyring for client.cinder.
    assert config.keyring_text(parsed) == "[client.cinder]\n\tkey = AQBsomeKey==\n"


def test_domains_and_stackube_section() -> None:
    text = SEED_CONF + ("[Stackube]\nkubeconfig = /k\nnode-name = n2\nstate-dir = /s\n")
    text = text.replace("region = RegionTwo", "region = RegionTwo\ndomain-name = corp")
    parsed = config.parse(text)
    assert (parsed.user_domain, parsed.project_domain) == ("corp", "corp")
    assert (parsed.kubeconfig, parsed.node_name, parsed.state_dir) == (
        Path("/k"),
        "n2",
        Path("/s"),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not ini", "not an INI file"),
        ("[RBD]\nkeyring = k\n", r"no \[Global\]"),
        (SEED_CONF.replace("password = secret\n", ""), "password is required"),
        (SEED_CONF.replace("tenant-name = service\n", ""), "tenant-name is required"),
    ],
)
def test_bad_cinder_conf(text: str, message: str) -> None:
    with pytest.raises(config.VolumeConfigError, match=message):
        config.parse(text)


def test_a_missing_keyring_is_an_error() -> None:
    parsed = config.parse(SEED_CONF.replace("keyring = AQBsomeKey==", ""))
    with pytest.raises(config.VolumeConfigError, match="keyring is required"):
        config.keyring_text(parsed)


RBD_INFO = {
    "driver_volume_type": "rbd",
    "data": {
        "name": f"volumes/volume-{VOLUME}",
        "hosts": ["127.0.0.1", "fd00::1"],
        "ports": ["6789", "3300"],
        "auth_enabled": True,
        "auth_username": "cinder",
    },
}


def test_rbd_target_from_cinders_connection_info() -> None:
    target = rbd.rbd_target(RBD_INFO)
    assert (target.pool, target.image, target.user) == ("volumes", f"volume-{VOLUME}", "cinder")
    assert target.monitors == ("127.0.0.1:6789", "[fd00::1]:3300")
    conf = rbd.client_conf(target, "/s/keyring")
    assert "mon_host = 127.0.0.1:6789,[fd00::1]:3300\n" in conf
    assert "keyring = /s/keyring\n" in conf
    assert "auth_client_required = cephx\n" in conf


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({"driver_volume_type": "iscsi", "data": {}}, "iscsi connection"),
        ({"driver_volume_type": "rbd", "data": {"name": "nopool"}}, "no pool/image"),
        (
            {"driver_volume_type": "rbd", "data": {"name": "p/i", "hosts": ["h"], "ports": []}},
            "no Ceph monitors",
        ),
    ],
)
def test_connection_info_this_node_cannot_use(info: dict[str, object], message: str) -> None:
    with pytest.raises(rbd.ConnectionInfoError, match=message):
        rbd.rbd_target(info)


def _volume(project: str) -> Volume:
    return Volume(VOLUME, "v", project, "available", 1, multiattach=False)


def test_a_tenants_own_volume_passes() -> None:
    assert check_owner(VOLUME, _volume(PROJECT), "test", PROJECT).id == VOLUME


def test_another_projects_volume_and_a_missing_one_read_the_same() -> None:
    with pytest.raises(VolumeRefusedError) as other:
        check_owner(VOLUME, _volume("f" * 32), "test", PROJECT)
    with pytest.raises(VolumeRefusedError) as missing:
        check_owner(VOLUME, None, "test", PROJECT)
    assert str(other.value) == str(missing.value)
    assert "f" * 32 not in str(other.value)
    assert "only mount their own tenant's volumes" in str(other.value)


def test_namespaces_no_tenant_owns_get_no_volume() -> None:
    with pytest.raises(VolumeRefusedError, match="not a Tenant's"):
        check_owner(VOLUME, _volume(PROJECT), "default", None)


def test_driver_script_runs_this_python_with_its_config() -> None:
    script = driver_script("/venv/bin/python3", Path("/etc/x/cinder.conf"))
    assert script.startswith("#!/bin/sh\n")
    assert (
        'STACKUBE_CINDER_CONF=/etc/x/cinder.conf /venv/bin/python3 -m stackube.volume.main "$@"'
        in script
    )
    assert driver_path(Path("/p")) == Path("/p/cinder~flexvolume_driver/flexvolume_driver")
    assert "STACKUBE_CINDER_CONF" not in driver_script("/py", None)


@pytest.mark.parametrize("image", ["../../etc", "-oallow_other", "a/b", ".."])
def test_an_rbd_name_never_becomes_a_path_or_an_option(image: str) -> None:
    info = {"driver_volume_type": "rbd", "name": f"volumes/{image}", "hosts": ["h"], "ports": ["1"]}
    with pytest.raises(rbd.ConnectionInfoError):
        rbd.rbd_target(info)
    forged = rbd.to_json(rbd.RbdTarget("volumes", image, ("h:1",), "cinder", True))
    with pytest.raises(rbd.ConnectionInfoError):
        rbd.from_json(forged)
