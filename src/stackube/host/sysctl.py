"""Reading and writing sysctls through /proc/sys."""

from __future__ import annotations

from pathlib import Path

PROC_SYS = Path("/proc/sys")


def _path(key: str) -> Path:
    return PROC_SYS / key.replace(".", "/")


def read(key: str) -> str | None:
    """The value, or None if this kernel (or its loaded modules) has no such key."""
    try:
        return _path(key).read_text().strip()
    except FileNotFoundError:
        return None


def write(key: str, value: str) -> None:
    _path(key).write_text(value + "\n")
