"""Stackube's CSI driver `cinder.stackube.kubernetes.io` (CSI spec v1.14, csi.proto):
Cinder volumes of the PVC's tenant, attached through Cinder's attachments API, staged
with rbd-fuse + a loop device on the node, bind-mounted into pods of that tenant only.

- Identity: plugin info, CONTROLLER_SERVICE capability, Probe.
- Controller (with external-provisioner and external-attacher): CreateVolume in the
  Keystone project of the PVC's namespace (`--extra-create-metadata` passes it), so the
  tenant's Cinder quotas apply; DeleteVolume; ControllerPublish/Unpublish = a Cinder
  attachment for the node (instance = a UUID derived from the node's name), whose RBD
  connection goes to the node in the publish context.
- Node (registered with kubelet by stackube.volume.registration): NodeStage/Unstage =
  rbd-fuse + loop + filesystem on first use (stackube.volume.node); NodePublish checks
  the pod's namespace against the volume's project in Cinder (podInfoOnMount), then
  bind-mounts; NodeUnpublish unmounts.

Errors carry gRPC codes as the spec lists them for each call, with messages a person can
act on (external-provisioner copies them into the PVC's events).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import grpc

from stackube.errors import NotFoundError, PermanentError, StackubeError, TemporaryError
from stackube.openstack.volume import DELETABLE, Volume
from stackube.volume import rbd
from stackube.volume.csi_api import csi_pb2, csi_pb2_grpc
from stackube.volume.flexvolume import (
    DEFAULT_FS_TYPE,
    SUPPORTED_FS_TYPES,
    VOLUME_ID,
    FlexVolumeError,
    pod_uid_of,
)
from stackube.volume.node import (
    Cinder,
    Namespaces,
    NodeVolumes,
    VolumeRefusedError,
    attach,
    check_owner,
    check_pod,
    detach,
)

log = logging.getLogger(__name__)

DRIVER_NAME = "cinder.stackube.kubernetes.io"
DRIVER_VERSION = "0.1.0"
GIB = 1024**3
# external-provisioner's --extra-create-metadata parameters.
PVC_NAMESPACE = "csi.storage.k8s.io/pvc/namespace"
PVC_NAME = "csi.storage.k8s.io/pvc/name"
# kubelet's pod info (CSIDriver podInfoOnMount: true).
POD_NAMESPACE = "csi.storage.k8s.io/pod.namespace"
POD_NAME = "csi.storage.k8s.io/pod.name"
PUBLISH_RBD = "rbd"  # publish context key: the RBD connection, JSON
NODE_NAMESPACE = uuid.UUID("5f1f3d2e-6a1b-4c59-9d55-3c1d0b7a9e11")
CREATE_WAIT_SECONDS = 60.0
SINGLE_NODE_MODES = (
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_SINGLE_WRITER,
    csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_MULTI_WRITER,
)


def node_instance(node_id: str) -> str:
    """The Cinder attachment's instance UUID for a node (stable, derived from its name)."""
    return str(uuid.uuid5(NODE_NAMESPACE, node_id))


def size_gib(capacity: Any) -> int:
    """The GiB to ask Cinder for: the required bytes rounded up, at least 1 (pure)."""
    required = int(capacity.required_bytes) if capacity is not None else 0
    limit = int(capacity.limit_bytes) if capacity is not None else 0
    gib = max(1, math.ceil(required / GIB))
    if limit and gib * GIB > limit:
        raise ValueError(f"{limit} bytes cannot hold a whole GiB volume of {required} bytes")
    return gib


def capability_problem(capabilities: Any) -> str | None:
    """Why these capabilities cannot be served (block volumes, multi-node), or None."""
    for cap in capabilities:
        if cap.HasField("block"):
            return "raw block volumes are not supported (use a filesystem volume)"
        if cap.access_mode.mode not in SINGLE_NODE_MODES:
            return "a Cinder volume is attached to one node at a time (ReadWriteOnce)"
        if cap.HasField("mount") and cap.mount.fs_type not in ("", *SUPPORTED_FS_TYPES):
            return f"fsType {cap.mount.fs_type!r} is not supported"
    return None


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    log.warning("%s: %s", code.name, message)
    context.abort(code, message)
    raise AssertionError("context.abort returned")  # pragma: no cover


def _translate(context: grpc.ServicerContext, exc: StackubeError) -> NoReturn:
    text = str(exc)
    if isinstance(exc, VolumeRefusedError):
        _abort(context, grpc.StatusCode.PERMISSION_DENIED, text)
    if isinstance(exc, NotFoundError):
        _abort(context, grpc.StatusCode.NOT_FOUND, text)
    if isinstance(exc, PermanentError) and "quota" in text.lower():
        _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, f"Cinder quota: {text}")
    if isinstance(exc, TemporaryError):
        _abort(context, grpc.StatusCode.UNAVAILABLE, text)
    if isinstance(exc, FlexVolumeError):
        _abort(context, grpc.StatusCode.FAILED_PRECONDITION, text)
    _abort(context, grpc.StatusCode.INTERNAL, text)


class IdentityServicer(csi_pb2_grpc.IdentityServicer):
    def __init__(self, controller: bool, ready: Callable[[], bool] = lambda: True) -> None:
        self.controller = controller
        self.ready = ready

    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return csi_pb2.GetPluginInfoResponse(name=DRIVER_NAME, vendor_version=DRIVER_VERSION)

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        caps = []
        if self.controller:
            service = csi_pb2.PluginCapability.Service(
                type=csi_pb2.PluginCapability.Service.CONTROLLER_SERVICE
            )
            caps.append(csi_pb2.PluginCapability(service=service))
        return csi_pb2.GetPluginCapabilitiesResponse(capabilities=caps)

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return csi_pb2.ProbeResponse(ready={"value": self.ready()})


class ProjectVolumes(Protocol):
    """Cinder as one project sees it (quotas apply): what CreateVolume needs."""

    def find(self, project_id: str, name: str) -> Volume | None: ...
    def create(
        self,
        project_id: str,
        name: str,
        size_gib: int,
        description: str,
        metadata: Mapping[str, str],
    ) -> Volume: ...


class AdminVolumes(Cinder, Protocol):
    def delete_volume(self, volume_id: str) -> None: ...


@dataclass
class ControllerServicer(csi_pb2_grpc.ControllerServicer):
    cinder: AdminVolumes
    projects: ProjectVolumes
    namespaces: Namespaces
    sleep: Callable[[float], None] = time.sleep
    _locks: dict[str, threading.Lock] = field(default_factory=dict)
    _locks_lock: threading.Lock = field(default_factory=threading.Lock)

    def ControllerGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        rpc = csi_pb2.ControllerServiceCapability.RPC
        kinds = (rpc.CREATE_DELETE_VOLUME, rpc.PUBLISH_UNPUBLISH_VOLUME)
        return csi_pb2.ControllerGetCapabilitiesResponse(
            capabilities=[csi_pb2.ControllerServiceCapability(rpc=rpc(type=k)) for k in kinds]
        )

    def CreateVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if not request.name:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "name is required")
        problem = capability_problem(request.volume_capabilities)
        if problem:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        if request.HasField("volume_content_source"):
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "volumes from sources: not yet")
        params = dict(request.parameters)
        namespace = params.get(PVC_NAMESPACE, "")
        if not namespace:
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no {PVC_NAMESPACE} parameter: run external-provisioner with"
                " --extra-create-metadata (the PVC's namespace decides the Cinder project)",
            )
        try:
            gib = size_gib(request.capacity_range if request.HasField("capacity_range") else None)
        except ValueError as exc:
            _abort(context, grpc.StatusCode.OUT_OF_RANGE, str(exc))
        try:
            project = self.namespaces.project_of(namespace)
            if project is None:
                _abort(
                    context,
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"namespace {namespace} is not a Tenant's (or is being deleted): Cinder"
                    " volumes are made in Tenants' Keystone projects only",
                )
            with self._creating(request.name):
                volume = self._find_or_create(context, request, project, namespace, gib)
            volume = self._wait_available(context, volume)
        except StackubeError as exc:
            _translate(context, exc)
        return csi_pb2.CreateVolumeResponse(
            volume=csi_pb2.Volume(volume_id=volume.id, capacity_bytes=volume.size_gib * GIB)
        )

    @contextlib.contextmanager
    def _creating(self, name: str) -> Iterator[None]:
        """One CreateVolume at a time per name (a provisioner's retry while the first call
        still runs must find its volume, not make a second)."""
        with self._locks_lock:
            lock = self._locks.setdefault(name, threading.Lock())
        with lock:
            yield

    def _find_or_create(
        self, context: grpc.ServicerContext, request: Any, project: str, namespace: str, gib: int
    ) -> Volume:
        params = dict(request.parameters)
        volume = self.projects.find(project, request.name)
        if volume is not None and volume.size_gib != gib:
            _abort(context, grpc.StatusCode.ALREADY_EXISTS,
                   f"Cinder volume {volume.id} named {request.name} has {volume.size_gib} GiB,"
                   f" not {gib}")  # fmt: skip
        if volume is None:
            pvc = f"{namespace}/{params.get(PVC_NAME, '?')}"
            metadata = {"stackube.kubernetes.io/pvc": pvc}
            description = f"Kubernetes PersistentVolumeClaim {pvc}"
            volume = self.projects.create(project, request.name, gib, description, metadata)
            log.info("CreateVolume %s: Cinder volume %s (%d GiB) in project %s for %s",
                     request.name, volume.id, gib, project, pvc)  # fmt: skip
        return volume

    def _wait_available(self, context: grpc.ServicerContext, volume: Volume) -> Volume:
        deadline = time.monotonic() + CREATE_WAIT_SECONDS
        while volume.status != "available":
            if volume.status in ("error", "error_restoring"):
                self.cinder.delete_volume(volume.id)
                _abort(context, grpc.StatusCode.INTERNAL,
                       f"Cinder could not create volume {volume.id} ({volume.status}):"
                       " deleted it; the next attempt makes a new one")  # fmt: skip
            if volume.status not in ("creating", "downloading") or time.monotonic() > deadline:
                _abort(context, grpc.StatusCode.UNAVAILABLE,
                       f"Cinder volume {volume.id} is {volume.status}")  # fmt: skip
            self.sleep(1.0)
            found = self.cinder.get_volume(volume.id)
            if found is None:
                _abort(context, grpc.StatusCode.ABORTED, f"Cinder volume {volume.id} vanished")
            volume = found
        return volume

    def DeleteVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            volume = self.cinder.get_volume(request.volume_id)
            if volume is not None:
                if volume.status not in DELETABLE | {"deleting"}:
                    _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                           f"Cinder volume {volume.id} is {volume.status}: it can be deleted"
                           " once detached")  # fmt: skip
                self.cinder.delete_volume(volume.id)
                log.info("DeleteVolume: deleting Cinder volume %s", volume.id)
        except StackubeError as exc:
            _translate(context, exc)
        return csi_pb2.DeleteVolumeResponse()

    def ControllerPublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if not request.volume_id or not request.node_id:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "volume_id and node_id are required")
        try:
            if self.cinder.get_volume(request.volume_id) is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"no Cinder volume {request.volume_id}")
            instance = node_instance(request.node_id)
            attachment = attach(
                self.cinder, request.volume_id, instance, request.node_id, request.readonly
            )
            if attachment.status != "attached":
                self.cinder.complete_attachment(attachment.id)
            target = rbd.rbd_target(attachment.connection_info)
        except StackubeError as exc:
            _translate(context, exc)
        log.info("ControllerPublishVolume %s -> node %s (attachment %s)", request.volume_id,
                 request.node_id, attachment.id)  # fmt: skip
        return csi_pb2.ControllerPublishVolumeResponse(
            publish_context={PUBLISH_RBD: rbd.to_json(target)}
        )

    def ControllerUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            if request.node_id:
                gone = detach(self.cinder, request.volume_id, node_instance(request.node_id))
            else:  # "from every node" (CSI spec)
                attachments = self.cinder.attachments_of(request.volume_id)
                for attachment in attachments:
                    self.cinder.delete_attachment(attachment.id)
                gone = len(attachments)
            log.info("ControllerUnpublishVolume %s from node %s: %d attachment(s) deleted",
                     request.volume_id, request.node_id or "(all)", gone)  # fmt: skip
        except StackubeError as exc:
            _translate(context, exc)
        return csi_pb2.ControllerUnpublishVolumeResponse()

    def ValidateVolumeCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            if self.cinder.get_volume(request.volume_id) is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"no Cinder volume {request.volume_id}")
        except StackubeError as exc:
            _translate(context, exc)
        problem = capability_problem(request.volume_capabilities)
        if problem:
            return csi_pb2.ValidateVolumeCapabilitiesResponse(message=problem)
        confirmed = csi_pb2.ValidateVolumeCapabilitiesResponse.Confirmed(
            volume_capabilities=request.volume_capabilities
        )
        return csi_pb2.ValidateVolumeCapabilitiesResponse(confirmed=confirmed)


@dataclass
class NodeServicer(csi_pb2_grpc.NodeServicer):
    volumes: NodeVolumes
    node_id: str
    bind_mount: Callable[[str, str, bool], None]
    unmount: Callable[[str], None]

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return csi_pb2.NodeGetInfoResponse(node_id=self.node_id)

    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        rpc = csi_pb2.NodeServiceCapability.RPC
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[csi_pb2.NodeServiceCapability(rpc=rpc(type=rpc.STAGE_UNSTAGE_VOLUME))]
        )

    def NodeStageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if not VOLUME_ID.match(request.volume_id) or not request.staging_target_path:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "a Cinder volume_id and staging_target_path are required")  # fmt: skip
        problem = capability_problem([request.volume_capability])
        if problem:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, problem)
        raw = request.publish_context.get(PUBLISH_RBD)
        if not raw:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "no RBD connection in the publish context (from ControllerPublish)")  # fmt: skip
        fs_type = request.volume_capability.mount.fs_type or DEFAULT_FS_TYPE
        read_only = (
            request.volume_capability.access_mode.mode
            == csi_pb2.VolumeCapability.AccessMode.SINGLE_NODE_READER_ONLY
        )
        try:
            target = rbd.from_json(raw)
            done = self.volumes.stage(
                request.volume_id, target, request.staging_target_path, fs_type, read_only
            )
        except StackubeError as exc:
            _translate(context, exc)
        log.info("NodeStageVolume %s: %s", request.volume_id, done)
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if not VOLUME_ID.match(request.volume_id) or not request.staging_target_path:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "a Cinder volume_id and staging_target_path are required")  # fmt: skip
        try:
            done = self.volumes.unstage(request.volume_id, request.staging_target_path)
        except StackubeError as exc:
            _translate(context, exc)
        log.info("NodeUnstageVolume %s: %s", request.volume_id, done)
        return csi_pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        if not request.target_path or not request.staging_target_path:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                   "target_path and staging_target_path are required")  # fmt: skip
        namespace = request.volume_context.get(POD_NAMESPACE, "")
        if not namespace:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION,
                   f"no {POD_NAMESPACE}: the CSIDriver must set podInfoOnMount: true")  # fmt: skip
        try:
            check_pod(
                self.volumes.namespaces,
                namespace,
                request.volume_context.get(POD_NAME, ""),
                pod_uid_of(request.target_path),
            )
            check_owner(
                request.volume_id,
                self.volumes.cinder.get_volume(request.volume_id),
                namespace,
                self.volumes.namespaces.project_of(namespace),
            )
            self.bind_mount(request.staging_target_path, request.target_path, request.readonly)
        except StackubeError as exc:
            _translate(context, exc)
        log.info("NodePublishVolume %s for pod %s/%s at %s", request.volume_id, namespace,
                 request.volume_context.get(POD_NAME, "?"), request.target_path)  # fmt: skip
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            self.unmount(request.target_path)
        except StackubeError as exc:
            _translate(context, exc)
        with contextlib.suppress(FileNotFoundError, OSError):
            Path(request.target_path).rmdir()
        return csi_pb2.NodeUnpublishVolumeResponse()
