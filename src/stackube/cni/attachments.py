"""The node's record of what each sandbox was given (one small JSON file per
attachment, written atomically and fsynced before the step it describes), so that a
daemon killed in the middle of an ADD finds, on the next ADD, DEL or restart, exactly
which port and links belong to which pod."""

from __future__ import annotations

import enum
import json
import os
import re
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from stackube.cni.hostports import PortMapping


class Phase(enum.StrEnum):
    NEW = "new"  # pod known, no port yet (a port made now carries the pod's device id)
    CLAIMED = "claimed"  # port chosen (from the pool or made for the pod), not yet in the pod
    PLUGGED = "plugged"  # the pod's interface is configured; Neutron may still say "pool"
    RECORDED = "recorded"  # Neutron names the port after the pod too


@dataclass(frozen=True)
class Attachment:
    container_id: str
    ifname: str
    netns: str
    namespace: str
    pod: str
    pod_uid: str
    network_id: str = ""
    port_id: str = ""
    phase: Phase = Phase.NEW
    mac: str = ""  # the port's, once the pod has it (a repair re-creates the port with it)
    ip: str = ""  # the port's IPv4 address on the network's subnet, likewise
    # hostPorts the runtime asked for (system network only), relayed while it lives.
    port_mappings: tuple[PortMapping, ...] = ()

    @property
    def key(self) -> str:
        return attachment_key(self.container_id, self.ifname)

    @property
    def device_id(self) -> str:
        """What Neutron's device_id says once the port is the pod's."""
        return self.pod_uid or self.container_id

    def advanced(self, phase: Phase, **changes: Any) -> Attachment:
        return replace(self, phase=phase, **changes)


_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def attachment_key(container_id: str, ifname: str) -> str:
    return _SAFE.sub("_", f"{container_id}-{ifname}")


def _decode(doc: dict[str, Any]) -> Attachment:
    mappings = tuple(PortMapping(**m) for m in doc.get("port_mappings") or ())
    return Attachment(
        **{**doc, "phase": Phase(doc.get("phase", Phase.NEW)), "port_mappings": mappings}
    )


class AttachmentStore:
    """A directory of attachments; every write is atomic (rename) and durable (fsync).
    Reads come from memory after the first (the daemon that holds the directory's lock
    is its only writer), so the ADD path and the per-probe lookups never scan it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cache: dict[str, Attachment] | None = None
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def _loaded(self) -> dict[str, Attachment]:
        """The cache, read from disk the first time (call with the lock held)."""
        if self._cache is None:
            found = {}
            for path in sorted(self.directory.glob("*.json")):
                try:
                    attachment = _decode(json.loads(path.read_text()))
                except (ValueError, TypeError, KeyError):
                    # A record we cannot read is kept for a person to look at, not guessed at.
                    path.rename(path.with_suffix(".unreadable"))
                    continue
                found[attachment.key] = attachment
            self._cache = found
        return self._cache

    def get(self, container_id: str, ifname: str) -> Attachment | None:
        with self._lock:
            return self._loaded().get(attachment_key(container_id, ifname))

    def put(self, attachment: Attachment) -> None:
        path = self._path(attachment.key)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(attachment), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        with self._lock:
            self._loaded()[attachment.key] = attachment

    def remove(self, attachment: Attachment) -> None:
        self._path(attachment.key).unlink(missing_ok=True)
        with self._lock:
            self._loaded().pop(attachment.key, None)

    def all(self) -> list[Attachment]:
        with self._lock:
            return [a for _, a in sorted(self._loaded().items())]
