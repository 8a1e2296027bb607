"""helm, built from the Go module proxy (pinned, cached): Debian 12 has no Helm. Used to
lint, render and install Stackube's chart (deploy/helm/stackube)."""

from __future__ import annotations

from pathlib import Path

from stackube.devbox import gobuild
from stackube.devbox.settings import DevboxSettings

MODULE = "helm.sh/helm/v4"
VERSION = "v4.3.2"
PROGRAM = gobuild.GoProgram("helm", f"{MODULE}/cmd/helm")


def bin_dir(settings: DevboxSettings) -> Path:
    return settings.cache_dir / "helm" / VERSION / "bin"


def ensure(settings: DevboxSettings) -> Path:
    """The helm binary (built once: a few minutes on two cores, then cached)."""
    directory = bin_dir(settings)
    if gobuild.missing_programs(directory, [PROGRAM.name]):
        builder = gobuild.GoBuilder(settings.cache_dir / "go-build-modules")
        go_mod = builder.module_go_mod(MODULE, VERSION)
        plan = gobuild.command_plan(MODULE, VERSION, go_mod, [PROGRAM])
        builder.build(f"helm-{VERSION}", plan, directory)
    return directory / PROGRAM.name
