"""Cinder (block-storage v3) operations for the volume drivers: volumes and the
attachments API that attaches a volume to a consumer that is not a Nova server
(https://docs.openstack.org/api-ref/block-storage/v3/#attachments, microversions 3.27
to 3.44; `os-complete` marks the volume in-use).

Lookups return small typed values; errors come out as Stackube's (openstack.errors).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from openstack import exceptions as sdk
from openstack.connection import Connection

from stackube.errors import TemporaryError
from stackube.openstack.errors import translating

# The attachments API with os-complete (3.44) and attach modes (3.54).
ATTACHMENTS_MICROVERSION = "3.54"
# Statuses in which Cinder deletes a volume (not attached, not busy).
DELETABLE = frozenset(
    {"available", "error", "error_restoring", "error_extending", "error_managing"}
)


@dataclass(frozen=True)
class Volume:
    id: str
    name: str
    project_id: str
    status: str  # available, in-use, reserved, attaching, detaching, error, ...
    size_gib: int
    multiattach: bool


@dataclass(frozen=True)
class Attachment:
    id: str
    volume_id: str
    instance: str | None  # the consumer's UUID (a pod or a node here)
    status: str
    connection_info: Mapping[str, Any]


def _volume(raw: Any) -> Volume:
    return Volume(
        id=str(raw.id),
        name=str(raw.name or ""),
        project_id=str(raw.project_id or ""),
        status=str(raw.status or ""),
        size_gib=int(raw.size or 0),
        multiattach=bool(raw.is_multiattach),
    )


def _attachment(raw: Any) -> Attachment:
    return Attachment(
        id=str(raw.id),
        volume_id=str(raw.volume_id),
        instance=str(raw.instance) if raw.instance else None,
        status=str(raw.status or ""),
        connection_info=dict(raw.connection_info or {}),
    )


def _block_storage(conn: Connection) -> Any:
    proxy = conn.block_storage
    proxy.default_microversion = ATTACHMENTS_MICROVERSION
    return proxy


@translating("Cinder volume lookup")
def get_volume(conn: Connection, volume_id: str) -> Volume | None:
    """The volume of this ID (never a name), whatever its project (the caller must be a
    Cinder admin to see other projects' volumes); None if there is none."""
    try:
        raw = _block_storage(conn).get_volume(volume_id)
    except sdk.NotFoundException:
        return None
    return _volume(raw)


@translating("Cinder attachment lookup")
def attachments_of(conn: Connection, volume_id: str) -> list[Attachment]:
    """Every attachment of this volume, whatever its project."""
    block = _block_storage(conn)
    return [_attachment(a) for a in block.attachments(volume_id=volume_id, all_projects=True)]


@translating("Cinder attachment create")
def create_attachment(
    conn: Connection, volume_id: str, instance: str, connector: Mapping[str, Any], mode: str
) -> Attachment:
    """Reserve and initialise an attachment of `volume_id` for the consumer `instance` (a
    UUID) on the node `connector` describes; `mode` is "rw" or "ro". The returned
    connection_info says how to reach the volume (for RBD: pool/image, monitors, user)."""
    raw = _block_storage(conn).create_attachment(
        volume_id, instance=instance, connector=dict(connector), attach_mode=mode
    )
    return _attachment(raw)


@translating("Cinder attachment complete")
def complete_attachment(conn: Connection, attachment_id: str) -> None:
    """Mark the attachment attached: the volume becomes in-use."""
    _block_storage(conn).complete_attachment(attachment_id)


@translating("Cinder attachment delete")
def delete_attachment(conn: Connection, attachment_id: str) -> None:
    """Detach: the volume becomes available once no attachment is left. Idempotent."""
    _block_storage(conn).delete_attachment(attachment_id, ignore_missing=True)


@translating("Cinder volume list")
def project_volumes(conn: Connection, project_id: str) -> list[Volume] | None:
    """Every volume of this project; None when the cloud has no block-storage service."""
    if not conn.has_service("block-storage"):
        return None
    block = _block_storage(conn)
    return [_volume(v) for v in block.volumes(all_projects=True, project_id=project_id)]


@translating("Cinder volume delete")
def delete_volume(conn: Connection, volume_id: str) -> None:
    """Ask Cinder to delete the volume and its snapshots (cascade); idempotent. Cinder's
    400 ("Invalid volume: Volume status must be available or error...", the volume
    being attached or detached since it was read) is a TemporaryError: it passes."""
    try:
        _block_storage(conn).delete_volume(volume_id, ignore_missing=True, cascade=True)
    except sdk.BadRequestException as exc:
        if "status" not in str(exc).lower():
            raise
        raise TemporaryError(f"Cinder volume delete: {exc}", retry_after=2) from exc


@translating("Cinder volume lookup")
def find_own_volume(conn: Connection, name: str) -> Volume | None:
    """The volume of this name in the connection's own project (CSI names are unique)."""
    found = list(_block_storage(conn).volumes(name=name))
    return _volume(found[0]) if found else None


@translating("Cinder volume create")
def create_volume(
    conn: Connection, name: str, size_gib: int, description: str, metadata: Mapping[str, str]
) -> Volume:
    """A new volume in the connection's project (its quotas apply); status "creating"."""
    raw = _block_storage(conn).create_volume(
        name=name, size=size_gib, description=description, metadata=dict(metadata)
    )
    return _volume(raw)
