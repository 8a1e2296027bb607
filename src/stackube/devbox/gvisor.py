"""gVisor on the devbox's node: `runsc` and its containerd shim built from the Go module
proxy (pinned, cached), the shim's configuration, and containerd's `runsc` runtime.

The RuntimeClass that names the runtime (`gvisor`, handler `runsc`) is in
api/manifests/runtime-classes.yaml; docs/runtimes.md says what the sandbox isolates.
Rendering is pure; `build` runs the go tool.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

from stackube.devbox import gobuild
from stackube.devbox.settings import DevboxSettings

MODULE = "gvisor.dev/gvisor"
RUNSC = "runsc"
SHIM = "containerd-shim-runsc-v1"
PROGRAMS = (
    gobuild.GoProgram(RUNSC, f"{MODULE}/runsc"),
    gobuild.GoProgram(SHIM, f"{MODULE}/shim"),
)
# containerd's CRI runtime name: a RuntimeClass's `handler`.
HANDLER = "runsc"
CAP_SYS_RESOURCE = 24  # linux/capability.h
SHIM_MANAGER = "pkg/shim/v1/manager.go"
UPSTREAM_OOM_SCORE = "oomScoreMax = -999"
DEVBOX_OOM_SCORE = "oomScoreMax = 0"


def missing(settings: DevboxSettings) -> list[str]:
    return gobuild.missing_programs(settings.gvisor_bin_dir, [p.name for p in PROGRAMS])


def has_capability(proc_status: str, capability: int) -> bool:
    """Whether the bounding set in /proc/<pid>/status text (CapBnd, hex) holds
    `capability` (its number, linux/capability.h)."""
    for line in proc_status.splitlines():
        if line.startswith("CapBnd:"):
            return bool(int(line.split()[1], 16) >> capability & 1)
    return False


def shim_oom_overlay(manager_go: str) -> str:
    """gVisor's shim manager with the shim's OOM score adjustment at 0 instead of -999.

    The shim lowers its own oom_score_adj to -999 and fails the pod when it cannot;
    lowering needs CAP_SYS_RESOURCE, which some nodes (this VM) do not have. containerd's
    runc shim sets its score to containerd's + 1 instead (containerd PR #3380), so a
    shim that keeps 0 is what runc pods get here. Raises BuildError if upstream's line
    is not there exactly once (a new version: look again, never guess).
    """
    if manager_go.count(UPSTREAM_OOM_SCORE) != 1:
        raise gobuild.BuildError(
            f"{SHIM_MANAGER}: expected one {UPSTREAM_OOM_SCORE!r}: gVisor changed how its shim "
            "sets its OOM score; docs/decisions/0015-gvisor.md says why the devbox adjusts it"
        )
    return manager_go.replace(UPSTREAM_OOM_SCORE, DEVBOX_OOM_SCORE)


def build(settings: DevboxSettings, builder: gobuild.GoBuilder, can_lower_oom_score: bool) -> None:
    """runsc and the shim from gvisor.dev/gvisor@<pinned version> (its go.mod's replaces
    repeated; CGO off). Without CAP_SYS_RESOURCE the module is built from a copy of its
    source with `shim_oom_overlay` applied (a local `replace`: the go command allows no
    overlay inside its module cache), nothing else changed."""
    version = settings.gvisor_version
    key = f"gvisor-{version}"
    go_mod = builder.module_go_mod(MODULE, version)
    plan = gobuild.command_plan(MODULE, version, go_mod, PROGRAMS)
    if not can_lower_oom_score:
        source = builder.work_root / key / "gvisor-src"
        if source.exists():
            shutil.rmtree(source)
        shutil.copytree(builder.module_dir(MODULE, version), source)
        for path in source.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)
        manager = source / SHIM_MANAGER
        manager.write_text(shim_oom_overlay(manager.read_text()))
        plan = dataclasses.replace(plan, go_mod=f"{plan.go_mod}replace {MODULE} => ./gvisor-src\n")
    builder.build(key, plan, settings.gvisor_bin_dir)


def shim_config(settings: DevboxSettings, state_root: Path) -> str:
    """The shim's TOML (gVisor's runsc.toml: `binary_name`, `root`, `log_path`, and
    `[runsc_config]` passed to runsc as flags). Logs go under the devbox's log directory,
    one directory per sandbox (%ID%), warnings and errors only unless debugging."""
    logs = settings.log_dir / "runsc"
    return (
        f'binary_name = "{settings.gvisor_bin_dir / RUNSC}"\n'
        f'root = "{state_root}"\n'
        f'log_path = "{logs}/%ID%/shim.log"\n'
        'log_level = "info"\n\n'
        "[runsc_config]\n"
        f'  platform = "{settings.gvisor_platform}"\n'
        f'  debug-log = "{logs}/%ID%/runsc.%COMMAND%.log"\n'
    )


def containerd_runtime(shim_config_path: Path) -> str:
    """containerd 1.6's CRI runtime table for runsc (gVisor's containerd quick start)."""
    runtimes = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes'
    return (
        f"    [{runtimes}.{HANDLER}]\n"
        '      runtime_type = "io.containerd.runsc.v1"\n\n'
        f"      [{runtimes}.{HANDLER}.options]\n"
        '        TypeUrl = "io.containerd.runsc.v1.options"\n'
        f'        ConfigPath = "{shim_config_path}"\n'
    )


def shim_wrapper(settings: DevboxSettings, python: str) -> str:
    """The `containerd-shim-runsc-v1` containerd finds on its PATH: gVisor's shim behind
    stackube.runtime.shim, which gives containerd 1.6 the address it reads."""
    real = settings.gvisor_bin_dir / SHIM
    return f'#!/bin/sh\nexec {python} -m stackube.runtime.shim {real} "$@"\n'
