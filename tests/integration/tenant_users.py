"""Tenants made by the devbox's own controller, and their Keystone users logging in to
Kubernetes through the real token webhook with `stackube login` (as kubectl does)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from stackube.api.types import GROUP, VERSION
from stackube.devbox.box import Devbox
from stackube.openstack.cloud import Credentials

# Passwords and tokens the tests handed out: no devbox log may hold them (checked by
# test_zy_secrets_in_logs, after the other modules).
SEEN_SECRETS: set[str] = set()


def remember_secret(value: str) -> str:
    SEEN_SECRETS.add(value)
    return value


@dataclass
class TenantUser:
    name: str  # the tenant's (its namespace and Keystone project)
    password: str
    project_id: str
    user_id: str
    kubeconfig: Path
    cache_home: Path
    username: str = ""  # the Keystone user, when not the tenant's own

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.kubectl_with_password(self.password, *args, stdin=stdin)

    def kubectl_with_password(
        self, password: str, *args: str, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = tenant_env(self.kubeconfig, self.cache_home, password)
        done = subprocess.run(
            ["kubectl", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
            input=stdin,
        )
        # The tokens `stackube login` got for kubectl went through kube-apiserver and the
        # webhook: no log may show them either.
        for cached in (self.cache_home / "stackube" / "tokens").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                remember_secret(str(json.loads(cached.read_text())["token"]))
        return done

    def credentials(self) -> Credentials:
        return Credentials(
            "http://127.0.0.1:5000/v3",
            self.username or self.name,
            self.password,
            self.name,
            user_domain="stackube",
            project_domain="stackube",
        )


def tenant_env(kubeconfig: Path, home: Path, password: str) -> dict[str, str]:
    """kubectl's environment as a tenant's user: this kubeconfig, this password, a home
    (token cache) of its own, and `stackube` (the kubeconfig's credential plugin) as
    installed beside this interpreter, whatever PATH the tests were started with."""
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "KUBECONFIG": str(kubeconfig),
        "OS_PASSWORD": password,
        "XDG_CACHE_HOME": str(home),
        "HOME": str(home),
    }


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s: {what}")


def make_tenant(devbox: Devbox, kube: k8s.ApiClient, name: str, directory: Path) -> TenantUser:
    password = remember_secret(f"pw-{secrets.token_hex(8)}")
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": name},
        "spec": {"username": name, "password": password},
    }
    objects = k8s.CustomObjectsApi(kube)
    objects.create_cluster_custom_object(GROUP, VERSION, "tenants", body)

    def usable() -> bool:
        """Active, or all but its DNS server, which this tier's cordoned node never runs
        (the Tenant waits for it: the e2e tier shows it becoming Active)."""
        status = objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name).get(
            "status", {}
        )
        if status.get("state") == "Active":
            return True
        try:
            network = objects.get_namespaced_custom_object(GROUP, VERSION, name, "networks", name)
        except k8s.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(
            status.get("userID")
            and (network.get("status") or {}).get("state") == "Active"
            and "waiting for the tenant's DNS server" in str(status.get("message"))
        )

    wait_for(usable, 90, f"Tenant {name} usable (the devbox's controller makes it)")
    status = objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)["status"]
    kubeconfig, cache_home = login_files(devbox, name, name, directory)
    return TenantUser(name, password, status["projectID"], status["userID"], kubeconfig, cache_home)


def login_files(devbox: Devbox, tenant: str, username: str, directory: Path) -> tuple[Path, Path]:
    """`stackube kubeconfig` for this Keystone user of the tenant, and a home of its own
    (where `stackube login` caches its token)."""
    kubeconfig = directory / f"{tenant}-{username}.kubeconfig"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "stackube",
            "kubeconfig",
            f"--tenant={tenant}",
            f"--username={username}",
            f"--server={devbox.settings.apiserver_url}",
            f"--certificate-authority={devbox.settings.pki_dir / 'ca.crt'}",
            f"--auth-url={devbox.settings.keystone_url}",
            f"--output={kubeconfig}",
        ],
        check=True,
    )
    cache_home = directory / f"{tenant}-{username}-home"
    cache_home.mkdir()
    return kubeconfig, cache_home


def gone(objects: k8s.CustomObjectsApi, name: str) -> bool:
    try:
        objects.get_cluster_custom_object(GROUP, VERSION, "tenants", name)
    except ApiException as exc:
        return exc.status == 404
    return False


def review(kube: k8s.ApiClient, token: str) -> bool:
    body = k8s.V1TokenReview(spec=k8s.V1TokenReviewSpec(token=token))
    result = k8s.AuthenticationV1Api(kube).create_token_review(body)
    return bool(result.status.authenticated)
