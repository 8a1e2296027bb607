"""A devbox process is restarted when its configuration files change (file I/O only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackube.devbox.process import ProcessSpec

pytestmark = pytest.mark.integration


def test_identity_follows_the_content_of_the_input_files(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("a = 1\n")
    spec = ProcessSpec("x", ["x", f"--config={config}"], inputs=(config,))
    first = spec.identity
    assert first[:2] == ["x", f"--config={config}"] and first[2].startswith("#inputs:")
    assert spec.identity == first  # same content, same identity
    config.write_text("a = 2\n")
    assert spec.identity != first
    config.unlink()
    assert spec.identity not in (first, ["x", f"--config={config}"])  # missing: still an identity
