"""Keystone for real: a project and a user, and a token as that user."""

from __future__ import annotations

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from stackube.openstack import cloud, identity
from tests.integration.conftest import unique

pytestmark = pytest.mark.integration


def test_project_user_and_token(devbox: Devbox, os_admin: Connection) -> None:
    name = unique("stkb-it")
    password = unique("pw")
    domain = identity.ensure_domain(os_admin, "Default")
    project = identity.ensure_project(os_admin, name, domain)
    try:
        user = identity.ensure_user(os_admin, name, password, domain, project)
        member = identity.ensure_role(os_admin, "member")
        identity.grant_project_role(os_admin, user, project, member)
        as_user = cloud.connect(
            cloud.Credentials(devbox.settings.keystone_url, name, password, name)
        )
        token = as_user.auth_token
        assert token
        info = os_admin.identity.validate_token(token)
        assert info.user["id"] == user
        assert info.project["id"] == project
        assert "member" in {r["name"] for r in info.roles}
        as_user.close()
    finally:
        u = os_admin.identity.find_user(name, ignore_missing=True)
        if u is not None:
            os_admin.identity.delete_user(u)
        os_admin.identity.delete_project(project)
    assert os_admin.identity.find_user(name, ignore_missing=True) is None
    assert os_admin.identity.find_project(name, ignore_missing=True) is None


def test_stackube_service_account_is_not_a_cloud_admin_of_default(
    devbox: Devbox, os_admin: Connection
) -> None:
    """Stackube's service user holds admin on its own domain and the service project
    only, never on the `admin` project."""
    user = os_admin.identity.find_user("stackube")
    assert user is not None
    assignments = list(os_admin.identity.role_assignments(user_id=user.id))
    # An inherited assignment's scope also says {"OS-INHERIT:inherited_to": "projects"}.
    scopes = {
        f"{kind}:{target['id']}"
        for a in assignments
        for kind, target in a.scope.items()
        if isinstance(target, dict)
    }
    inherited = {
        f"domain:{a.scope['domain']['id']}"
        for a in assignments
        if "OS-INHERIT:inherited_to" in a.scope and "domain" in a.scope
    }
    admin_project = os_admin.identity.find_project("admin")
    assert f"project:{admin_project.id}" not in scopes
    stackube_domain = os_admin.identity.find_domain("stackube")
    assert f"domain:{stackube_domain.id}" in scopes
    # Its role on every Tenant project (CSI CreateVolume) is inherited from that domain only.
    assert inherited == {f"domain:{stackube_domain.id}"}
