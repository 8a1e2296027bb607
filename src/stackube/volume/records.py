"""What the node has done for each volume, on disk, so that any later call (after a
crash, a kubelet restart or a reboot) can finish or undo it; and one lock per volume.

`<state>/records/<volume id>.json` is written before each external step (Cinder
attachment, rbd-fuse, loop device) and removed when everything is undone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from stackube.errors import StackubeError
from stackube.volume.flexvolume import VOLUME_ID


class BusyError(StackubeError):
    """Another call holds this volume's lock."""


@dataclass
class Record:
    volume_id: str
    mount_dir: str
    pod_uid: str
    pod: str  # namespace/name, for messages
    attachment_id: str | None = None
    image: str | None = None  # pool/image
    loop_device: str | None = None


class RecordStore:
    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.records = state_dir / "records"
        self.locks = state_dir / "locks"

    def path(self, volume_id: str) -> Path:
        if not VOLUME_ID.match(volume_id):
            raise ValueError(f"not a Cinder volume ID: {volume_id!r}")
        return self.records / f"{volume_id}.json"

    def load(self, volume_id: str) -> Record | None:
        try:
            data = json.loads(self.path(volume_id).read_text())
        except FileNotFoundError:
            return None
        return Record(**data)

    def save(self, record: Record) -> None:
        self.records.mkdir(parents=True, exist_ok=True, mode=0o700)
        target = self.path(record.volume_id)
        temporary = target.with_suffix(".tmp")
        temporary.write_text(json.dumps(dataclasses.asdict(record)))
        with temporary.open("rb") as f:
            os.fsync(f.fileno())
        temporary.replace(target)

    def delete(self, volume_id: str) -> None:
        self.path(volume_id).unlink(missing_ok=True)

    def all(self) -> list[Record]:
        if not self.records.is_dir():
            return []
        found = []
        for path in sorted(self.records.glob("*.json")):
            with contextlib.suppress(FileNotFoundError):
                found.append(Record(**json.loads(path.read_text())))
        return found

    def by_mount_dir(self, mount_dir: str) -> Record | None:
        wanted = os.path.normpath(mount_dir)
        return next((r for r in self.all() if os.path.normpath(r.mount_dir) == wanted), None)

    @contextlib.contextmanager
    def lock(self, volume_id: str, wait: bool = True) -> Iterator[None]:
        """Hold the volume's lock (an flock, released if the process dies). With
        wait=False, raises BusyError instead of waiting."""
        self.path(volume_id)  # validates the ID
        self.locks.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.locks / f"{volume_id}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError as exc:
                raise BusyError(f"volume {volume_id} is being worked on") from exc
            yield
        finally:
            os.close(fd)
