"""Mounting a tenant's Cinder volume into a pod on this node, and undoing it.

mount: check the volume is the pod's tenant's (against Cinder, by the namespace's
Keystone project) -> Cinder attachment for this pod on this node (completed: in-use)
-> the RBD image as a file (rbd-fuse) -> a loop device -> a filesystem on first use ->
mounted on kubelet's directory. unmount (or a later call finding the pod gone): the
reverse, attachment deleted last. Every step is recorded before it is taken and checked
before it is taken again, so a call killed anywhere is finished or undone by the next.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stackube import faults
from stackube.errors import StackubeError
from stackube.openstack.volume import Attachment, Volume
from stackube.volume import rbd
from stackube.volume.flexvolume import FlexVolumeError, MountRequest
from stackube.volume.records import BusyError, Record, RecordStore

log = logging.getLogger(__name__)

# Statuses in which a volume may get a new attachment (Cinder: attachment_create).
ATTACHABLE = ("available", "in-use", "reserved")


class VolumeRefusedError(FlexVolumeError):
    """The pod may not use this volume (the message says why, and leaks nothing about
    volumes of other projects)."""


class Cinder(Protocol):
    def get_volume(self, volume_id: str) -> Volume | None: ...
    def attachments_of(self, volume_id: str) -> list[Attachment]: ...
    def create_attachment(
        self, volume_id: str, instance: str, connector: Mapping[str, Any], mode: str
    ) -> Attachment: ...
    def complete_attachment(self, attachment_id: str) -> None: ...
    def delete_attachment(self, attachment_id: str) -> None: ...


class Namespaces(Protocol):
    def project_of(self, namespace: str) -> str | None:
        """The Keystone project ID of a Tenant's namespace; None for other namespaces and
        for one being deleted."""
        ...

    def pod_uid(self, namespace: str, name: str) -> str | None:
        """The UID of this pod; None if there is none."""
        ...


def check_pod(namespaces: Namespaces, namespace: str, name: str, uid: str) -> None:
    """The pod kubelet names is the pod whose directory the volume goes into: a pod's own
    volume options can name any namespace and pod (they come after kubelet's)."""
    if namespaces.pod_uid(namespace, name) != uid:
        raise VolumeRefusedError(
            f"pod {namespace}/{name} is not the pod {uid} this volume is for: a pod's volume"
            " options may not name another namespace or pod"
        )


class Storage(Protocol):
    def mounted_source(self, path: str) -> str | None: ...
    def rbd_fuse_mount(
        self, directory: Path, conf: Path, client: str, pool: str, image: str
    ) -> None: ...
    def unmount(self, path: str) -> None: ...
    def loop_device_of(self, backing: Path) -> str | None: ...
    def loop_attach(self, backing: Path) -> str: ...
    def loop_detach(self, device: str) -> None: ...
    def filesystem_type(self, device: str) -> str | None: ...
    def make_filesystem(self, device: str, fs_type: str) -> None: ...
    def mount(self, device: str, target: Path, fs_type: str, read_only: bool) -> None: ...


def check_owner(
    volume_id: str, volume: Volume | None, namespace: str, project_id: str | None
) -> Volume:
    """The volume, if pods of `namespace` (of Keystone project `project_id`) may use it.

    A volume of another project and a volume that does not exist get the same answer,
    so a tenant cannot probe for other tenants' volume IDs (pure)."""
    if project_id is None:
        raise VolumeRefusedError(
            f"namespace {namespace} is not a Tenant's: Cinder volumes are mounted only in"
            " Tenant namespaces (a volume belongs to the Tenant's Keystone project)"
        )
    if volume is None or volume.project_id != project_id:
        raise VolumeRefusedError(
            f"Cinder volume {volume_id} is not a volume of this tenant's project"
            f" ({project_id}, namespace {namespace}): pods may only mount their own"
            " tenant's volumes"
        )
    return volume


def attach(
    cinder: Cinder, volume_id: str, instance: str, node_name: str, read_only: bool
) -> Attachment:
    """The Cinder attachment of `volume_id` for the consumer `instance` (a UUID: a pod's,
    or a node's for CSI) on `node_name`: the existing one, else a new one. Not completed.
    Raises FlexVolumeError when the volume is attached to another consumer."""
    mine = [a for a in cinder.attachments_of(volume_id) if a.instance == instance]
    if mine and mine[0].connection_info:
        return mine[0]
    for stale in mine:
        cinder.delete_attachment(stale.id)
    others = cinder.attachments_of(volume_id)
    volume = cinder.get_volume(volume_id)
    if others and volume is not None and not volume.multiattach:
        where = ", ".join(f"instance {a.instance}" for a in others)
        raise FlexVolumeError(f"it is attached elsewhere ({where}); it can be used once detached")
    return cinder.create_attachment(
        volume_id, instance, connector(node_name), "ro" if read_only else "rw"
    )


def detach(cinder: Cinder, volume_id: str, instance: str) -> int:
    """Delete the attachments of `volume_id` for `instance`; returns how many."""
    mine = [a for a in cinder.attachments_of(volume_id) if a.instance == instance]
    for attachment in mine:
        cinder.delete_attachment(attachment.id)
    return len(mine)


def connector(node_name: str) -> dict[str, Any]:
    """The connector Cinder records for this node (os-brick's shape; RBD ignores most)."""
    return {
        "host": node_name,
        "platform": os.uname().machine,
        "os_type": "linux",
        "multipath": False,
        "do_local_attach": False,
    }


@dataclass(frozen=True)
class NodePaths:
    state_dir: Path

    def fuse_dir(self, volume_id: str) -> Path:
        return self.state_dir / "rbd" / volume_id

    def client_dir(self, volume_id: str) -> Path:
        return self.state_dir / "ceph" / volume_id


class NodeVolumes:
    def __init__(
        self,
        *,
        cinder: Cinder,
        namespaces: Namespaces,
        storage: Storage,
        store: RecordStore,
        node_name: str,
        keyring: str,
    ) -> None:
        """`keyring`: the text of the Ceph keyring the node reads RBD images with."""
        self.cinder = cinder
        self.namespaces = namespaces
        self.storage = storage
        self.store = store
        self.node_name = node_name
        self.keyring = keyring
        self.paths = NodePaths(store.state_dir)

    # ---- mount ------------------------------------------------------------------------
    def mount(self, req: MountRequest) -> str:
        """Mount the volume on req.mount_dir; returns what was done. Raises
        VolumeRefusedError (not the tenant's volume), FlexVolumeError (cannot be done
        now: the message says why) after undoing this call's steps."""
        self.collect_garbage()
        with self.store.lock(req.volume_id):
            check_pod(self.namespaces, req.pod_namespace, req.pod_name, req.pod_uid)
            volume = check_owner(
                req.volume_id,
                self.cinder.get_volume(req.volume_id),
                req.pod_namespace,
                self.namespaces.project_of(req.pod_namespace),
            )
            record = self.store.load(req.volume_id)
            if record is not None and record.mount_dir != req.mount_dir:
                if self.storage.mounted_source(record.mount_dir) is not None:
                    raise FlexVolumeError(
                        f"volume {req.volume_id} is mounted for pod {record.pod} on this node:"
                        " a Cinder volume is used by one pod at a time"
                    )
                log.info("volume %s: undoing a stale mount for pod %s", volume.id, record.pod)
                self._teardown(record)
                record = None
            if record is not None and self.storage.mounted_source(req.mount_dir) is not None:
                return "already mounted"
            if record is None:
                if volume.status not in ATTACHABLE:
                    raise FlexVolumeError(
                        f"Cinder volume {volume.id} is {volume.status}: it can be attached when"
                        " available"
                    )
                record = Record(
                    volume_id=volume.id,
                    mount_dir=req.mount_dir,
                    pod_uid=req.pod_uid,
                    pod=f"{req.pod_namespace}/{req.pod_name}",
                )
                self.store.save(record)
            try:
                self._attach_and_mount(record, req)
            except StackubeError as exc:
                log.warning(
                    "volume %s: mount for %s failed, undoing: %s", volume.id, record.pod, exc
                )
                self._teardown(record)
                raise
            return "mounted"

    def _attachment(self, record: Record, read_only: bool) -> Attachment:
        return attach(self.cinder, record.volume_id, record.pod_uid, self.node_name, read_only)

    def _attach_and_mount(self, record: Record, req: MountRequest) -> None:
        attachment = self._attachment(record, req.read_only)
        record.attachment_id = attachment.id
        self.store.save(record)
        faults.checkpoint("volume-attachment-created")
        if attachment.status != "attached":
            self.cinder.complete_attachment(attachment.id)
        target = rbd.rbd_target(attachment.connection_info)
        self._expose_and_mount(record, target, req.fs_type, req.read_only)

    def _expose_and_mount(
        self, record: Record, target: rbd.RbdTarget, fs_type: str, read_only: bool
    ) -> None:
        """The image as a file, a loop device on it, a filesystem on first use, mounted
        on record.mount_dir."""
        record.image = target.name
        self.store.save(record)
        backing = self._expose_image(record.volume_id, target)
        faults.checkpoint("volume-image-exposed")
        device = self.storage.loop_device_of(backing) or self.storage.loop_attach(backing)
        record.loop_device = device
        self.store.save(record)
        faults.checkpoint("volume-loop-attached")
        found = self.storage.filesystem_type(device)
        if found is None:
            if read_only:
                raise FlexVolumeError("it has no filesystem yet and is mounted read-only")
            log.info("volume %s: making an %s filesystem (first use)", record.volume_id, fs_type)
            self.storage.make_filesystem(device, fs_type)
        elif found != fs_type:
            log.info("volume %s holds %s (asked: %s): mounting it as it is", record.volume_id,
                     found, fs_type)  # fmt: skip
        self.storage.mount(device, Path(record.mount_dir), found or fs_type, read_only)
        log.info("volume %s mounted for %s at %s (%s)", record.volume_id, record.pod,
                 record.mount_dir, device)  # fmt: skip

    # ---- staging (CSI: the attachment is the controller's) ------------------------------
    def stage(
        self, volume_id: str, target: rbd.RbdTarget, staging_dir: str, fs_type: str, read_only: bool
    ) -> str:
        """Mount an attached volume (CSI NodeStageVolume) on `staging_dir`; idempotent.
        Raises the step's error after undoing this call's steps."""
        self.collect_garbage()
        with self.store.lock(volume_id):
            record = self.store.load(volume_id)
            if record is not None and record.mount_dir != staging_dir:
                if self.storage.mounted_source(record.mount_dir) is not None:
                    raise FlexVolumeError(
                        f"volume {volume_id} is mounted at {record.mount_dir} on this node"
                    )
                self._teardown(record)
                record = None
            if record is not None and self.storage.mounted_source(staging_dir) is not None:
                return "already staged"
            if record is None:
                record = Record(volume_id=volume_id, mount_dir=staging_dir, pod_uid="", pod="CSI")
                self.store.save(record)
            try:
                self._expose_and_mount(record, target, fs_type, read_only)
            except StackubeError as exc:
                log.warning("volume %s: staging failed, undoing: %s", volume_id, exc)
                self._teardown(record)
                raise
            return "staged"

    def unstage(self, volume_id: str, staging_dir: str) -> str:
        """Undo stage (CSI NodeUnstageVolume); idempotent."""
        with self.store.lock(volume_id):
            record = self.store.load(volume_id)
            if record is None or record.mount_dir != staging_dir:
                self.storage.unmount(staging_dir)
                return "not staged"
            self._teardown(record)
            return "unstaged"

    def _expose_image(self, volume_id: str, target: rbd.RbdTarget) -> Path:
        fuse_dir = self.paths.fuse_dir(volume_id)
        backing = fuse_dir / target.image
        if self.storage.mounted_source(str(fuse_dir)) is None:
            client = self.paths.client_dir(volume_id)
            client.mkdir(parents=True, exist_ok=True, mode=0o700)
            keyring = client / "keyring"
            _write_private(keyring, self.keyring)
            _write_private(client / "ceph.conf", rbd.client_conf(target, str(keyring)))
            self.storage.rbd_fuse_mount(
                fuse_dir, client / "ceph.conf", target.user, target.pool, target.image
            )
        return backing

    # ---- unmount and garbage ----------------------------------------------------------
    def unmount(self, mount_dir: str) -> str:
        self.collect_garbage()
        record = self.store.by_mount_dir(mount_dir)
        if record is None:
            self.storage.unmount(mount_dir)
            return "nothing of ours was mounted there"
        with self.store.lock(record.volume_id):
            current = self.store.load(record.volume_id)
            if current is None or current.mount_dir != record.mount_dir:
                self.storage.unmount(mount_dir)
                return "already undone"
            self._teardown(current)
        return "unmounted and detached"

    def collect_garbage(self) -> list[str]:
        """Undo records whose pod directory kubelet has removed (a mount that failed or
        was killed and never retried); returns their volume IDs. Volumes another call
        is working on are left alone."""
        undone = []
        for record in self.store.all():
            if Path(record.mount_dir).exists() or self.storage.mounted_source(record.mount_dir):
                continue
            try:
                with self.store.lock(record.volume_id, wait=False):
                    current = self.store.load(record.volume_id)
                    if current is None or Path(current.mount_dir).exists():
                        continue
                    log.info("volume %s: pod %s is gone, undoing its mount", current.volume_id,
                             current.pod)  # fmt: skip
                    self._teardown(current)
                    undone.append(current.volume_id)
            except BusyError:
                continue
            except StackubeError as exc:
                log.warning("volume %s: cleanup failed, kept for the next call: %s",
                            record.volume_id, exc)  # fmt: skip
        return undone

    def _teardown(self, record: Record) -> None:
        """Undo every step the record may have taken, in reverse; each is idempotent."""
        source = self.storage.mounted_source(record.mount_dir)
        if source is not None and (record.loop_device is None or source == record.loop_device):
            self.storage.unmount(record.mount_dir)
        fuse_dir = self.paths.fuse_dir(record.volume_id)
        if record.image:
            device = self.storage.loop_device_of(fuse_dir / record.image.partition("/")[2])
            if device is not None:
                self.storage.loop_detach(device)
        self.storage.unmount(str(fuse_dir))
        if record.attachment_id or record.pod_uid:  # a FlexVolume mount's own attachment
            for attachment in self.cinder.attachments_of(record.volume_id):
                if attachment.id == record.attachment_id or attachment.instance == record.pod_uid:
                    self.cinder.delete_attachment(attachment.id)
        shutil.rmtree(self.paths.client_dir(record.volume_id), ignore_errors=True)
        self.store.delete(record.volume_id)
        log.info("volume %s: detached from this node (pod %s)", record.volume_id, record.pod)


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
