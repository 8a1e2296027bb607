"""Stackube's image (issue 15's first part; decision 0017): built on this machine from
Debian 12 packages and our wheel, pushed to the devbox registry, pulled by the node by
digest, and every component's entry point and the node tools they run are in it; it
runs as its own user and carries none of the devbox's secrets."""

from __future__ import annotations

import json
import re
import time

import pytest
import yaml

from stackube.devbox import images, stackube_image
from stackube.devbox.box import Devbox
from stackube.devbox.components import PodComponents
from tests.e2e.kubectl import Kubectl, eventually

pytestmark = pytest.mark.e2e


COMPONENTS = ("controller", "auth-webhook", "cni-daemon", "cni-install", "proxy", "csi",
              "flexvolume-install")  # fmt: skip
TOOLS = ("iptables", "iptables-restore", "ip", "conntrack", "arping", "ovs-vsctl",
         "rbd-fuse", "mkfs.ext4", "blkid", "losetup", "mount", "nsenter")  # fmt: skip


@pytest.fixture(scope="module")
def built(devbox: Devbox) -> tuple[images.BuiltImage, str]:
    """The image of this checkout, pushed: (image, its reference by digest)."""
    started = time.monotonic()
    image = stackube_image.build(devbox.settings, lambda _line: None)
    built_in = time.monotonic() - started
    images.push(image, devbox.settings.registry_url)
    reference = stackube_image.reference(devbox.settings, image)
    pulled, unpacked = stackube_image.size(image)
    print(f"{reference}: {pulled / 2**20:.1f} MiB to pull, {unpacked / 2**20:.1f} MiB "
          f"unpacked, built in {built_in:.0f} s")  # fmt: skip
    return image, reference


def test_the_image_has_every_entry_point_and_tool_runs_as_its_user_and_holds_no_secret(
    devbox: Devbox, kubectl: Kubectl, built: tuple[images.BuiltImage, str]
) -> None:
    image, reference = built
    # No credential of the devbox's is in any file of the image (the components read
    # theirs from Secrets), and no private key at all.
    secrets = json.loads((devbox.settings.state_dir / "secrets.json").read_text())
    layers = [*image.spec.base_layers, *(file.data for file in image.spec.files)]
    # Positive control: the search does see what the image holds.
    assert any(b'__version__ = "' in data for data in layers)
    for name, value in secrets.items():
        assert len(str(value)) >= 8, name  # a value too short to search for proves nothing
        assert not any(str(value).encode() in data for data in layers), name
    for key in sorted((devbox.settings.state_dir / "pki").glob("*.key")):
        body = key.read_bytes().strip().splitlines()[1]  # a line of the key itself
        assert not any(body in data for data in layers), key.name
    # Nor any PEM private key block (cryptography's ssh.py only names the marker).
    pem = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----\r?\n[A-Za-z0-9+/=\r\n]{64}")
    assert [f.path for f in image.spec.files if pem.search(f.data)] == []

    script = "; ".join(
        [
            "id -u",
            *(f"python3 -m stackube {c} --help >/dev/null && echo entry-{c}" for c in COMPONENTS),
            *(f"command -v {tool} >/dev/null && echo tool-{tool}" for tool in TOOLS),
        ]
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "stackube-image-check", "namespace": "kube-system"},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "check", "image": reference, "command": ["sh", "-c", script]}],
        },
    }
    kubectl.run("delete", "pod", "-n", "kube-system", "stackube-image-check", "--ignore-not-found")
    kubectl.run("apply", "-f", "-", stdin=json.dumps(pod))
    try:
        eventually(
            lambda: (
                kubectl.json("-n", "kube-system", "get", "pod", "stackube-image-check")[
                    "status"
                ].get("phase")
                in ("Succeeded", "Failed")
            ),
            180,
            "the image's check pod done",
        )
        found = kubectl.json("-n", "kube-system", "get", "pod", "stackube-image-check")
        lines = kubectl.run("-n", "kube-system", "logs", "stackube-image-check").stdout.split()
    finally:
        kubectl.run("delete", "pod", "-n", "kube-system", "stackube-image-check", "--wait=false")
    assert found["status"]["phase"] == "Succeeded", lines
    assert found["status"]["containerStatuses"][0]["imageID"].endswith(reference.split("@")[1])
    assert lines[0] == str(stackube_image.USER_ID), lines
    missing = [
        want
        for want in (*(f"entry-{c}" for c in COMPONENTS), *(f"tool-{t}" for t in TOOLS))
        if want not in lines
    ]
    assert missing == [], lines


def test_deploy_with_the_devbox_overlay_is_accepted_by_the_api_server(
    devbox: Devbox, kubectl: Kubectl, built: tuple[images.BuiltImage, str]
) -> None:
    """deploy/ through the devbox's overlay (the image by digest, the devbox's own
    configuration and node paths), validated strictly by the API server (dry run:
    nothing is changed)."""
    _, reference = built
    overlay = PodComponents(devbox.settings).write_overlay(reference)
    rendered = kubectl.run("kustomize", str(overlay)).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    workloads = [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]
    containers = [
        container
        for d in workloads
        for kind in ("initContainers", "containers")
        for container in d["spec"]["template"]["spec"].get(kind, [])
    ]
    ours = [c["image"] for c in containers if "stackube" in c["image"]]
    assert ours and set(ours) == {reference}, ours
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "stackube-config"
    )
    assert config["data"]["auth-url"] == devbox.settings.keystone_url
    applied = kubectl.run(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered, check=False
    )
    assert applied.returncode == 0, applied.stderr
    # Positive control: the same check refuses a field no API has.
    workloads[0]["spec"]["template"]["spec"]["containers"][0]["notAField"] = True
    refused = kubectl.run(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-",
        stdin=yaml.safe_dump(workloads[0]), check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "notAField" in refused.stderr, refused
