"""Stackube's Helm chart (deploy/helm/stackube, made from deploy/'s kustomization):
helm lints it, renders exactly the kustomization's objects with its default values, and
the API server accepts an install with the devbox's image and configuration (dry run:
the devbox's own components keep running)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stackube.devbox import helm
from stackube.devbox.box import Devbox
from tests.e2e.kubectl import Kubectl

pytestmark = pytest.mark.e2e

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CHART = DEPLOY / "helm" / "stackube"
KEEP = "helm.sh/resource-policy"


def objects(text: str) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(text) if doc]
    return sorted(
        docs,
        key=lambda d: (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]),
    )


@pytest.fixture(scope="module")
def helm_binary(devbox: Devbox) -> str:
    return str(helm.ensure(devbox.settings))


def run_helm(devbox: Devbox, binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    kubeconfig = devbox.settings.kube_dir / "admin.kubeconfig"
    return subprocess.run(
        [binary, f"--kubeconfig={kubeconfig}", *args], capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip


def test_the_chart_lints_and_renders_the_kustomizations_objects(
    devbox: Devbox, kubectl: Kubectl, helm_binary: str
) -> None:
    linted = run_helm(devbox, helm_binary, "lint", str(CHART))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    rendered = run_helm(
        devbox, helm_binary, "template", "stackube", str(CHART), "--namespace=kube-system",
        "--include-crds",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    kustomized = kubectl.run("kustomize", str(DEPLOY)).stdout
    charted = objects(rendered.stdout)
    # The one difference: what an uninstall keeps carries Helm's keep policy too.
    kept = [d for d in charted if d["metadata"].get("annotations", {}).pop(KEEP, None) == "keep"]
    assert sorted(d["kind"] for d in kept) == [
        "ClusterRole", "ClusterRoleBinding", "Namespace", "ServiceAccount"
    ]  # fmt: skip
    for doc in charted:
        if doc["metadata"].get("annotations") == {}:
            del doc["metadata"]["annotations"]
    assert charted == objects(kustomized)
    # Positive control: a value changes what is rendered.
    changed = run_helm(
        devbox, helm_binary, "template", "stackube", str(CHART), "--namespace=kube-system",
        "--set=image.digest=sha256:" + "0" * 64, "--set=replicas.stackube-controller=3",
    )  # fmt: skip
    deployments = {
        d["metadata"]["name"]: d for d in objects(changed.stdout) if d["kind"] == "Deployment"
    }
    controller = deployments["stackube-controller"]
    assert controller["spec"]["replicas"] == 3
    image = controller["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "localhost/stackube@sha256:" + "0" * 64


def test_the_chart_with_the_devboxs_values_is_accepted_by_the_api_server(
    devbox: Devbox, kubectl: Kubectl, helm_binary: str, tmp_path: Path
) -> None:
    """Rendered with the devbox's configuration and credentials, every object passes the
    API server's strict validation (dry run). (`helm install` itself refuses objects it
    does not own, and this devbox made Stackube's objects already: a real install needs
    the devbox that deploys with the chart, issue 15's next step.)"""
    stackube = devbox.settings.state_dir / "stackube"
    values = {
        "config": {p.name: p.read_text().strip() for p in sorted((stackube / "config").iterdir())},
        "credentials": {
            p.name: p.read_text().strip() for p in sorted((stackube / "secret").iterdir())
        },
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    values_file.chmod(0o600)
    rendered = run_helm(
        devbox, helm_binary, "template", "stackube", str(CHART), "--namespace=kube-system",
        f"--values={values_file}", "--include-crds",
    )  # fmt: skip
    assert rendered.returncode == 0, rendered.stderr
    assert f"auth-url: {devbox.settings.keystone_url}" in rendered.stdout
    applied = kubectl.run(
        "apply", "--dry-run=server", "--validate=strict", "-f", "-", stdin=rendered.stdout,
        check=False,
    )  # fmt: skip
    assert applied.returncode == 0, applied.stderr
