"""Build pinned upstream Go programs (Kubernetes, etcd, CoreDNS) from the Go module proxy.

`go install k8s.io/kubernetes/cmd/...@vX` cannot work: that module requires its
staging modules (k8s.io/api, client-go, ...) at v0.0.0. So we write a throwaway
module that requires k8s.io/kubernetes and replaces every staging module with its
published v0.<minor>.<patch>, then `go build` each command into a cache keyed by
version. The planning functions are pure; `build` runs the go tool.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KUBERNETES_MODULE = "k8s.io/kubernetes"
ETCD_SERVER_MODULE = "go.etcd.io/etcd/server/v3"
COREDNS_MODULE = "github.com/coredns/coredns"
CONTROL_PLANE_COMMANDS: tuple[str, ...] = (
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
)
# What the devbox builds: the control plane and the node agent (a real node needs it).
KUBERNETES_COMMANDS: tuple[str, ...] = (*CONTROL_PLANE_COMMANDS, "kubelet")

_STAGING_REQUIREMENT = re.compile(r"^\s*(k8s\.io/[\w./-]+)\s+v0\.0\.0\s*$", re.MULTILINE)
_KUBE_VERSION = re.compile(r"^v1\.(\d+)\.(\d+)$")


class BuildError(RuntimeError):
    """A Go build step failed; the message carries the tail of the go tool's output."""


@dataclass(frozen=True)
class GoProgram:
    """One binary to build: its output name and its Go package path."""

    name: str
    package: str
    test: bool = False  # a test binary (`go test -c`), like e2e.test


@dataclass(frozen=True)
class BuildPlan:
    """Everything needed to build one set of programs in one throwaway module."""

    go_mod: str
    programs: tuple[GoProgram, ...]
    ldflags: str


def staging_modules(kubernetes_go_mod: str) -> list[str]:
    """The `k8s.io/... v0.0.0` requirements of k8s.io/kubernetes's go.mod."""
    return sorted(set(_STAGING_REQUIREMENT.findall(kubernetes_go_mod)))


def staging_version(kubernetes_version: str) -> str:
    """v1.37.2 -> v0.37.2, the published tag of the staging modules."""
    match = _KUBE_VERSION.match(kubernetes_version)
    if not match:
        raise ValueError(f"not a Kubernetes release version: {kubernetes_version!r}")
    return f"v0.{match.group(1)}.{match.group(2)}"


def _go_directive(go_mod: str) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", go_mod, re.MULTILINE)
    return match.group(1) if match else "1.22"


def kubernetes_plan(
    version: str, kubernetes_go_mod: str, commands: Sequence[str] = KUBERNETES_COMMANDS
) -> BuildPlan:
    minor = staging_version(version).split(".")[1]
    replaces = "".join(
        f"replace {module} => {module} {staging_version(version)}\n"
        for module in staging_modules(kubernetes_go_mod)
    )
    go_mod = (
        "module stackube.local/kubernetes-build\n\n"
        f"go {_go_directive(kubernetes_go_mod)}\n\n"
        f"require {KUBERNETES_MODULE} {version}\n\n{replaces}"
    )
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={version}",
            "-X k8s.io/component-base/version.gitMajor=1",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    programs = tuple(GoProgram(c, f"{KUBERNETES_MODULE}/cmd/{c}") for c in commands)
    return BuildPlan(go_mod, programs, ldflags)


def module_plan(module: str, version: str, module_go_mod: str, program: str) -> BuildPlan:
    """One program that is the main package of `module@version` (etcd, CoreDNS)."""
    go_mod = (
        f"module stackube.local/{program}-build\n\n"
        f"go {_go_directive(module_go_mod)}\n\n"
        f"require {module} {version}\n"
    )
    return BuildPlan(go_mod, (GoProgram(program, module),), "-s -w")


# `old [vX] => new vY`, with or without the `replace` keyword (inside a block).
_REPLACE_LINE = re.compile(
    r"^\s*(?:replace\s+)?([\w./-]+)(?:\s+v\S+)?\s+=>\s+([\w./-]+)\s+(v\S+)\s*$"
)


def module_replaces(module_go_mod: str) -> list[str]:
    """The `replace old => new vX` directives of a go.mod (single lines and blocks),
    normalised to single lines; local-path replaces (no version) are not kept."""
    found = []
    in_block = False
    for line in module_go_mod.splitlines():
        stripped = line.split("//", 1)[0].strip()
        if stripped.startswith("replace ("):
            in_block = True
            continue
        if in_block and stripped == ")":
            in_block = False
            continue
        if in_block or stripped.startswith("replace "):
            match = _REPLACE_LINE.match(stripped)
            if match:
                found.append(f"replace {match.group(1)} => {match.group(2)} {match.group(3)}")
    return found


def command_plan(
    module: str, version: str, module_go_mod: str, programs: Sequence[GoProgram]
) -> BuildPlan:
    """Commands of a module that pins its dependencies with `replace` (the Kubernetes CSI
    sidecars do): `go install pkg@version` refuses those, so the throwaway module
    requires `module@version` and repeats its replaces."""
    replaces = "".join(f"{line}\n" for line in module_replaces(module_go_mod))
    go_mod = (
        f"module stackube.local/{programs[0].name}-build\n\n"
        f"go {_go_directive(module_go_mod)}\n\n"
        f"require {module} {version}\n\n{replaces}"
    )
    return BuildPlan(go_mod, tuple(programs), "-s -w")


def etcd_plan(version: str, etcd_go_mod: str) -> BuildPlan:
    return module_plan(ETCD_SERVER_MODULE, version, etcd_go_mod, "etcd")


def coredns_plan(version: str, coredns_go_mod: str) -> BuildPlan:
    """CoreDNS as released (all its plugins): the tenant DNS servers run it."""
    return module_plan(COREDNS_MODULE, version, coredns_go_mod, "coredns")


def tools_go(programs: Sequence[GoProgram]) -> str:
    """A build-tagged file that imports the programs, so `go mod tidy` keeps their deps."""
    imports = "".join(f'\t_ "{p.package}"\n' for p in programs)
    return f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n"


def missing_programs(bin_dir: Path, names: Sequence[str]) -> list[str]:
    return [n for n in names if not os.access(bin_dir / n, os.X_OK)]


class GoBuilder:
    """Runs the go tool with a private, local toolchain and shared module/build caches."""

    def __init__(self, work_root: Path, go: str = "go") -> None:
        self.work_root = work_root
        self.go = shutil.which(go) or go

    def _env(self) -> Mapping[str, str]:
        # GOTOOLCHAIN=local: never fetch another Go; the machine's Go is the one pinned.
        return {
            **os.environ,
            "GOTOOLCHAIN": "local",
            "GOFLAGS": "-buildvcs=false",
            "CGO_ENABLED": "0",
        }

    def _run(self, argv: Sequence[str], cwd: Path) -> str:
        proc = subprocess.run(
            [self.go, *argv], cwd=cwd, env=self._env(), capture_output=True, text=True, check=False
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-30:])
            raise BuildError(f"go {' '.join(argv)} failed in {cwd}:\n{tail}")
        return proc.stdout

    def _download(self, module: str, version: str) -> dict[str, str]:
        self.work_root.mkdir(parents=True, exist_ok=True)
        out = self._run(["mod", "download", "-json", f"{module}@{version}"], self.work_root)
        info: dict[str, str] = json.loads(out)
        return info

    def module_go_mod(self, module: str, version: str) -> str:
        """The go.mod of `module@version`, fetched through the module proxy."""
        return Path(self._download(module, version)["GoMod"]).read_text()

    def module_dir(self, module: str, version: str) -> Path:
        """Where the go command keeps `module@version`'s source (read-only)."""
        return Path(self._download(module, version)["Dir"])

    def build(
        self,
        key: str,
        plan: BuildPlan,
        bin_dir: Path,
        on_program: Callable[[str], None] = lambda name: None,
    ) -> None:
        """Build every program of `plan` into `bin_dir` (atomically, one by one)."""
        work = self.work_root / key
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(plan.go_mod)
        (work / "tools.go").write_text(tools_go(plan.programs))
        self._run(["mod", "tidy"], work)
        bin_dir.mkdir(parents=True, exist_ok=True)
        for program in plan.programs:
            if not missing_programs(bin_dir, [program.name]):
                continue
            on_program(program.name)
            tmp = bin_dir / f".{program.name}.tmp"
            # A test binary also needs its packages' test imports, which `tidy` (of
            # tools.go's imports) leaves out: let the go command add them.
            verb = ["test", "-c", "-mod=mod"] if program.test else ["build"]
            self._run(
                [*verb, "-trimpath", "-ldflags", plan.ldflags, "-o", str(tmp), program.package],
                work,
            )
            tmp.replace(bin_dir / program.name)
