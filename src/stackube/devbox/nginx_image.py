"""The devbox's `nginx` image: Debian 12's nginx-light on a Debian root file system,
set up as the official image (docker.io/library/nginx) is where tenants notice it:
`nginx -g 'daemon off;'`, port 80, the welcome page in /usr/share/nginx/html, logs to
the container's stdout and stderr, SIGQUIT to stop gracefully.

Built once per recipe (mmdebstrap, cached under `~/.cache/stackube/nginx-image/`) and
pushed as docker.io/library/nginx:latest (the devbox registry mirrors docker.io).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from stackube.devbox import images, rootfs
from stackube.devbox.fsutil import write_atomic

REPOSITORY = "library/nginx"
TAG = "latest"
PACKAGES = ("nginx-light", rootfs.USRMERGE_PACKAGE)
SITE = "etc/nginx/sites-available/default"
HTML = "usr/share/nginx/html"
HOOKS = (
    # docker-library/nginx: the logs are the container's output.
    'ln -sf /dev/stdout "$1"/var/log/nginx/access.log',
    'ln -sf /dev/stderr "$1"/var/log/nginx/error.log',
    # The official image's document root; IPv4 only (a pod may have no IPv6, and the
    # official image, too, listens on [::] only where the kernel offers it).
    f"sed -i -e 's#root /var/www/html;#root /{HTML};#' -e '/listen \\[::\\]:80/d' \"$1\"/{SITE}",
    f'grep -q "Welcome to nginx!" "$1"/{HTML}/index.html',
    rootfs.PURGE_USRMERGE,
    *rootfs.SLIM_HOOKS,
)


def rootfs_tar(cache_dir: Path, say: Callable[[str], None]) -> Path:
    """The image's only layer (mmdebstrap once per recipe; StepError if it fails)."""
    return rootfs.recipe_rootfs(cache_dir / "nginx-image", "nginx", PACKAGES, HOOKS, say)


def image_spec(rootfs_layer: bytes) -> images.ImageSpec:
    """docker.io/library/nginx:latest from the root file system tar `rootfs_layer`."""
    return images.ImageSpec(
        REPOSITORY,
        TAG,
        (),
        base_layers=(rootfs_layer,),
        cmd=("nginx", "-g", "daemon off;"),
        exposed_ports=("80/tcp",),
        stop_signal="SIGQUIT",
    )


def push(cache_dir: Path, registry: str, say: Callable[[str], None]) -> str:
    """Build (first time) and push the image to `registry` (http://host:port) unless the
    registry already has the build this root file system made. Returns its digest."""
    tar = rootfs_tar(cache_dir, say)
    marker = tar.with_suffix(".pushed.json")
    try:
        digest = json.loads(marker.read_text()).get("digest")
    except (OSError, ValueError):  # not built here yet, or a torn write: build again
        digest = None
    if digest is not None and images.tag_digest(registry, REPOSITORY, TAG) == digest:
        return str(digest)
    built = images.build(image_spec(tar.read_bytes()))
    images.push(built, registry)
    write_atomic(marker, json.dumps({"digest": built.digest}))
    return built.digest
