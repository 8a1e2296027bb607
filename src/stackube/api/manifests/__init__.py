"""Kubernetes manifests shipped with Stackube (package data, also copied to deploy/)."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml


def controller_rbac() -> list[dict[str, Any]]:
    """ServiceAccount, least-privilege ClusterRole/Role and their bindings."""
    text = resources.files(__name__).joinpath("controller-rbac.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]
