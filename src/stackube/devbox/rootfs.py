"""Debian 12 root file systems for images, made with mmdebstrap from the machine's apt
sources (no other registry is needed) and cached as tars.

The same package list and SOURCE_DATE_EPOCH give the same tar (mmdebstrap's
reproducible mode), so the image layer made from it keeps its digest.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from stackube.devbox import packages
from stackube.devbox.commands import StepError

SUITE = "bookworm"
# Fixed epoch for the root file systems (the same packages give the same layer digest).
SOURCE_DATE_EPOCH = "1735689600"
TIMEOUT = 1800  # seconds; a cold mmdebstrap downloads every package
# init-system-helpers wants usrmerge or usr-is-merged; apt picks usrmerge, and Perl with
# it, although usr-is-merged is included: include it and purge those.
USRMERGE_PACKAGE = "usr-is-merged"
PURGE_USRMERGE = (
    'chroot "$1" dpkg --purge usrmerge libfile-find-rule-perl libnumber-compare-perl '
    "libtext-glob-perl perl libperl5.36 perl-modules-5.36"
)
# What no program in an image reads: package lists and caches, manuals, docs but copyrights.
SLIM_HOOKS = (
    'rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/usr/share/man/* '
    '"$1"/usr/share/info/* "$1"/usr/share/locale/*',
    'find "$1"/usr/share/doc -type f ! -name copyright -delete',
)


def debian_rootfs(
    out: Path,
    include: Sequence[str],
    hooks: Sequence[str],
    say: Callable[[str], None],
) -> Path:
    """`out` (a tar): Debian `SUITE` minbase with `include`, after each customize `hook`
    (shell, `$1` is the root). Made once; delete `out` to make it again. Raises
    StepError with mmdebstrap's last lines when it fails."""
    if out.exists():
        return out
    missing = packages.missing_packages(("mmdebstrap",))
    if missing:
        packages.install(missing)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.tar")
    say(f"  mmdebstrap {SUITE} with {', '.join(include)}")
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        f"--include={','.join(include)}",
        *(f"--customize-hook={hook}" for hook in hooks),
        SUITE,
        str(tmp),
    ]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
        timeout=TIMEOUT,
    )
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise StepError(f"mmdebstrap failed:\n{tail}")
    tmp.replace(out)
    return out


def recipe_rootfs(
    directory: Path,
    stem: str,
    include: Sequence[str],
    hooks: Sequence[str],
    say: Callable[[str], None],
) -> Path:
    """`debian_rootfs` cached as `directory/<stem>-<suite>-<recipe>.tar`: a changed
    package list or hook makes a new tar (the old one stays until deleted)."""
    recipe = hashlib.sha256("\n".join((*include, *hooks)).encode()).hexdigest()[:12]
    return debian_rootfs(directory / f"{stem}-{SUITE}-{recipe}.tar", include, hooks, say)
