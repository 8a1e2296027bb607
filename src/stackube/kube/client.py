"""Kubernetes API clients from a kubeconfig file."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from kubernetes import client, config

ApiClient = client.ApiClient


def api_client(kubeconfig: Path | None = None) -> ApiClient:
    """From a kubeconfig file, else in-cluster (a pod's service account), else $KUBECONFIG."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return ApiClient()
        except config.ConfigException:
            made = config.new_client_from_config()
            return cast(ApiClient, made)
    made = config.new_client_from_config(config_file=str(kubeconfig))
    return cast(ApiClient, made)
