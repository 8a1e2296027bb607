"""The devbox's overlay of deploy/ (devbox/deploy.py), pure part."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from stackube.devbox.components import running_since
from stackube.devbox.deploy import devbox_patches, overlay_kustomization
from stackube.devbox.node import NodePaths
from stackube.devbox.settings import DevboxSettings

pytestmark = pytest.mark.unit

IMAGE = "127.0.0.1:5001/stackube/stackube@sha256:" + "ab" * 32


def test_the_overlay_pins_the_image_and_replaces_the_example_configuration() -> None:
    doc = overlay_kustomization(
        "../../work/deploy", IMAGE, {"region": "RegionOne", "auth-url": "http://k:5000/v3"},
        {"password": "s3cret"},
    )  # fmt: skip
    assert doc["resources"] == ["../../work/deploy"]
    assert doc["images"] == [
        {
            "name": "localhost/stackube",
            "newName": "127.0.0.1:5001/stackube/stackube",
            "digest": "sha256:" + "ab" * 32,
        }
    ]
    config, secret = doc["configMapGenerator"][0], doc["secretGenerator"][0]
    assert config["literals"] == ["auth-url=http://k:5000/v3", "region=RegionOne"]
    assert config["behavior"] == secret["behavior"] == "replace"
    assert (config["name"], secret["name"]) == ("stackube-config", "stackube-credentials")
    assert secret["literals"] == ["password=s3cret"]
    assert config["options"] == {"disableNameSuffixHash": True}


@pytest.mark.parametrize(
    ("image", "config"),
    [
        ("127.0.0.1:5001/stackube/stackube:0.1.0", {}),  # a tag can move: refused
        (IMAGE, {"username": "two\nlines"}),
        (IMAGE, {"a=b": "c"}),
    ],
)
def test_what_the_overlay_cannot_carry_is_refused(image: str, config: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"digest|literal"):
        overlay_kustomization("../deploy", image, config, {})


def test_the_devbox_patches_mount_each_node_path_where_the_daemon_looks_for_it() -> None:
    settings = DevboxSettings(state_dir=Path("/srv/box"), cache_dir=Path("/srv/cache"))
    paths = NodePaths(settings.node_dir)
    cni, proxy, controller, auth, csi_controller, csi_node = devbox_patches(settings, paths)
    spec = cni["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in spec["volumes"] if "name" in v}
    assert spec["volumes"][0] == {"$patch": "replace"}  # the base's node paths are gone
    (daemon,) = spec["containers"]
    mounts = {m["name"]: m["mountPath"] for m in daemon["volumeMounts"] if "name" in m}
    # Every node path is mounted at its own path: what the daemon is told is the host's.
    for name, volume in volumes.items():
        if "hostPath" in volume:
            assert mounts[name] == volume["hostPath"]["path"], name
    args = dict(a.split("=", 1) for a in daemon["args"] if "=" in a)
    assert args["--socket"] == str(paths.cni_socket)
    assert args["--state-dir"].startswith(mounts["node-cni"] + "/")
    assert args["--cri-endpoint"] == f"unix://{mounts['cri']}"
    assert args["--runsc"].startswith(mounts["runsc-bin"] + "/")
    (install,) = spec["initContainers"]
    assert f"--socket={paths.cni_socket}" in install["args"]  # the conflist names it
    assert str(paths.cni_bin / "kubestack") in daemon["livenessProbe"]["exec"]["command"][-1]
    assert (
        f"--nodeport-addresses={settings.external_host_address}/32"
        in (proxy["spec"]["template"]["spec"]["containers"][0]["args"])
    )
    assert controller["spec"] == {"replicas": 1} and auth["spec"]["replicas"] == 1
    webhook = auth["spec"]["template"]["spec"]["containers"][0]["args"]
    assert f"--audiences={settings.service_account_issuer}" in webhook
    assert "--bind-address=127.0.0.1" in webhook  # where the apiserver's webhook config points
    # The CSI node plugin: kubelet's root, where this devbox's kubelet has it, both ways.
    node_spec = csi_node["spec"]["template"]["spec"]
    (plugin,) = node_spec["containers"]
    (kubelet_mount,) = plugin["volumeMounts"]
    (kubelet_volume,) = node_spec["volumes"]
    assert (
        kubelet_mount["mountPath"] == kubelet_volume["hostPath"]["path"] == str(paths.kubelet_dir)
    )
    assert kubelet_mount["mountPropagation"] == "Bidirectional"
    node_args = dict(a.split("=", 1) for a in plugin["args"] if "=" in a)
    for flag in ("--endpoint", "--state-dir", "--registration-dir"):
        assert node_args[flag].removeprefix("unix://").startswith(f"{paths.kubelet_dir}/"), flag
    assert csi_controller["spec"]["replicas"] == 1
    sidecars = {c["name"]: c for c in csi_controller["spec"]["template"]["spec"]["containers"]}
    assert (
        f"--http-endpoint=127.0.0.1:{settings.ports.csi_provisioner}"
        in sidecars["csi-provisioner"]["args"]
    )
    assert "--extra-create-metadata" in sidecars["csi-provisioner"]["args"]


def _pod(started: str | None, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    def state() -> dict[str, Any]:
        return {"running": {"startedAt": started}} if started else {"waiting": {}}

    return {
        "metadata": {"deletionTimestamp": "2026-12-04T17:00:09Z"} if deleting else {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "containerStatuses": [{"state": state()}, {"state": state()}],
        },
    }


def test_a_pod_counts_as_running_since_a_restart_only_with_containers_started_after_it() -> None:
    since = datetime(2026, 12, 4, 17, 0, 10, 700000, tzinfo=UTC)
    after = "2026-12-04T17:00:10Z"  # the same second: startedAt has no fraction
    before = "2026-12-04T17:00:09Z"
    assert running_since([_pod(after), _pod("2026-12-04T17:01:00Z")], since) == 2
    # A status from before the restart: Ready, but for containers that died with it.
    assert running_since([_pod(before)], since) == 0
    assert running_since([_pod(after, ready=False)], since) == 0
    assert running_since([_pod(None)], since) == 0
    assert running_since([_pod(after, deleting=True)], since) == 0
    mixed = _pod(after)
    assert running_since([mixed], since) == 1
    mixed["status"]["containerStatuses"][1]["state"]["running"]["startedAt"] = before
    assert running_since([mixed], since) == 0
    assert running_since([{"status": {}}], since) == 0
