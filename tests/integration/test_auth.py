"""stackube-auth on the devbox: Keystone users log in with `stackube login` through the
real kube-apiserver's token webhook, confined to their tenant's namespace."""

from __future__ import annotations

import contextlib
import json
import secrets
import stat
from collections.abc import Iterator

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from openstack.connection import Connection

from stackube.api.types import GROUP, VERSION
from stackube.devbox.box import Devbox
from stackube.openstack.cloud import Credentials
from stackube.openstack.tokens import issue_token
from tests.integration.tenant_users import TenantUser, gone, make_tenant, review, wait_for

pytestmark = pytest.mark.integration

# Webhook cache TTL (20 s) + the apiserver's own (10 s), and a margin.
REVOCATION_WINDOW = 40


@pytest.fixture(scope="module")
def tenants(
    devbox: Devbox, kube: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TenantUser, TenantUser]]:
    directory = tmp_path_factory.mktemp("auth")
    objects = k8s.CustomObjectsApi(kube)
    made = []
    try:
        made.append(make_tenant(devbox, kube, "authz", directory))
        made.append(make_tenant(devbox, kube, "authz-other", directory))
        yield made[0], made[1]
    finally:
        for name in ("authz", "authz-other"):
            with contextlib.suppress(ApiException):
                objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
        for name in ("authz", "authz-other"):
            wait_for(lambda n=name: gone(objects, n), 120, f"Tenant {name} deleted")


def test_a_tenant_user_works_in_its_namespace_and_nowhere_else(
    tenants: tuple[TenantUser, TenantUser],
) -> None:
    user, other = tenants
    whoami = user.kubectl("auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "keystone:stackube:authz"
    assert f"stackube:project:{user.project_id}" in info["groups"]
    assert info["uid"] == user.user_id

    assert user.kubectl("create", "configmap", "settings", "--from-literal=a=b").returncode == 0
    made = user.kubectl("create", "deployment", "web", "--image=nginx")
    assert made.returncode == 0, made.stderr
    assert "settings" in user.kubectl("get", "configmaps").stdout

    for refused in (
        ("-n", other.name, "get", "configmaps"),
        ("-n", "default", "get", "pods"),
        ("-n", "kube-system", "get", "secrets"),
        ("create", "namespace", "not-mine"),
        ("get", "namespaces"),
        ("get", "nodes"),
        ("get", "tenants"),
        (
            "create",
            "clusterrolebinding",
            "me",
            "--clusterrole=cluster-admin",
            "--group=system:authenticated",
        ),
    ):
        done = user.kubectl(*refused)
        assert done.returncode != 0 and "forbidden" in done.stderr.lower(), (refused, done.stderr)

    # What a tenant may see cluster-wide: API discovery and questions about itself.
    assert user.kubectl("api-resources").returncode == 0
    assert user.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert user.kubectl("auth", "can-i", "list", "pods", "-n", other.name).stdout.strip() == "no"

    token_files = list((user.cache_home / "stackube" / "tokens").glob("*.json"))
    assert len(token_files) == 1
    assert stat.S_IMODE(token_files[0].stat().st_mode) == 0o600


def test_invalid_and_revoked_tokens_are_refused(
    devbox: Devbox,
    kube: k8s.ApiClient,
    os_admin: Connection,
    tenants: tuple[TenantUser, TenantUser],
) -> None:
    user, _ = tenants
    assert not review(kube, "gAAAAAnot-a-real-token")
    token, _ = issue_token(user.credentials())
    assert review(kube, token)
    revoked = os_admin.session.delete(
        f"{devbox.settings.keystone_url}/auth/tokens", headers={"X-Subject-Token": token}
    )
    assert revoked.status_code == 204
    wait_for(lambda: not review(kube, token), REVOCATION_WINDOW, "the revoked token to be refused")


def test_a_disabled_user_and_a_user_removed_from_the_project_are_refused(
    kube: k8s.ApiClient, os_admin: Connection, tenants: tuple[TenantUser, TenantUser]
) -> None:
    user, _ = tenants
    token, _ = issue_token(user.credentials())
    assert review(kube, token)
    os_admin.identity.update_user(user.user_id, enabled=False)
    try:
        wait_for(lambda: not review(kube, token), REVOCATION_WINDOW, "a disabled user refused")
    finally:
        os_admin.identity.update_user(user.user_id, enabled=True)

    # Another member of the tenant's project, added and removed by hand (the Tenant's
    # own user would get its role back from the controller: that is its spec).
    guest_password = f"pw-{secrets.token_hex(8)}"
    domain = os_admin.identity.find_domain("stackube")
    guest = os_admin.identity.create_user(
        name=f"guest-{secrets.token_hex(3)}", password=guest_password, domain_id=domain.id
    )
    member = os_admin.identity.find_role("member")
    try:
        os_admin.identity.assign_project_role_to_user(user.project_id, guest.id, member.id)
        token, _ = issue_token(
            Credentials(
                "http://127.0.0.1:5000/v3",
                guest.name,
                guest_password,
                user.name,
                user_domain="stackube",
                project_domain="stackube",
            )
        )
        assert review(kube, token)
        os_admin.identity.unassign_project_role_from_user(user.project_id, guest.id, member.id)
        wait_for(lambda: not review(kube, token), REVOCATION_WINDOW, "a removed member refused")
    finally:
        os_admin.identity.delete_user(guest.id)


def test_keystone_down_fails_closed_and_recovers(
    devbox: Devbox, kube: k8s.ApiClient, tenants: tuple[TenantUser, TenantUser]
) -> None:
    user, _ = tenants
    token, _ = issue_token(user.credentials())
    devbox.table.stop("keystone")
    try:
        # Never seen before, so not cached anywhere: Keystone must answer, and cannot.
        assert not review(kube, token)
    finally:
        devbox.up()
    wait_for(lambda: review(kube, token), 30, "the token accepted again once Keystone is back")


def test_no_token_or_password_in_any_log(
    devbox: Devbox, tenants: tuple[TenantUser, TenantUser]
) -> None:
    user, other = tenants
    token, _ = issue_token(user.credentials())
    logs = "".join(
        devbox.table.log_file(name).read_text(errors="replace")
        for name in ("stackube-auth", "stackube-controller", "kube-apiserver")
    )
    cached = [
        json.loads(p.read_text())["token"]
        for p in (user.cache_home / "stackube" / "tokens").glob("*.json")
    ]
    for secret in [user.password, other.password, token, *cached]:
        assert secret not in logs
    assert yaml.safe_load(user.kubeconfig.read_text())  # and the kubeconfig holds none:
    assert user.password not in user.kubeconfig.read_text()
