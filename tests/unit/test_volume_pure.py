"""The FlexVolume driver's pure parts: kubelet's call convention, the seed's cinder.conf,
Cinder's RBD connection info and the tenant check."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackube.openstack.volume import Volume
from stackube.volume import config, flexvolume, rbd
from stackube.volume.install import driver_path, driver_script
from stackube.volume.node import VolumeRefusedError, check_owner

pytestmark = pytest.mark.unit

VOLUME = "daa7b4e6-1792-462d-ad47-78e900fed429"
PROJECT = "0123456789abcdef0123456789abcdef"
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
    req = flexvolume.parse_mount(["/var/lib/kubelet/pods/x/volumes/v", json.dumps(KUBELET_OPTIONS)])
    assert (req.volume_id, req.fs_type, req.read_only) == (VOLUME, "ext4", False)
    assert (req.pod_namespace, req.pod_name, req.pod_uid) == (
        "test",
        "web",
        KUBELET_OPTIONS["kubernetes.io/pod.uid"],
    )
    ro = flexvolume.parse_mount(
        ["/m", json.dumps({**KUBELET_OPTIONS, "kubernetes.io/readwrite": "ro"})]
    )
    assert ro.read_only


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/m"], "2 arguments"),
        (["/m", "{not json"], "not JSON"),
        (["/m", "[]"], "JSON object"),
        (["relative", json.dumps(KUBELET_OPTIONS)], "absolute"),
        (["/m", json.dumps({**KUBELET_OPTIONS, "volumeID": ""})], "volumeID is required"),
        (["/m", json.dumps({**KUBELET_OPTIONS, "kubernetes.io/fsType": "ntfs"})], "ntfs"),
        (["/m", json.dumps({**KUBELET_OPTIONS, "kubernetes.io/readwrite": "x"})], "rw or ro"),
        (
            ["/m", json.dumps({"volumeID": VOLUME})],
            "kubernetes.io/pod.namespace",
        ),
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
