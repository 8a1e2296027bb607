"""Stackube's image, pure parts (stackube_image.py): its runtime configuration, the
files taken from a directory, and the recipe's cache key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stackube.devbox import images, stackube_image

pytestmark = pytest.mark.unit


def test_the_image_runs_stackube_as_its_own_user_with_our_packages_on_the_path() -> None:
    files = (images.File("opt/stackube/lib/stackube/__init__.py", b"__version__ = '9'\n"),)
    spec = stackube_image.image_spec(
        b"", files, "9.9.9", {"org.opencontainers.image.revision": "abc"}
    )
    built = images.build(spec)
    config = json.loads(built.config)["config"]
    assert config["Entrypoint"] == ["python3", "-m", "stackube"]
    assert config["User"] == "10001:10001"
    assert "PYTHONPATH=/opt/stackube/lib" in config["Env"]
    assert config["Labels"]["org.opencontainers.image.version"] == "9.9.9"
    assert config["Labels"]["org.opencontainers.image.revision"] == "abc"
    assert spec.repository == "stackube/stackube" and spec.tag == "9.9.9"
    # The same inputs, the same digest (the registry reference pins it).
    assert images.build(spec).manifest == built.manifest


def test_a_directory_becomes_image_files_with_modes_and_links(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "tool").write_bytes(b"#!/bin/sh\n")
    (tmp_path / "pkg" / "tool").chmod(0o775)
    (tmp_path / "pkg" / "data.txt").write_text("x")
    (tmp_path / "link").symlink_to("pkg/tool")
    found = {f.path: f for f in stackube_image.tree_files(tmp_path, "opt/x")}
    assert sorted(found) == ["opt/x/link", "opt/x/pkg", "opt/x/pkg/data.txt", "opt/x/pkg/tool"]
    assert found["opt/x/pkg"].directory
    assert found["opt/x/pkg/tool"].mode == 0o755  # group and others never write
    assert found["opt/x/pkg/data.txt"].mode == 0o644 and found["opt/x/pkg/data.txt"].data == b"x"
    assert found["opt/x/link"].link_to == "pkg/tool"


def test_the_image_has_what_the_nodes_components_run_and_no_perl() -> None:
    for package in ("python3", "iptables", "iproute2", "conntrack", "openvswitch-switch",
                    "rbd-fuse", "e2fsprogs"):  # fmt: skip
        assert package in stackube_image.PACKAGES
    # usr-is-merged satisfies init-system-helpers; usrmerge (Perl) is purged.
    assert "usr-is-merged" in stackube_image.PACKAGES
    assert any("--purge usrmerge" in hook and " perl " in hook for hook in stackube_image.HOOKS)
