"""Opening openstacksdk connections from explicit credentials or a clouds.yaml entry."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openstack
import openstack.config
from keystoneauth1 import service_token
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3
from openstack.connection import Connection

from stackube.config import ControllerConfig

__all__ = [
    "Connection",
    "Credentials",
    "LazyConnection",
    "connect",
    "connect_as_service",
    "connect_cloud",
    "service_credentials",
]


@dataclass(frozen=True)
class Credentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    region: str = "RegionOne"
    user_domain: str = "Default"
    project_domain: str = "Default"
    # Scope to this project by ID instead (project_name and project_domain then unused).
    project_id: str | None = None


def service_credentials(config: ControllerConfig) -> Credentials:
    """Stackube's own service account, from the stackube-config keys."""
    return Credentials(
        auth_url=config.auth_url,
        username=config.username,
        password=config.password,
        project_name=config.tenant_name,
        region=config.region,
        user_domain=config.user_domain_name,
        project_domain=config.project_domain_name,
    )


def connect(creds: Credentials, timeout: float = 30.0) -> Connection:
    # Only these credentials: OS_* variables or a clouds.yaml of whoever runs us must not
    # blend in (OS_CLOUD in an operator's shell would otherwise swap in other auth).
    scope: dict[str, Any] = (
        {"project_id": creds.project_id}
        if creds.project_id
        else {"project_name": creds.project_name, "project_domain_name": creds.project_domain}
    )
    return openstack.connect(
        load_yaml_config=False,
        load_envvars=False,
        auth_url=creds.auth_url,
        username=creds.username,
        password=creds.password,
        user_domain_name=creds.user_domain,
        region_name=creds.region,
        identity_api_version="3",
        interface="public",
        api_timeout=timeout,
        **scope,
    )


def connect_as_service(creds: Credentials, timeout: float = 30.0) -> Connection:
    """Like `connect`, but every request also carries the user's token as a service token
    (X-Service-Token, keystoneauth's ServiceTokenAuthWrapper), as Nova sends its own:
    Cinder deletes an attachment made for an instance only at a service's request (a
    user with the `service` role; OSSA-2023-003, Cinder bug 2004555)."""

    def password() -> v3.Password:
        scope: dict[str, Any] = (
            {"project_id": creds.project_id}
            if creds.project_id
            else {"project_name": creds.project_name, "project_domain_name": creds.project_domain}
        )
        return v3.Password(
            auth_url=creds.auth_url,
            username=creds.username,
            password=creds.password,
            user_domain_name=creds.user_domain,
            **scope,
        )

    auth = service_token.ServiceTokenAuthWrapper(user_auth=password(), service_auth=password())
    return Connection(
        session=ksa_session.Session(auth=auth, timeout=timeout),
        region_name=creds.region,
        interface="public",
        identity_api_version="3",
    )


def connect_cloud(cloud: str, clouds_yaml: Path) -> Connection:
    """The cloud `cloud` of this clouds.yaml file, and nothing else: no OS_* variable
    (OS_CLOUD, OS_CLIENT_CONFIG_FILE, OS_AUTH_URL, ...) and no user or system
    clouds.yaml, secure.yaml or vendor file blends in (openstacksdk reads them all by
    default). Raises openstack.exceptions.ConfigException if the file has no such cloud."""
    config = openstack.config.OpenStackConfig(
        config_files=[str(clouds_yaml)],
        secure_files=[],
        vendor_files=[],
        load_envvars=False,
    )
    return Connection(config=config.get_one(cloud=cloud))


class LazyConnection:
    """One openstacksdk connection for Stackube's service account, made on first use
    (so a program starts, and reports, even while Keystone is down)."""

    def __init__(self, config: ControllerConfig) -> None:
        self.config = config
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Connection:
        with self._lock:
            if self._conn is None:
                self._conn = connect(service_credentials(self.config))
            return self._conn
