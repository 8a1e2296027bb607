"""Opening openstacksdk connections from explicit credentials or a clouds.yaml entry."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import openstack
import openstack.config
from openstack.connection import Connection

from stackube.config import ControllerConfig

__all__ = ["Connection", "Credentials", "connect", "connect_cloud", "service_credentials"]


@dataclass(frozen=True)
class Credentials:
    auth_url: str
    username: str
    password: str
    project_name: str
    region: str = "RegionOne"
    user_domain: str = "Default"
    project_domain: str = "Default"


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
    return openstack.connect(
        auth_url=creds.auth_url,
        username=creds.username,
        password=creds.password,
        project_name=creds.project_name,
        user_domain_name=creds.user_domain,
        project_domain_name=creds.project_domain,
        region_name=creds.region,
        identity_api_version="3",
        interface="public",
        api_timeout=timeout,
    )


def connect_cloud(cloud: str, clouds_yaml: Path) -> Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(clouds_yaml)])
    return Connection(config=config.get_one(cloud=cloud))
