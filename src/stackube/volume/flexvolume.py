"""The FlexVolume call convention (pure): what kubelet passes and what it reads back.

Follows Kubernetes' FlexVolume spec (kubernetes/community, contributors/devel/sig-storage/
flexvolume.md; pkg/volume/flexvolume in Kubernetes v1.37): the driver is an executable
called as `<driver> <command> [args]`, printing one JSON object
`{"status": "Success" | "Failure" | "Not supported", "message": ..., ...}`. Stackube's
driver declares `"attach": false`, so kubelet calls only `init`, `mount <dir> <json>` and
`unmount <dir>`: the Cinder attachment is made on the node, at mount time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

from stackube.errors import StackubeError

DRIVER_NAME = "cinder/flexvolume_driver"
SUCCESS = "Success"
FAILURE = "Failure"
NOT_SUPPORTED = "Not supported"

# Options kubelet adds to the pod's own (pkg/volume/flexvolume/util.go).
OPTION_FS_TYPE = "kubernetes.io/fsType"
OPTION_READWRITE = "kubernetes.io/readwrite"
OPTION_POD_NAMESPACE = "kubernetes.io/pod.namespace"
OPTION_POD_NAME = "kubernetes.io/pod.name"
OPTION_POD_UID = "kubernetes.io/pod.uid"
# The pod's own option naming the Cinder volume (the seed's volume.rst).
OPTION_VOLUME_ID = "volumeID"
SUPPORTED_FS_TYPES = ("ext4", "ext3", "xfs")
DEFAULT_FS_TYPE = "ext4"
# Cinder volume IDs and Kubernetes UIDs.
VOLUME_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class FlexVolumeError(StackubeError):
    """A call that fails with this message (status Failure)."""


@dataclass(frozen=True)
class MountRequest:
    """`mount <mount dir> <options>`, validated."""

    mount_dir: str
    volume_id: str
    fs_type: str
    read_only: bool
    pod_namespace: str
    pod_name: str
    pod_uid: str


def parse_mount(args: Sequence[str]) -> MountRequest:
    """The arguments of `mount`: the target directory and the options as JSON.

    Raises FlexVolumeError naming what is missing or wrong."""
    if len(args) != 2:
        raise FlexVolumeError("mount takes 2 arguments: <mount dir> <json options>")
    mount_dir, raw = args
    try:
        options = json.loads(raw)
    except ValueError as exc:
        raise FlexVolumeError(f"mount options are not JSON: {exc}") from exc
    if not isinstance(options, dict):
        raise FlexVolumeError("mount options must be a JSON object")
    return mount_request(mount_dir, options)


def mount_request(mount_dir: str, options: Mapping[str, Any]) -> MountRequest:
    if not mount_dir.startswith("/"):
        raise FlexVolumeError(f"mount dir {mount_dir!r} is not an absolute path")
    volume_id = str(options.get(OPTION_VOLUME_ID) or "").strip()
    if not volume_id:
        raise FlexVolumeError(
            f"options.{OPTION_VOLUME_ID} is required: the ID of a Cinder volume of this"
            " namespace's project (`openstack volume create`)"
        )
    fs_type = str(options.get(OPTION_FS_TYPE) or DEFAULT_FS_TYPE)
    if fs_type not in SUPPORTED_FS_TYPES:
        raise FlexVolumeError(
            f"fsType {fs_type!r} is not supported: use one of {', '.join(SUPPORTED_FS_TYPES)}"
        )
    readwrite = str(options.get(OPTION_READWRITE) or "rw")
    if readwrite not in ("rw", "ro"):
        raise FlexVolumeError(f"{OPTION_READWRITE} must be rw or ro, not {readwrite!r}")
    if not VOLUME_ID.match(volume_id):
        raise FlexVolumeError(f"options.{OPTION_VOLUME_ID} {volume_id!r} is not a Cinder volume ID")
    namespace = str(options.get(OPTION_POD_NAMESPACE) or "")
    name = str(options.get(OPTION_POD_NAME) or "")
    # The pod's own options come after kubelet's and may name any of these keys: the
    # pod's UID is taken from kubelet's directory instead, and the caller checks that the
    # named pod has it.
    pod_uid = pod_uid_of(mount_dir)
    if not namespace or not name:
        raise FlexVolumeError(
            f"kubelet passed no {OPTION_POD_NAMESPACE} or {OPTION_POD_NAME}: this driver"
            " is called by kubelet for a pod"
        )
    return MountRequest(
        mount_dir=mount_dir,
        volume_id=volume_id,
        fs_type=fs_type,
        read_only=readwrite == "ro",
        pod_namespace=namespace,
        pod_name=name,
        pod_uid=pod_uid,
    )


def pod_uid_of(volume_dir: str) -> str:
    """The pod UID in kubelet's directory of a pod's volume, `<root>/pods/<uid>/volumes/...`
    (FlexVolume's mount dir, CSI's target path).

    Raises FlexVolumeError for any other path."""
    parts = PurePosixPath(volume_dir).parts
    found = [
        parts[i + 1]
        for i in range(len(parts) - 2)
        if parts[i] == "pods" and parts[i + 2] == "volumes"
    ]
    if not found:
        raise FlexVolumeError(f"{volume_dir} is not a kubelet pod volume directory")
    if not VOLUME_ID.match(found[-1]):
        raise FlexVolumeError(f"{volume_dir}: {found[-1]!r} is not a pod UID")
    return found[-1]


def parse_unmount(args: Sequence[str]) -> str:
    if len(args) != 1 or not args[0].startswith("/"):
        raise FlexVolumeError("unmount takes 1 argument: <mount dir> (an absolute path)")
    return args[0]


def result(status: str, message: str = "", **extra: Any) -> str:
    """The JSON line kubelet reads."""
    body: dict[str, Any] = {"status": status}
    if message:
        body["message"] = message
    body.update(extra)
    return json.dumps(body)


def init_result() -> str:
    return result(SUCCESS, capabilities={"attach": False, "selinuxRelabel": False})


def exit_code(status: str) -> int:
    """0 for Success and Not supported (kubelet reads the status), 1 for Failure."""
    return 1 if status == FAILURE else 0
