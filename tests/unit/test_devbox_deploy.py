"""The devbox's overlay of deploy/ (devbox/deploy.py), pure part."""

from __future__ import annotations

import pytest

from stackube.devbox.deploy import overlay_kustomization

pytestmark = pytest.mark.unit

IMAGE = "127.0.0.1:5001/stackube/stackube@sha256:" + "ab" * 32


def test_the_overlay_pins_the_image_and_replaces_the_example_configuration() -> None:
    doc = overlay_kustomization(
        "../../work/deploy", IMAGE, {"region": "RegionOne", "auth-url": "http://k:5000/v3"},
        {"password": "s3cret"},
    )  # fmt: skip
    assert doc["resources"] == ["../../work/deploy"]
    assert doc["images"] == [
        {
            "name": "localhost/stackube",
            "newName": "127.0.0.1:5001/stackube/stackube",
            "digest": "sha256:" + "ab" * 32,
        }
    ]
    config, secret = doc["configMapGenerator"][0], doc["secretGenerator"][0]
    assert config["literals"] == ["auth-url=http://k:5000/v3", "region=RegionOne"]
    assert config["behavior"] == secret["behavior"] == "replace"
    assert (config["name"], secret["name"]) == ("stackube-config", "stackube-credentials")
    assert secret["literals"] == ["password=s3cret"]
    assert config["options"] == {"disableNameSuffixHash": True}


@pytest.mark.parametrize(
    ("image", "config"),
    [
        ("127.0.0.1:5001/stackube/stackube:0.1.0", {}),  # a tag can move: refused
        (IMAGE, {"username": "two\nlines"}),
        (IMAGE, {"a=b": "c"}),
    ],
)
def test_what_the_overlay_cannot_carry_is_refused(image: str, config: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=r"digest|literal"):
        overlay_kustomization("../deploy", image, config, {})
