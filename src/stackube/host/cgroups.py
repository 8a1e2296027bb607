"""A process moved out of its container's cgroups into the node's root cgroups, so that
the container's end does not end it.

A container runtime stops a container by killing every process in its cgroup (runc
`kill --all`, what containerd does for a container in the host's PID namespace); a FUSE
server a CSI node plugin started (rbd-fuse) must outlive a restart of the plugin's pod,
or every mount it serves on the node breaks ("Transport endpoint is not connected").
kubelet's own answer for FUSE mounts is a systemd scope (k8s.io/mount-utils,
`systemd-run --scope`); nodes without systemd (this one) get the same by writing the
PID into the root cgroup of each hierarchy, as a process the node started would be.

`root` is the node's cgroup file system as the pod mounts it (hostPath /sys/fs/cgroup):
cgroup v2 (one `cgroup.procs` at its top) or v1 (a directory per hierarchy).
"""

from __future__ import annotations

from pathlib import Path


def hierarchies(root: Path) -> list[Path]:
    """The root cgroup of each hierarchy under `root` (v2: `root` itself; v1: each
    mounted controller directory, not the symlinks that alias them)."""
    if (root / "cgroup.procs").exists():
        return [root]
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    return [d for d in entries if not d.is_symlink() and (d / "cgroup.procs").exists()]


def move_to_root(pid: int, root: Path) -> list[str]:
    """Write `pid` into each hierarchy's root `cgroup.procs`. Returns one message per
    hierarchy it could not enter (empty: moved everywhere); raises nothing, so that a
    node where this is refused (a private cgroup namespace on cgroup v2) still mounts."""
    found = hierarchies(root)
    if not found:
        return [f"{root}: no cgroup hierarchy found"]
    problems = []
    for hierarchy in found:
        try:
            (hierarchy / "cgroup.procs").write_text(f"{pid}\n")
        except OSError as exc:
            problems.append(f"{hierarchy}: {exc.strerror or exc}")
    return problems
