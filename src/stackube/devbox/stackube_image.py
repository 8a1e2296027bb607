"""Stackube's one image: every component's entry point (`stackube controller`, `auth`,
`cni-daemon`, `cni-install`, `proxy`, `csi`, `flexvolume-install`) on Debian 12.

Made on this machine from two sources only (decision 0017):
- a Debian 12 root file system (mmdebstrap, rootfs.py) with the programs the
  components run on a node (iptables, iproute2, conntrack, arping, ovs-vsctl, rbd-fuse,
  mkfs) and Python 3.11;
- our wheel and its dependencies, the versions this checkout was tested with (`pip
  freeze` of the running environment as constraints), installed with pip into
  /opt/stackube/lib (the same Python 3.11 as the image's).
Layers are written by images.py (fixed timestamps and owners: the same inputs give the
same digests). No credentials are in it: the components read theirs from mounted
Secrets. It runs as user `stackube` (10001) unless a Pod says otherwise (the node's
DaemonSets run privileged as root: they program the node's network and mounts).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stackube import __version__
from stackube.devbox import images, rootfs
from stackube.devbox.commands import StepError
from stackube.devbox.settings import DevboxSettings

REPOSITORY = "stackube/stackube"
USER_ID = 10001
# What the components execute on a node, as Debian 12 packages (and python3 itself).
PACKAGES = (
    "python3",
    "ca-certificates",
    "iptables",
    "nftables",
    "iproute2",
    "conntrack",
    "iputils-arping",
    "openvswitch-switch",  # ovs-vsctl (the node's own ovsdb, mounted)
    "rbd-fuse",
    "e2fsprogs",  # ext4, the volumes' default (xfsprogs would add ICU's 36 MB)
    rootfs.USRMERGE_PACKAGE,
)
HOOKS = (
    f'chroot "$1" groupadd --system --gid {USER_ID} stackube',
    f'chroot "$1" useradd --system --uid {USER_ID} --gid {USER_ID} --no-create-home '
    "--home-dir /nonexistent --shell /usr/sbin/nologin stackube",
    rootfs.PURGE_USRMERGE,
    *rootfs.SLIM_HOOKS,
)
LIB = "opt/stackube/lib"
PIP_TIMEOUT = 900  # seconds: a cold pip cache downloads every dependency


def rootfs_tar(settings: DevboxSettings, say: Callable[[str], None]) -> Path:
    """The image's Debian layer (cached under a name that changes with its recipe)."""
    directory = settings.cache_dir / "stackube-image"
    return rootfs.recipe_rootfs(directory, "rootfs", PACKAGES, HOOKS, say)


def project_root() -> Path:
    """This checkout (where pyproject.toml is): the wheel is built from it."""
    root = Path(__file__).resolve().parents[3]
    if not (root / "pyproject.toml").is_file():
        raise StepError(f"no pyproject.toml at {root}: build the image from a checkout")
    return root


def _pip(*args: str, cwd: Path | None = None) -> None:
    _python("-m", "pip", "--disable-pip-version-check", *args, cwd=cwd)


def _python(*args: str, cwd: Path | None = None) -> None:
    argv = [sys.executable, *args]
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
        timeout=PIP_TIMEOUT,
        # Fixed pyc: hash-checked (SOURCE_DATE_EPOCH), set constants in one order (seed).
        env={**os.environ, "SOURCE_DATE_EPOCH": rootfs.SOURCE_DATE_EPOCH, "PYTHONHASHSEED": "0"},
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise StepError(f"python3 {' '.join(args[:4])} failed:\n{tail}")


def constraints() -> str:
    """The versions of this environment's packages (ours excepted), as pip constraints."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "freeze",
            "--exclude-editable",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return "".join(
        f"{line}\n"
        for line in done.stdout.splitlines()
        if "==" in line and not line.lower().startswith("stackube==")
    )


def tree_files(directory: Path, prefix: str) -> tuple[images.File, ...]:
    """Every file, symlink and directory under `directory`, as image files under
    `prefix` (sorted; modes kept, timestamps and owners left to the layer writer)."""
    found = []
    for path in sorted(directory.rglob("*")):
        inside = f"{prefix}/{path.relative_to(directory).as_posix()}"
        if path.is_symlink():
            found.append(images.File(inside, link_to=str(path.readlink())))
        elif path.is_dir():
            found.append(images.File(inside, directory=True, mode=0o755))
        else:
            found.append(images.File(inside, path.read_bytes(), mode=path.stat().st_mode & 0o755))
    return tuple(found)


def python_files(work: Path) -> tuple[images.File, ...]:
    """Our wheel and its dependencies installed for the image's Python in /opt/stackube/lib
    (console scripts dropped: their first line names this machine's interpreter)."""
    wheels, target = work / "wheels", work / "lib"
    _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(wheels), str(project_root()))
    (work / "constraints.txt").write_text(constraints())
    wheel = next(wheels.glob("stackube-*.whl"))
    _pip(
        "install", "--quiet", "--no-warn-script-location", "--no-compile", "--target",
        str(target), "--constraint", str(work / "constraints.txt"), str(wheel),
    )  # fmt: skip
    shutil.rmtree(target / "bin", ignore_errors=True)
    # Bytecode, made alone in one fresh process and in a fixed order: pip's own varies
    # from run to run (marshal's references follow the installing process's state).
    _python("-m", "compileall", "-q", "-j", "1", "-d", f"/{LIB}", str(target))
    return tree_files(target, LIB)


def image_spec(
    rootfs_layer: bytes, files: Sequence[images.File], version: str, labels: Mapping[str, str]
) -> images.ImageSpec:
    """The image: entry point `python3 -m stackube` (a component's name is the first
    argument), user stackube, our packages on PYTHONPATH."""
    return images.ImageSpec(
        REPOSITORY,
        version,
        tuple(files),
        base_layers=(rootfs_layer,),
        entrypoint=("python3", "-m", "stackube"),
        cmd=("--help",),
        env=(
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            f"PYTHONPATH=/{LIB}",
            "PYTHONDONTWRITEBYTECODE=1",
            "PYTHONUNBUFFERED=1",
        ),
        user=f"{USER_ID}:{USER_ID}",
        labels={
            "org.opencontainers.image.title": "stackube",
            "org.opencontainers.image.version": version,
            **labels,
        },
    )


def revision() -> str:
    """This checkout's commit ("" without git): the image's revision label."""
    try:
        return subprocess.run(
            ["git", "-C", str(project_root()), "rev-parse", "HEAD"],
            capture_output=True, text=True, check=False, timeout=30,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return ""


def build(settings: DevboxSettings, say: Callable[[str], None]) -> images.BuiltImage:
    """Builds the image (not pushed). Raises StepError when mmdebstrap or pip fails."""
    layer = rootfs_tar(settings, say).read_bytes()
    # A fixed place: pip records the wheel's path in the installed metadata.
    work = settings.cache_dir / "stackube-image" / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        say("  pip: stackube and its dependencies")
        files = python_files(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    commit = revision()
    labels = {"org.opencontainers.image.revision": commit} if commit else {}
    say("  layers")
    return images.build(image_spec(layer, files, __version__, labels))


def reference(settings: DevboxSettings, image: images.BuiltImage) -> str:
    """How the devbox's node pulls it: the devbox registry, pinned by digest."""
    registry = settings.registry_url.removeprefix("http://")
    return f"{registry}/{REPOSITORY}@{images.sha256(image.manifest)}"


def size(image: images.BuiltImage) -> tuple[int, int]:
    """(compressed bytes pulled, bytes unpacked) of the image's layers."""
    pulled = sum(len(layer) for layer in image.layers)
    unpacked = sum(len(layer) for layer in image.spec.base_layers)
    return pulled, unpacked + sum(len(file.data) for file in image.spec.files)
