"""Kubernetes API clients from a kubeconfig file."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from kubernetes import client, config


def api_client(kubeconfig: Path) -> client.ApiClient:
    made = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    return cast(client.ApiClient, made)
