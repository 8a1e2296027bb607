"""The CSI driver's pure parts: sizes, capabilities, node identities, the publish
context, kubelet registration answers, and the sidecars' build plan."""

from __future__ import annotations

import pytest

from stackube.devbox import gobuild
from stackube.volume import rbd
from stackube.volume.csi import GIB, capability_problem, node_instance, size_gib
from stackube.volume.csi_api import csi_pb2
from stackube.volume.registration import RegistrationServicer
from stackube.volume.registration_api import api_pb2

pytestmark = pytest.mark.unit

Mode = csi_pb2.VolumeCapability.AccessMode


def capability(
    mode: int = Mode.SINGLE_NODE_WRITER, fs: str = "ext4", block: bool = False
) -> object:
    if block:
        return csi_pb2.VolumeCapability(
            block=csi_pb2.VolumeCapability.BlockVolume(), access_mode=Mode(mode=mode)
        )
    return csi_pb2.VolumeCapability(
        mount=csi_pb2.VolumeCapability.MountVolume(fs_type=fs), access_mode=Mode(mode=mode)
    )


@pytest.mark.parametrize(
    ("required", "limit", "gib"),
    [(0, 0, 1), (1, 0, 1), (GIB, 0, 1), (GIB + 1, 0, 2), (5 * GIB, 10 * GIB, 5)],
)
def test_sizes_round_up_to_whole_gib(required: int, limit: int, gib: int) -> None:
    assert size_gib(csi_pb2.CapacityRange(required_bytes=required, limit_bytes=limit)) == gib


def test_a_limit_below_one_gib_cannot_be_met() -> None:
    with pytest.raises(ValueError, match="cannot hold"):
        size_gib(csi_pb2.CapacityRange(required_bytes=10, limit_bytes=GIB // 2))


def test_capabilities_served_and_refused() -> None:
    assert capability_problem([capability()]) is None
    assert capability_problem([capability(fs="")]) is None
    assert "raw block" in str(capability_problem([capability(block=True)]))
    assert "one node at a time" in str(
        capability_problem([capability(mode=Mode.MULTI_NODE_MULTI_WRITER)])
    )
    assert "ntfs" in str(capability_problem([capability(fs="ntfs")]))


def test_a_nodes_attachment_instance_is_stable_and_its_own() -> None:
    assert node_instance("node-1") == node_instance("node-1")
    assert node_instance("node-1") != node_instance("node-2")
    assert len(node_instance("node-1")) == 36


def test_the_publish_context_round_trips() -> None:
    target = rbd.RbdTarget("volumes", "volume-x", ("127.0.0.1:6789",), "cinder", True)
    assert rbd.from_json(rbd.to_json(target)) == target
    with pytest.raises(rbd.ConnectionInfoError):
        rbd.from_json('{"pool": "p"}')


def test_kubelet_registration_answers() -> None:
    servicer = RegistrationServicer("cinder.stackube.kubernetes.io", "/k/plugins/x/csi.sock")
    info = servicer.GetInfo(api_pb2.InfoRequest(), None)  # type: ignore[arg-type]
    assert (info.type, info.name, info.endpoint) == (
        "CSIPlugin",
        "cinder.stackube.kubernetes.io",
        "/k/plugins/x/csi.sock",
    )
    assert list(info.supported_versions) == ["1.0.0"]
    servicer.NotifyRegistrationStatus(
        api_pb2.RegistrationStatus(plugin_registered=False, error="no"),
        None,  # type: ignore[arg-type]
    )
    assert (servicer.registered, servicer.error) == (False, "no")


SIDECAR_GO_MOD = """module github.com/kubernetes-csi/external-attacher/v4

go 1.26.0

require k8s.io/api v0.37.0

replace k8s.io/api => k8s.io/api v0.37.0 // pinned

replace (
	k8s.io/client-go => k8s.io/client-go v0.37.0
	k8s.io/kms v0.30.0 => k8s.io/kms v0.37.0
	example.com/local => ../local
)
"""


def test_the_sidecar_plan_repeats_the_modules_replaces() -> None:
    assert gobuild.module_replaces(SIDECAR_GO_MOD) == [
        "replace k8s.io/api => k8s.io/api v0.37.0",
        "replace k8s.io/client-go => k8s.io/client-go v0.37.0",
        "replace k8s.io/kms => k8s.io/kms v0.37.0",
    ]
    program = gobuild.GoProgram("csi-attacher", "github.com/x/v4/cmd/csi-attacher")
    plan = gobuild.command_plan("github.com/x/v4", "v4.13.0", SIDECAR_GO_MOD, [program])
    assert "go 1.26.0\n" in plan.go_mod
    assert "require github.com/x/v4 v4.13.0\n" in plan.go_mod
    assert "replace k8s.io/client-go => k8s.io/client-go v0.37.0\n" in plan.go_mod
    assert "../local" not in plan.go_mod
    assert plan.programs == (program,)
