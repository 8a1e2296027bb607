"""Block devices on the node without the rbd kernel module: an RBD image exposed as a
file by rbd-fuse (Ceph's FUSE client, one process per image), a loop device on that
file, a filesystem made on first use, mounted where kubelet asks.

Each function runs one util-linux/Ceph command with a timeout and raises
BlockDeviceError (naming the command and its output) on failure; lookups read
/proc/self/mountinfo and `losetup`, so every step can be checked before it is done again.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from stackube.errors import StackubeError

COMMAND_TIMEOUT = 120.0
BLKID_NOTHING_FOUND = 2


class BlockDeviceError(StackubeError):
    """A node storage command failed; the message carries its output."""


def _run(argv: Sequence[str], timeout: float = COMMAND_TIMEOUT) -> str:
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BlockDeviceError(f"{argv[0]} did not finish within {timeout:.0f}s") from exc
    except OSError as exc:
        raise BlockDeviceError(f"cannot run {argv[0]}: {exc.strerror}") from exc
    if proc.returncode != 0:
        output = " ".join((proc.stderr or proc.stdout).split())[-400:]
        raise BlockDeviceError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {output}")
    return proc.stdout


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal (\\040 ...)."""
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts() -> dict[str, tuple[str, str]]:
    """{mount point: (source, filesystem type)} of this mount namespace (later mounts on
    the same point win)."""
    table: dict[str, tuple[str, str]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        before, _, after = line.partition(" - ")
        fields, rest = before.split(), after.split()
        if len(fields) >= 5 and len(rest) >= 2:
            table[_unescape(fields[4])] = (_unescape(rest[1]), rest[0])
    return table


def mounted_source(path: str) -> str | None:
    """What is mounted on `path` (a device or a FUSE source), or None."""
    entry = mounts().get(os.path.normpath(path))
    return entry[0] if entry else None


def rbd_fuse_mount(directory: Path, conf: Path, client: str, pool: str, image: str) -> None:
    """Expose `pool/image` as the file `directory/image` (rbd-fuse forks into the
    background and serves until the directory is unmounted)."""
    directory.mkdir(parents=True, exist_ok=True)
    _run(["rbd-fuse", "-c", str(conf), "--id", client, "-p", pool, "-r", image, str(directory)])


def fuse_server_pids(directory: Path, proc: Path = Path("/proc")) -> list[int]:
    """The rbd-fuse processes serving `directory` (their last argument), from /proc."""
    wanted = str(directory)
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if Path(argv[0].decode(errors="replace")).name == "rbd-fuse" and (
            argv[-1].decode(errors="replace") == wanted
        ):
            found.append(int(entry.name))
    return found


def unmount(path: str) -> None:
    """Unmount `path` if something is mounted there (a FUSE mount's server then exits)."""
    if mounted_source(path) is not None:
        _run(["umount", path])


def loop_device_of(backing: Path) -> str | None:
    """The loop device backed by this file path, if any (matched by name, so that it is
    found even when the file's FUSE mount has gone away)."""
    out = _run(["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"])
    wanted = str(backing)
    for line in out.splitlines():
        name, _, back = line.strip().partition(" ")
        back = back.strip().removesuffix("(deleted)").strip()
        if back == wanted:
            return name
    return None


def loop_attach(backing: Path) -> str:
    """A new loop device on `backing` (buffered I/O: FUSE files take no O_DIRECT)."""
    return _run(["losetup", "--find", "--show", str(backing)]).strip()


def loop_detach(device: str) -> None:
    if Path(device).exists():
        try:
            _run(["losetup", "--detach", device])
        except BlockDeviceError as exc:
            if "No such device" not in str(exc):
                raise


def filesystem_type(device: str) -> str | None:
    """The filesystem on `device` as blkid probes it (low-level, no cache), or None."""
    try:
        proc = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", device],
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise BlockDeviceError(f"blkid {device} did not finish in {COMMAND_TIMEOUT:.0f}s") from exc
    if proc.returncode == BLKID_NOTHING_FOUND:
        return None
    if proc.returncode != 0:
        raise BlockDeviceError(f"blkid {device} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.stdout.strip() or None


def make_filesystem(device: str, fs_type: str) -> None:
    """mkfs.<fs_type> on a device that has none (the caller checked)."""
    _run([f"mkfs.{fs_type}", "-q", device], timeout=600)


def mount(device: str, target: Path, fs_type: str, read_only: bool) -> None:
    target.mkdir(parents=True, exist_ok=True)
    options = "ro" if read_only else "rw"
    _run(["mount", "-t", fs_type, "-o", options, device, str(target)])


def mount_options(path: str) -> set[str]:
    """The per-mount options (ro/rw, ...) of what is mounted on `path`; empty if none."""
    wanted = os.path.normpath(path)
    options: set[str] = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.partition(" - ")[0].split()
        if len(fields) >= 6 and _unescape(fields[4]) == wanted:
            options = set(fields[5].split(","))  # the last mount on the point wins
    return options


def bind_mount(source: str, target: str, read_only: bool) -> None:
    """Bind `source` on `target` (made if missing), read-only if asked; idempotent, and a
    bind left read-write by an interrupted call is made read-only when asked."""
    if mounted_source(target) is None:
        Path(target).mkdir(parents=True, exist_ok=True)
        _run(["mount", "--bind", source, target])
    if read_only and "ro" not in mount_options(target):
        _run(["mount", "-o", "remount,bind,ro", target])
        if "ro" not in mount_options(target):
            raise BlockDeviceError(f"{target} is still writable after a read-only remount")
