"""The devbox's image builder: layers, configs and manifests (pure)."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import pytest

from stackube.devbox import images, nginx_image

pytestmark = pytest.mark.unit

SPEC = images.ImageSpec(
    "library/demo",
    "latest",
    (
        images.File("usr/bin/tool", b"#!/bin/sh\necho hi\n", mode=0o755),
        images.File("bin/sh", link_to="/usr/bin/tool"),
    ),
    cmd=("tool",),
    exposed_ports=("80/tcp",),
)


def members(image: images.BuiltImage) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(image.layer))) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_building_twice_gives_the_same_digests() -> None:
    first, second = images.build(SPEC), images.build(SPEC)
    assert first.digest == second.digest
    assert first.layer == second.layer


def test_layer_has_parents_first_with_modes_and_links() -> None:
    found = members(images.build(SPEC))
    names = list(found)
    assert names.index("usr") < names.index("usr/bin") < names.index("usr/bin/tool")
    assert found["usr/bin"].isdir()
    assert found["usr/bin/tool"].mode == 0o755
    assert found["bin/sh"].issym() and found["bin/sh"].linkname == "/usr/bin/tool"
    assert all(m.uid == 0 and m.mtime == 0 for m in found.values())


def test_manifest_names_config_and_layer_by_digest_and_size() -> None:
    image = images.build(SPEC)
    manifest = json.loads(image.manifest)
    assert manifest["mediaType"] == images.MANIFEST_TYPE
    assert manifest["config"] == {
        "mediaType": images.CONFIG_TYPE,
        "size": len(image.config),
        "digest": images.sha256(image.config),
    }
    assert manifest["layers"][0]["digest"] == images.sha256(image.layer)
    config = json.loads(image.config)
    # diff_ids name the uncompressed layer.
    assert config["rootfs"]["diff_ids"] == [images.sha256(gzip.decompress(image.layer))]
    assert config["config"]["Cmd"] == ["tool"]
    assert config["config"]["ExposedPorts"] == {"80/tcp": {}}


def test_a_changed_file_changes_the_digest() -> None:
    changed = images.ImageSpec(
        SPEC.repository, SPEC.tag, (images.File("usr/bin/tool", b"other", mode=0o755),)
    )
    assert images.build(changed).digest != images.build(SPEC).digest


def test_devbox_images_carry_the_names_the_guide_uses() -> None:
    specs = images.devbox_images(
        b"BB", ["bin/busybox", "bin/sh", "usr/bin/wget"], b"CD", "coredns/coredns:1.14.7"
    )
    names = {f"{s.repository}:{s.tag}" for s in specs}
    assert names == {
        "library/busybox:latest",
        f"pause:{images.PAUSE_TAG}",
        "coredns/coredns:1.14.7",
    }
    busybox = next(s for s in specs if s.repository == "library/busybox")
    links = {f.path: f.link_to for f in busybox.files if f.link_to}
    assert links == {"bin/sh": "/bin/busybox", "usr/bin/wget": "/bin/busybox"}
    coredns = next(s for s in specs if s.repository == "coredns/coredns")
    assert coredns.entrypoint == ("/coredns",) and coredns.user == "65532"


def test_push_refuses_anything_but_a_plain_http_registry() -> None:
    with pytest.raises(images.RegistryError, match="plain-HTTP"):
        images.push(images.build(SPEC), "file:///etc")


def test_nginx_is_debians_set_up_as_the_official_image() -> None:
    spec = nginx_image.image_spec(b"ROOTFS")
    assert (spec.repository, spec.tag) == ("library/nginx", "latest")
    config = json.loads(images.build(spec).config)["config"]
    assert config["Cmd"] == ["nginx", "-g", "daemon off;"]
    assert config["StopSignal"] == "SIGQUIT" and config["ExposedPorts"] == {"80/tcp": {}}
    assert "User" not in config  # the master binds :80 as root, workers are www-data
    assert nginx_image.PACKAGES[0] == "nginx-light"
    hooks = "\n".join(nginx_image.HOOKS)
    assert "ln -sf /dev/stdout" in hooks and "ln -sf /dev/stderr" in hooks
    assert "root /usr/share/nginx/html;" in hooks


def test_an_image_without_a_stop_signal_leaves_the_runtime_default() -> None:
    assert "StopSignal" not in json.loads(images.build(SPEC).config)["config"]
