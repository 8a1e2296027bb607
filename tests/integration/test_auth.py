"""stackube-auth on the devbox: Keystone users log in with `stackube login` through the
real kube-apiserver's token webhook, confined to their tenant's namespace."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from openstack.connection import Connection

from stackube.api.types import GROUP, VERSION
from stackube.devbox.box import Devbox
from stackube.openstack.cloud import Credentials
from stackube.openstack.tokens import LoginRefusedError, issue_token, token_revoked
from tests.e2e.kubectl import side_by_side
from tests.integration.tenant_users import (
    TenantUser,
    gone,
    make_tenant,
    remember_secret,
    review,
    wait_for,
)

pytestmark = pytest.mark.integration

# Webhook cache TTL (20 s) + the apiserver's own (10 s), and a margin.
REVOCATION_WINDOW = 40


@pytest.fixture(scope="module")
def tenants(
    devbox: Devbox, kube: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TenantUser, TenantUser]]:
    directory = tmp_path_factory.mktemp("auth")
    objects = k8s.CustomObjectsApi(kube)
    try:
        made = side_by_side(
            lambda name: make_tenant(devbox, kube, name, directory), ["authz", "authz-other"]
        )
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


def test_a_tenant_reads_its_own_networks_and_no_one_elses(
    tenants: tuple[TenantUser, TenantUser],
) -> None:
    user, other = tenants
    mine = user.kubectl("get", "network", user.name, "-o", "json")
    assert mine.returncode == 0, mine.stderr
    network = json.loads(mine.stdout)
    assert network["status"]["state"] == "Active" and network["spec"]["cidr"]
    # ... and its Tenant's state (Tenants are not theirs to read), as the Tenant has it:
    # here waiting for its DNS server, which this tier's cordoned node never runs.
    summary = network["status"]["tenant"]
    assert summary == {
        "state": "Initializing",
        "message": summary["message"],
        "dnsReady": False,
    }, summary
    assert "waiting for the tenant's DNS server" in summary["message"]
    for refused in (
        ("-n", other.name, "get", "networks"),
        ("get", "networks", "--all-namespaces"),
        ("patch", "network", user.name, "--type=merge", "-p", '{"spec":{"cidr":"10.9.0.0/24"}}'),
        ("delete", "network", user.name),
        (
            "patch", "network", user.name, "--subresource=status", "--type=merge",
            "-p", '{"status":{"tenant":{"state":"Active","dnsReady":true}}}',
        ),
    ):  # fmt: skip
        done = user.kubectl(*refused)
        assert done.returncode != 0 and "forbidden" in done.stderr.lower(), (refused, done.stderr)


def as_tenant_elsewhere(
    kubeconfig: Path, home: Path, path: str, *args: str, password: str | None
) -> subprocess.CompletedProcess[str]:
    """kubectl with nothing of this machine's environment: its own HOME, this PATH."""
    env = {"PATH": path, "HOME": str(home), "KUBECONFIG": str(kubeconfig)}
    if password is not None:
        env["OS_PASSWORD"] = password
    return subprocess.run(
        ["kubectl", *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


def test_a_tenant_kubeconfig_works_on_another_machine(
    tenants: tuple[TenantUser, TenantUser], tmp_path: Path
) -> None:
    """Copied to a fresh directory, used with a HOME of its own and a PATH holding only
    kubectl and the stackube console script: it works as the tenant, and holds no
    interpreter path and no secret."""
    user, _ = tenants
    text = user.kubeconfig.read_text()
    assert "python" not in text and sys.executable not in text and user.password not in text
    copied = tmp_path / "laptop" / "config"
    copied.parent.mkdir()
    shutil.copy(user.kubeconfig, copied)
    home = tmp_path / "home"
    home.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kubectl").symlink_to(shutil.which("kubectl") or "kubectl")
    done = as_tenant_elsewhere(copied, home, str(bin_dir), "get", "pods", password=user.password)
    # Positive control: without stackube on PATH, kubectl cannot log in, and says how.
    assert done.returncode != 0 and "pip install" in done.stderr, done.stderr
    (bin_dir / "stackube").symlink_to(Path(sys.executable).with_name("stackube"))
    done = as_tenant_elsewhere(
        copied, home, str(bin_dir), "auth", "whoami", "-o", "json", password=user.password
    )
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)["status"]["userInfo"]
    assert info["username"] == f"keystone:stackube:{user.name}"
    assert list((home / ".cache" / "stackube" / "tokens").glob("*.json"))


def test_login_errors_say_whose_credentials_failed_and_what_to_do(
    devbox: Devbox, tenants: tuple[TenantUser, TenantUser], tmp_path: Path
) -> None:
    user, _ = tenants
    path = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"
    wrong = as_tenant_elsewhere(user.kubeconfig, tmp_path, path, "get", "pods", password="nope")
    assert wrong.returncode != 0
    assert f"refused the login of user '{user.name}' (domain 'stackube')" in wrong.stderr
    assert "OS_PASSWORD" in wrong.stderr and "Stackube's credentials" not in wrong.stderr
    assert "Traceback" not in wrong.stderr
    missing = as_tenant_elsewhere(user.kubeconfig, tmp_path, path, "get", "pods", password=None)
    assert missing.returncode != 0 and "no password: set OS_PASSWORD" in missing.stderr
    # A kubeconfig naming the wrong domain: the message names it, and the right one.
    other_domain = tmp_path / "default-domain.kubeconfig"
    subprocess.run(
        [
            sys.executable, "-m", "stackube", "kubeconfig", f"--tenant={user.name}",
            f"--server={devbox.settings.apiserver_url}",
            f"--certificate-authority={devbox.settings.pki_dir / 'ca.crt'}",
            f"--auth-url={devbox.settings.keystone_url}", "--domain=Default",
            f"--output={other_domain}",
        ],
        check=True,
    )  # fmt: skip
    pw = user.password
    domain = as_tenant_elsewhere(other_domain, tmp_path, path, "get", "pods", password=pw)
    assert domain.returncode != 0
    assert f"user '{user.name}' (domain 'Default')" in domain.stderr
    assert "domain 'stackube'" in domain.stderr
    # Positive control: the same calls with the right password and domain work.
    right = as_tenant_elsewhere(user.kubeconfig, tmp_path, path, "get", "pods", password=pw)
    assert right.returncode == 0, right.stderr


def test_a_revoked_cached_token_is_replaced_on_the_next_call(
    devbox: Devbox, os_admin: Connection, tenants: tuple[TenantUser, TenantUser]
) -> None:
    """A token revoked in Keystone (as a password change or a removed role revokes it)
    while `stackube login` still caches it: the next kubectl call works, no --forget."""
    user, _ = tenants
    assert user.kubectl("get", "pods").returncode == 0
    (cached,) = (user.cache_home / "stackube" / "tokens").glob("*.json")
    old = json.loads(cached.read_text())["token"]
    revoked = os_admin.session.delete(
        f"{devbox.settings.keystone_url}/auth/tokens", headers={"X-Subject-Token": old}
    )
    assert revoked.status_code == 204
    assert token_revoked(devbox.settings.keystone_url, old)  # the test can fail
    done = user.kubectl("get", "pods")
    assert done.returncode == 0, done.stderr
    new = remember_secret(json.loads(cached.read_text())["token"])
    assert new != old and not token_revoked(devbox.settings.keystone_url, new)


def test_a_password_rotation_needs_only_the_new_password(
    kube: k8s.ApiClient, tenants: tuple[TenantUser, TenantUser], tmp_path: Path
) -> None:
    """The Tenant's password changed: kubectl with the new OS_PASSWORD works on its next
    call; with the old one, kept token and all, it says whose login Keystone refused."""
    user, _ = tenants
    assert user.kubectl("get", "pods").returncode == 0  # a token kept, got with the old
    old, new = user.password, remember_secret(f"pw-{secrets.token_hex(8)}")
    k8s.CustomObjectsApi(kube).patch_cluster_custom_object(
        GROUP, VERSION, "tenants", user.name, {"spec": {"password": new}}
    )

    def works(password: str) -> bool:
        try:
            issue_token(replace(user.credentials(), password=password))
        except LoginRefusedError:
            return False
        return True

    wait_for(lambda: works(new), 90, "the controller to set the new password")
    assert not works(old)  # the test can fail: the old one is refused now
    user.password = new
    done = user.kubectl("get", "pods")
    assert done.returncode == 0, done.stderr
    # Someone who has not heard of the change: the token kept with the old password
    # was revoked with it, so the login is tried, and refused by name.
    stale = user.kubectl_with_password(old, "get", "pods")
    assert stale.returncode != 0
    assert f"refused the login of user '{user.name}'" in stale.stderr, stale.stderr


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
    names = ("stackube-auth", "stackube-controller", "kube-apiserver")
    read = {name: devbox.service_log(name) for name in names}
    assert all(text.strip() for text in read.values()), "a log was empty: nothing was checked"
    logs = "".join(read.values())
    cached = [
        json.loads(p.read_text())["token"]
        for p in (user.cache_home / "stackube" / "tokens").glob("*.json")
    ]
    for secret in [user.password, other.password, token, *cached]:
        assert secret not in logs
    assert yaml.safe_load(user.kubeconfig.read_text())  # and the kubeconfig holds none:
    assert user.password not in user.kubeconfig.read_text()
