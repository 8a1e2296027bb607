"""Kubernetes API clients from a kubeconfig file or a pod's service account."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client, config

from stackube.config import ConfigError

ApiClient = client.ApiClient
# Seconds any one Kubernetes API call may take (connect and read) before it fails and
# is retried: a hung connection must not stall a reconcile pass.
REQUEST_TIMEOUT = 30.0


@dataclass(frozen=True)
class Endpoint:
    """Where and how to reach the apiserver, as plain values (for other HTTP clients,
    e.g. kopf's own)."""

    server: str
    ca_path: str | None
    certificate_path: str | None
    private_key_path: str | None
    token: str | None
    insecure: bool


def _configuration(kubeconfig: Path | None) -> client.Configuration:
    """Raises ConfigError when no usable kubeconfig (or in-cluster account) is found."""
    configuration = client.Configuration()
    try:
        if kubeconfig is not None:
            config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
            return configuration
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
    except config.ConfigException as exc:
        where = kubeconfig or "$KUBECONFIG or ~/.kube/config (not in a pod)"
        raise ConfigError(f"no usable kubeconfig at {where}: {exc}") from exc
    return configuration


def api_client(kubeconfig: Path | None = None) -> ApiClient:
    """From a kubeconfig file, else in-cluster (a pod's service account), else $KUBECONFIG."""
    return client.ApiClient(_configuration(kubeconfig))


def endpoint(kubeconfig: Path | None = None) -> Endpoint:
    configuration = _configuration(kubeconfig)
    bearer = (configuration.api_key or {}).get("authorization") or (
        configuration.api_key or {}
    ).get("BearerToken")
    token = bearer.split(" ", 1)[1] if bearer and " " in bearer else bearer
    return Endpoint(
        server=configuration.host,
        ca_path=configuration.ssl_ca_cert,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token,
        insecure=not configuration.verify_ssl,
    )


@contextmanager
def session(kubeconfig: Path | None = None) -> Iterator[ApiClient]:
    """An API client that is closed (its connection pool too) when the block ends."""
    api = api_client(kubeconfig)
    try:
        yield api
    finally:
        api.close()
