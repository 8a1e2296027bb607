"""Uninstalling and installing Stackube as an operator does (issue 15), last in the e2e
tier because it takes Stackube away for a while: `kubectl delete -k` and `helm
uninstall` leave only what is labelled to stay (the CRDs, hence Tenants and Networks,
and stackube-dns); the seed's three files and `helm install` each install a Stackube
that serves a tenant. The devbox's own deployment is put back afterwards (`up`)."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from openstack.connection import Connection

from stackube.api.types import KEEP_ON_UNINSTALL
from stackube.devbox import helm
from stackube.devbox.box import Devbox
from stackube.devbox.components import COMPONENTS, HELM_PLUGIN, NAMESPACE, PodComponents
from tests.e2e.kubectl import Kubectl, eventually
from tests.e2e.test_user_guide import delete_tenants, make_tenant, running_pods

pytestmark = pytest.mark.e2e

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "stackube"

Ref = tuple[str, str, str]  # (kind.group, namespace, name)


def refs(rendered: str) -> dict[Ref, dict[str, Any]]:
    found = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            group = doc["apiVersion"].rpartition("/")[0]
            kind = doc["kind"].lower() + (f".{group}" if group else "")
            found[(kind, doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = doc
    return found


def exists(kubectl: Kubectl, ref: Ref) -> bool:
    kind, namespace, name = ref
    where = ["-n", namespace] if namespace else []
    done = kubectl.run(*where, "get", f"{kind}/{name}", "--ignore-not-found", "-o", "name")
    return bool(done.stdout.strip())


def helm_env(home: Path) -> dict[str, str]:
    """Helm's own directories in `home` (plugins, configuration, cache)."""
    return {
        **os.environ,
        **{f"HELM_{what}": str(home / what.lower()) for what in
           ("PLUGINS", "CONFIG_HOME", "DATA_HOME", "CACHE_HOME")},
    }  # fmt: skip


def run_helm(devbox: Devbox, tmp_path: Path, *args: str) -> None:
    """helm (built from the Go module proxy) with its own directories under `tmp_path`."""
    done = subprocess.run(
        [str(helm.ensure(devbox.settings)), f"--kubeconfig={devbox.settings.admin_kubeconfig}",
         *args], env=helm_env(tmp_path / "helm"), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def helm_install(devbox: Devbox, components: PodComponents, image: str, tmp_path: Path) -> None:
    """`helm install` of the chart with the devbox's values, its overlay as the
    post-renderer (node paths, one replica, the webhook's TLS)."""
    plugin = components.helm_post_renderer(image, tmp_path)
    run_helm(devbox, tmp_path, "plugin", "install", str(plugin))
    stackube = devbox.settings.state_dir / "stackube"
    repository, _, digest = image.partition("@")
    values = {
        "config": {p.name: p.read_text().strip() for p in (stackube / "config").iterdir()},
        "credentials": {p.name: p.read_text().strip() for p in (stackube / "secret").iterdir()},
        "image": {"repository": repository, "digest": digest},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    values_file.chmod(0o600)
    # --take-ownership: stackube-dns stayed from the install before (not Helm's).
    run_helm(
        devbox, tmp_path, "install", "stackube", str(CHART), "--namespace", NAMESPACE,
        "--take-ownership", f"--values={values_file}", f"--post-renderer={HELM_PLUGIN}",
    )  # fmt: skip


def test_uninstall_keeps_only_what_it_should_and_seed_files_or_helm_install_stackube(
    devbox: Devbox, kubectl: Kubectl, os_admin: Connection, tmp_path: Path
) -> None:
    """delete -k -> only the kept objects; the seed's files -> a new tenant works;
    delete -k -> the tenant stays; helm install -> its pods start in the kept tenant,
    which is then deleted cleanly; helm uninstall -> only the kept objects again."""
    if not devbox.pods_mode:
        pytest.skip("Stackube runs as host processes here (STACKUBE_DEVBOX_COMPONENTS=host)")
    assert kubectl.json("get", "tenants")["items"] == [], "another module left a Tenant"
    components = PodComponents(devbox.settings)
    image = components.image()
    name = f"seed-{secrets.token_hex(3)}"
    objects = refs(kubectl.run("kustomize", str(components.write_overlay(image))).stdout)
    kept = {r for r, doc in objects.items() if doc["metadata"].get("labels", {}).get(
        KEEP_ON_UNINSTALL) == "true"}  # fmt: skip

    def uninstalled() -> None:
        left = {r for r in objects if exists(kubectl, r)}
        assert left == kept, sorted(left - kept)
        pods = kubectl.json("-n", NAMESPACE, "get", "pods")["items"]
        assert not [p for p in pods if p["metadata"]["name"].startswith("stackube-")]

    try:
        assert {r[2] for r in kept} == {
            "tenants.stackube.kubernetes.io", "networks.stackube.kubernetes.io", "stackube-dns"
        }  # fmt: skip
        assert all(exists(kubectl, r) for r in objects)  # control: the check sees them
        components.uninstall()
        uninstalled()
        # The system's Network stays with the CRDs.
        assert kubectl.json("-n", NAMESPACE, "get", "network", "system")["metadata"]

        # The seed's guide: `kubectl create -f` of its three files (here the devbox's
        # copies of them, with its configuration and node paths).
        created = kubectl.run(
            "create", "-k", str(components.write_overlay(image, base="seed")), check=False
        )
        refused = [line for line in created.stderr.splitlines() if line.strip()]
        assert all("AlreadyExists" in line for line in refused), created.stderr
        assert len(refused) == len(kept), created.stderr  # only what stayed
        components.wait_ready(COMPONENTS)
        make_tenant(kubectl, name)
        kubectl.run("-n", name, "run", "nginx", "--image=nginx")
        eventually(lambda: running_pods(kubectl, name, "nginx"), 180, "nginx Running")

        components.uninstall()
        uninstalled()
        assert running_pods(kubectl, name, "nginx"), "the tenant's pod did not outlive Stackube"

        helm_install(devbox, components, image, tmp_path)
        components.wait_ready(COMPONENTS)
        kubectl.run("-n", name, "run", "nginx2", "--image=nginx")
        eventually(lambda: running_pods(kubectl, name, "nginx2"), 180, "nginx2 Running")
        delete_tenants(kubectl, os_admin, [name])  # by the controller Helm installed
        run_helm(devbox, tmp_path, "uninstall", "stackube", "--namespace", NAMESPACE, "--wait")
        uninstalled()
    finally:
        devbox.up()  # the devbox's own deployment again (server-side apply takes them over)
        delete_tenants(kubectl, os_admin, [name])
