"""The devbox's kustomize overlay of deploy/: Stackube's image pinned by digest, and the
`stackube-config` ConfigMap and `stackube-credentials` Secret made from the devbox's own
configuration (the files the host-process components read), as an operator's overlay
would. `kubectl apply -k <overlay>` then deploys what deploy/ describes, with this
devbox's values (issue 15; docs/deploy.md).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from stackube.devbox.settings import DevboxSettings

# What deploy/'s workloads name; the overlay replaces it with the built image's digest.
PLACEHOLDER_IMAGE = "localhost/stackube"
NAMESPACE = "kube-system"


def overlay_kustomization(
    deploy: str, image: str, config: Mapping[str, str], secret: Mapping[str, str]
) -> dict[str, Any]:
    """The overlay's kustomization.yaml: `deploy` (deploy/, relative to the overlay: kustomize
    takes no absolute paths), `image` (`<registry>/<repository>@sha256:<digest>`), and the
    ConfigMap's and Secret's data (replacing deploy/'s examples entirely). Raises
    ValueError for an image not pinned by digest or a value kustomize cannot carry."""
    name, sep, digest = image.partition("@")
    if not sep or not digest.startswith("sha256:"):
        raise ValueError(f"{image}: the image must be pinned by digest (name@sha256:...)")

    def generated(values: Mapping[str, str]) -> list[str]:
        for key, value in values.items():
            if "\n" in value or "=" in key:
                raise ValueError(f"{key}: a kustomize literal takes one line and no '=' in keys")
        return [f"{key}={values[key]}" for key in sorted(values)]

    options = {"disableNameSuffixHash": True}  # the workloads mount them by these names
    return {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [deploy],
        "images": [{"name": PLACEHOLDER_IMAGE, "newName": name, "digest": digest}],
        "configMapGenerator": [
            {
                "name": "stackube-config",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "literals": generated(config),
                "options": options,
            }
        ],
        "secretGenerator": [
            {
                "name": "stackube-credentials",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "literals": generated(secret),
                "options": options,
            }
        ],
    }


def _key_files(directory: Path) -> dict[str, str]:
    return {path.name: path.read_text().strip() for path in sorted(directory.iterdir())}


def write_overlay(settings: DevboxSettings, deploy_dir: Path, image: str) -> Path:
    """The overlay directory (`<state>/deploy`, mode 0700: it holds the password)."""
    overlay = settings.state_dir / "deploy"
    overlay.mkdir(mode=0o700, exist_ok=True)
    overlay.chmod(0o700)
    stackube = settings.state_dir / "stackube"
    doc = overlay_kustomization(
        os.path.relpath(deploy_dir.resolve(), overlay.resolve()),
        image,
        _key_files(stackube / "config"),
        _key_files(stackube / "secret"),
    )
    path = overlay / "kustomization.yaml"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)
    return overlay
