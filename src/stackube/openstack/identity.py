"""Keystone operations, idempotent where they can be ("ensure X exists")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from keystoneauth1 import exceptions as ksa
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3
from openstack.connection import Connection
from openstack.identity.v3._proxy import Proxy as IdentityProxy

from stackube.openstack.errors import translating


@dataclass(frozen=True)
class Project:
    id: str
    name: str
    domain_id: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class User:
    id: str
    name: str
    domain_id: str
    default_project_id: str | None


def _identity(conn: Connection) -> IdentityProxy:
    return cast(IdentityProxy, conn.identity)


def _project(raw: Any) -> Project:
    return Project(str(raw.id), str(raw.name), str(raw.domain_id), tuple(raw.tags or ()))


def _user(raw: Any) -> User:
    return User(str(raw.id), str(raw.name), str(raw.domain_id), raw.default_project_id)


@translating("Keystone domain")
def ensure_domain(conn: Connection, name: str, description: str = "") -> str:
    domain = _identity(conn).find_domain(name, ignore_missing=True)
    if domain is None:
        domain = _identity(conn).create_domain(name=name, description=description, enabled=True)
    return str(domain.id)


@translating("Keystone domain lookup")
def find_domain_id(conn: Connection, name: str) -> str | None:
    domain = _identity(conn).find_domain(name, ignore_missing=True)
    return None if domain is None else str(domain.id)


@translating("Keystone project")
def ensure_project(conn: Connection, name: str, domain_id: str, description: str = "") -> str:
    project = find_project(conn, name, domain_id)
    if project is None:
        return create_project(conn, name, domain_id, description).id
    return project.id


@translating("Keystone project lookup")
def find_project(conn: Connection, name: str, domain_id: str) -> Project | None:
    query: dict[str, Any] = {"domain_id": domain_id}
    found = _identity(conn).find_project(name, ignore_missing=True, **query)
    return None if found is None else _project(found)


@translating("Keystone project lookup")
def get_project(conn: Connection, project_id: str) -> Project | None:
    found = next(iter(_identity(conn).projects(id=project_id)), None)
    return None if found is None else _project(found)


@translating("Keystone project create")
def create_project(
    conn: Connection, name: str, domain_id: str, description: str = "", tags: tuple[str, ...] = ()
) -> Project:
    raw = _identity(conn).create_project(
        name=name, domain_id=domain_id, description=description, enabled=True, tags=list(tags)
    )
    return _project(raw)


@translating("Keystone project delete")
def delete_project(conn: Connection, project_id: str) -> None:
    _identity(conn).delete_project(project_id, ignore_missing=True)


@translating("Keystone user lookup")
def find_user(conn: Connection, name: str, domain_id: str) -> User | None:
    query: dict[str, Any] = {"domain_id": domain_id}
    found = _identity(conn).find_user(name, ignore_missing=True, **query)
    return None if found is None else _user(found)


@translating("Keystone user create")
def create_user(
    conn: Connection, name: str, password: str, domain_id: str, default_project_id: str | None
) -> User:
    raw = _identity(conn).create_user(
        name=name,
        password=password,
        domain_id=domain_id,
        default_project_id=default_project_id,
        enabled=True,
    )
    return _user(raw)


@translating("Keystone user update")
def set_password(conn: Connection, user_id: str, password: str) -> None:
    _identity(conn).update_user(user_id, password=password)


@translating("Keystone user delete")
def delete_user(conn: Connection, user_id: str) -> None:
    _identity(conn).delete_user(user_id, ignore_missing=True)


@translating("Keystone user")
def ensure_user(
    conn: Connection,
    name: str,
    password: str,
    domain_id: str,
    default_project_id: str | None = None,
) -> str:
    """The user exists, is enabled and has this password (set again on every call, so a
    rotated password in our configuration wins). For service users of the devbox."""
    user = find_user(conn, name, domain_id)
    if user is None:
        return create_user(conn, name, password, domain_id, default_project_id).id
    _identity(conn).update_user(user.id, password=password, enabled=True)
    return user.id


@translating("Keystone role")
def ensure_role(conn: Connection, name: str) -> str:
    role = _identity(conn).find_role(name, ignore_missing=True)
    if role is None:
        role = _identity(conn).create_role(name=name)
    return str(role.id)


@translating("Keystone role assignment")
def grant_project_role(conn: Connection, user_id: str, project_id: str, role_id: str) -> None:
    _identity(conn).assign_project_role_to_user(project_id, user_id, role_id)


@translating("Keystone role assignment")
def grant_domain_role(
    conn: Connection, user_id: str, domain_id: str, role_id: str, inherited: bool = False
) -> None:
    """The role on the domain; with `inherited`, on every project of the domain instead
    (OS-INHERIT: project-scoped tokens for those projects carry it)."""
    _identity(conn).assign_domain_role_to_user(domain_id, user_id, role_id, inherited=inherited)


@translating("Keystone password check")
def password_works(auth_url: str, user_id: str, password: str, timeout: float = 10.0) -> bool:
    """True if Keystone issues an (unscoped) token for this user and password."""
    auth = v3.Password(auth_url=auth_url, user_id=user_id, password=password)
    try:
        ksa_session.Session(auth=auth, timeout=timeout).get_token()
    except ksa.Unauthorized:
        return False
    return True


@translating("Keystone catalog")
def ensure_endpoints(
    conn: Connection, service_type: str, service_name: str, url: str, region: str
) -> None:
    """A catalog service with public, internal and admin endpoints at `url`."""
    identity = _identity(conn)
    service = next(iter(identity.services(type=service_type)), None)
    if service is None:
        service = identity.create_service(type=service_type, name=service_name, enabled=True)
    existing = {e.interface: e for e in identity.endpoints(service_id=service.id)}
    for interface in ("public", "internal", "admin"):
        endpoint = existing.get(interface)
        if endpoint is None:
            identity.create_endpoint(
                service_id=service.id, interface=interface, url=url, region_id=region
            )
        elif endpoint.url != url:
            identity.update_endpoint(endpoint, url=url)
