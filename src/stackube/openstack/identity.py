"""Idempotent Keystone operations ("ensure X exists and looks like this")."""

from __future__ import annotations

from typing import Any, cast

from openstack.connection import Connection
from openstack.identity.v3._proxy import Proxy as IdentityProxy


def _identity(conn: Connection) -> IdentityProxy:
    return cast(IdentityProxy, conn.identity)


def ensure_domain(conn: Connection, name: str, description: str = "") -> str:
    domain = _identity(conn).find_domain(name, ignore_missing=True)
    if domain is None:
        domain = _identity(conn).create_domain(name=name, description=description, enabled=True)
    return str(domain.id)


def ensure_project(conn: Connection, name: str, domain_id: str, description: str = "") -> str:
    project = _identity(conn).find_project(name, domain_id=domain_id, ignore_missing=True)
    if project is None:
        project = _identity(conn).create_project(
            name=name, domain_id=domain_id, description=description, enabled=True
        )
    return str(project.id)


def ensure_user(
    conn: Connection,
    name: str,
    password: str,
    domain_id: str,
    default_project_id: str | None = None,
) -> str:
    """The user exists, is enabled and has this password (set again on every call, so a
    rotated password in our configuration wins)."""
    query: dict[str, Any] = {"domain_id": domain_id}
    user = _identity(conn).find_user(name, ignore_missing=True, **query)
    if user is None:
        user = _identity(conn).create_user(
            name=name,
            password=password,
            domain_id=domain_id,
            default_project_id=default_project_id,
            enabled=True,
        )
    else:
        _identity(conn).update_user(user, password=password, enabled=True)
    return str(user.id)


def ensure_role(conn: Connection, name: str) -> str:
    role = _identity(conn).find_role(name, ignore_missing=True)
    if role is None:
        role = _identity(conn).create_role(name=name)
    return str(role.id)


def grant_project_role(conn: Connection, user_id: str, project_id: str, role_id: str) -> None:
    _identity(conn).assign_project_role_to_user(project_id, user_id, role_id)


def grant_domain_role(conn: Connection, user_id: str, domain_id: str, role_id: str) -> None:
    _identity(conn).assign_domain_role_to_user(domain_id, user_id, role_id)


def ensure_endpoints(
    conn: Connection, service_type: str, service_name: str, url: str, region: str
) -> None:
    """A catalog service with public, internal and admin endpoints at `url`."""
    service = next(iter(_identity(conn).services(type=service_type)), None)
    if service is None:
        service = _identity(conn).create_service(type=service_type, name=service_name, enabled=True)
    existing = {e.interface: e for e in _identity(conn).endpoints(service_id=service.id)}
    for interface in ("public", "internal", "admin"):
        endpoint = existing.get(interface)
        if endpoint is None:
            _identity(conn).create_endpoint(
                service_id=service.id, interface=interface, url=url, region_id=region
            )
        elif endpoint.url != url:
            _identity(conn).update_endpoint(endpoint, url=url)
