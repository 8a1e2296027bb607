"""Writing files atomically with the right mode from the start (secrets never sit
world-readable, and a crash never leaves half a config)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> bool:
    """Write `data` to `path` via a temporary file and rename. Returns False (and leaves
    the file alone) when it already holds exactly this content."""
    payload = data.encode() if isinstance(data, str) else data
    if path.exists() and path.read_bytes() == payload:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(payload)
    tmp.chmod(mode)  # the umask may have narrowed it
    tmp.replace(path)
    return True
