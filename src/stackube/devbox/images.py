"""Container images for an air-gapped devbox: built from files on this machine (static
binaries from Debian packages, our CoreDNS build) and pushed to the devbox's own
registry, which containerd uses as its mirror for docker.io and registry.k8s.io.

Building is pure and deterministic (same files -> same digests, so pushes are no-ops
the second time); `push` speaks the registry HTTP API (distribution v2).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
LAYER_TYPE = "application/vnd.docker.image.rootfs.diff.tar.gzip"


@dataclass(frozen=True)
class File:
    """One entry of the image's single layer: a regular file, a directory or a symlink."""

    path: str  # inside the image, without a leading slash
    data: bytes = b""
    mode: int = 0o644
    link_to: str | None = None  # a symlink's target
    directory: bool = False


@dataclass(frozen=True)
class ImageSpec:
    """An image: layers made elsewhere (uncompressed tars, e.g. a Debian root file
    system), then one layer of files, and the runtime configuration."""

    repository: str  # in the registry, e.g. library/nginx
    tag: str
    files: tuple[File, ...]
    base_layers: tuple[bytes, ...] = ()
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
    user: str = ""
    exposed_ports: tuple[str, ...] = ()  # e.g. "80/tcp"
    stop_signal: str = ""  # e.g. "SIGQUIT"; the runtime's default (SIGTERM) if empty
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuiltImage:
    spec: ImageSpec
    layers: tuple[bytes, ...]  # gzip-compressed tars, bottom first
    config: bytes
    manifest: bytes

    @property
    def layer(self) -> bytes:
        """The top layer (the spec's files)."""
        return self.layers[-1]

    @property
    def digest(self) -> str:
        return sha256(self.manifest)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(files: Sequence[File]) -> bytes:
    """An uncompressed tar of `files` (parents first, owned by root, mtime 0)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in sorted(files, key=lambda f: f.path):
            info = tarfile.TarInfo(entry.path.lstrip("/"))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if entry.directory:
                info.type, info.mode = tarfile.DIRTYPE, entry.mode or 0o755
                tar.addfile(info)
            elif entry.link_to is not None:
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.link_to, 0o777
                tar.addfile(info)
            else:
                info.size, info.mode = len(entry.data), entry.mode
                tar.addfile(info, io.BytesIO(entry.data))
    return out.getvalue()


def with_parents(files: Sequence[File]) -> tuple[File, ...]:
    """Adds a directory entry for every parent that has none."""
    have = {f.path.strip("/") for f in files}
    parents: set[str] = set()
    for entry in files:
        parts = entry.path.strip("/").split("/")[:-1]
        parents |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    extra = [File(p, directory=True, mode=0o755) for p in sorted(parents - have)]
    return (*extra, *files)


@functools.lru_cache(maxsize=4)
def compressed(tar: bytes) -> bytes:
    """A layer as pushed (remembered: images sharing a base layer compress it once).
    mtime=0 keeps the gzip stream (and so the digests) the same on every build."""
    return gzip.compress(tar, compresslevel=6, mtime=0)


def build(spec: ImageSpec) -> BuiltImage:
    tars = (*spec.base_layers, layer_tar(with_parents(spec.files)))
    layers = tuple(compressed(tar) for tar in tars)
    runtime: dict[str, Any] = {"Env": list(spec.env)}
    if spec.entrypoint:
        runtime["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        runtime["Cmd"] = list(spec.cmd)
    if spec.user:
        runtime["User"] = spec.user
    if spec.exposed_ports:
        runtime["ExposedPorts"] = {port: {} for port in spec.exposed_ports}
    if spec.stop_signal:
        runtime["StopSignal"] = spec.stop_signal
    if spec.labels:
        runtime["Labels"] = dict(spec.labels)
    config = _canonical(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": runtime,
            "rootfs": {"type": "layers", "diff_ids": [sha256(tar) for tar in tars]},
            "history": [{"created_by": "stackube devbox image builder"}],
        }
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "size": len(config), "digest": sha256(config)},
            "layers": [
                {"mediaType": LAYER_TYPE, "size": len(layer), "digest": sha256(layer)}
                for layer in layers
            ],
        }
    )
    return BuiltImage(spec, layers, config, manifest)


def _canonical(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class RegistryError(RuntimeError):
    """The registry refused a push; the message names the step and its answer."""


def _request(
    method: str, url: str, data: bytes | None = None, headers: Mapping[str, str] | None = None
) -> tuple[int, Mapping[str, str]]:
    if not url.startswith("http://"):
        raise RegistryError(f"not a plain-HTTP registry URL: {url}")
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            response.read()
            return int(response.status), dict(response.headers)
    except urllib.error.HTTPError as exc:
        if method == "HEAD" and exc.code == 404:
            return 404, {}
        raise RegistryError(f"{method} {url}: {exc.code} {exc.read()[:300]!r}") from exc


def has_manifest(registry: str, repository: str, digest: str) -> bool:
    """Whether the registry (http://host:port) serves `repository@digest`."""
    url = f"{registry}/v2/{repository}/manifests/{digest}"
    return _request("HEAD", url, headers={"Accept": MANIFEST_TYPE})[0] == 200


def _push_blob(registry: str, base: str, blob: bytes) -> None:
    digest = sha256(blob)
    if _request("HEAD", f"{base}/blobs/{digest}")[0] == 200:
        return
    _, started = _request("POST", f"{base}/blobs/uploads/")
    location = started["Location"]
    if location.startswith("/"):
        location = registry + location
    separator = "&" if "?" in location else "?"
    _request(
        "PUT",
        f"{location}{separator}digest={digest}",
        data=blob,
        headers={"Content-Type": "application/octet-stream"},
    )


def _get(url: str, accept: str = "*/*") -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return bytes(response.read())
    except urllib.error.HTTPError as exc:
        raise RegistryError(f"GET {url}: {exc.code}") from exc


def relabel(registry: str, repository: str, digest: str, labels: Mapping[str, str]) -> str:
    """Push a copy of `repository@digest` whose image configuration has `labels` too
    (same layers: a new image to roll out, made in a second). Returns its digest."""
    base = f"{registry}/v2/{repository}"
    manifest = json.loads(_get(f"{base}/manifests/{digest}", MANIFEST_TYPE))
    config = json.loads(_get(f"{base}/blobs/{manifest['config']['digest']}"))
    config.setdefault("config", {}).setdefault("Labels", {}).update(labels)
    blob = _canonical(config)
    _push_blob(registry, base, blob)
    manifest["config"] = {**manifest["config"], "digest": sha256(blob), "size": len(blob)}
    body = _canonical(manifest)
    tag = "relabelled-" + sha256(body).removeprefix("sha256:")[:12]
    _request("PUT", f"{base}/manifests/{tag}", data=body, headers={"Content-Type": MANIFEST_TYPE})
    return sha256(body)


def tag_digest(registry: str, repository: str, tag: str) -> str | None:
    """The digest of the manifest `repository:tag` names in the registry
    (http://host:port), or None when it has no such tag."""
    url = f"{registry}/v2/{repository}/manifests/{tag}"
    status, headers = _request("HEAD", url, headers={"Accept": MANIFEST_TYPE})
    return headers.get("Docker-Content-Digest") if status == 200 else None


def push(image: BuiltImage, registry: str) -> bool:
    """Upload blobs the registry lacks, then the manifest under the tag. `registry` is
    http://host:port. Returns False if the tag already named this exact manifest."""
    base = f"{registry}/v2/{image.spec.repository}"
    if tag_digest(registry, image.spec.repository, image.spec.tag) == image.digest:
        return False
    for blob in (*image.layers, image.config):
        _push_blob(registry, base, blob)
    _request(
        "PUT",
        f"{base}/manifests/{image.spec.tag}",
        data=image.manifest,
        headers={"Content-Type": MANIFEST_TYPE},
    )
    return True


# ---- the devbox's images ------------------------------------------------------------------
PAUSE_TAG = "3.10"


def busybox_files(busybox: bytes, applets: Sequence[str]) -> tuple[File, ...]:
    """The static busybox and a symlink per applet (`busybox --list-full` paths),
    plus what programs expect to find: /tmp, /etc/passwd and /etc/group."""
    links = [File(path, link_to="/bin/busybox") for path in applets if path != "bin/busybox"]
    return (
        File("bin/busybox", busybox, mode=0o755),
        *links,
        File("tmp", directory=True, mode=0o1777),
        File("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
        File("etc/group", b"root:x:0:\nnobody:x:65534:\n"),
    )


def devbox_images(
    busybox: bytes, applets: Sequence[str], coredns: bytes, coredns_image: str
) -> list[ImageSpec]:
    """The names the user guide and the cluster use, as the registry mirror serves them:
    docker.io/library/busybox, docker.io/coredns/coredns, registry.k8s.io/pause (nginx,
    a Debian root file system, is nginx_image's)."""
    base = busybox_files(busybox, applets)
    coredns_repository, coredns_tag = coredns_image.rsplit(":", 1)
    return [
        ImageSpec("library/busybox", "latest", base, cmd=("sh",)),
        # The sandbox only has to hold the namespaces; containerd kills it with SIGKILL.
        ImageSpec("pause", PAUSE_TAG, base, entrypoint=("sleep", "2147483647")),
        ImageSpec(
            coredns_repository,
            coredns_tag,
            (File("coredns", coredns, mode=0o755),),
            entrypoint=("/coredns",),
            user="65532",
            exposed_ports=("53/udp", "53/tcp"),
        ),
    ]
