from pathlib import Path

import pytest
import yaml

from stackube.api import crds, helm_chart
from stackube.api.manifests import (
    SEED_CONFIG,
    SEED_PROXY,
    SEED_REST,
    admission_policies,
    cni_rbac,
    controller_rbac,
    csi,
    proxy_rbac,
    seed_layout,
)
from stackube.api.types import State

pytestmark = pytest.mark.unit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def test_deployed_files_are_the_generated_ones() -> None:
    regenerate = f"regenerate with `stackube manifests -o {DEPLOY}`"
    for crd in crds.all_crds():
        path = DEPLOY / "crds" / f"{crd['metadata']['name']}.yaml"
        assert yaml.safe_load(path.read_text()) == crd, regenerate
    rbac = [d for d in yaml.safe_load_all((DEPLOY / "controller" / "rbac.yaml").read_text()) if d]
    assert rbac == controller_rbac(), regenerate
    policies = (DEPLOY / "controller" / "admission-policies.yaml").read_text()
    assert [d for d in yaml.safe_load_all(policies) if d] == admission_policies(), regenerate
    cni = [d for d in yaml.safe_load_all((DEPLOY / "cni" / "rbac.yaml").read_text()) if d]
    assert cni == cni_rbac(), regenerate
    proxy = [d for d in yaml.safe_load_all((DEPLOY / "proxy" / "rbac.yaml").read_text()) if d]
    assert proxy == proxy_rbac(), regenerate
    driver = [d for d in yaml.safe_load_all((DEPLOY / "csi" / "csi.yaml").read_text()) if d]
    assert driver == csi(), regenerate


def test_crds_carry_the_protected_group_approval_and_status_subresource() -> None:
    for crd in crds.all_crds():
        assert crd["metadata"]["annotations"]["api-approved.kubernetes.io"].startswith("unapproved")
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        status = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
        assert status["state"]["enum"] == [s.value for s in State]


def test_scopes_match_the_seed() -> None:
    assert crds.tenant_crd()["spec"]["scope"] == "Cluster"
    assert crds.network_crd()["spec"]["scope"] == "Namespaced"


def test_the_seeds_three_files_are_made_from_the_kustomization_and_hold_all_of_it() -> None:
    regenerate = f"regenerate with `stackube manifests -o {DEPLOY}`"
    resources = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    layout = seed_layout(resources, lambda path: (DEPLOY / path).read_text())
    assert set(layout) == {SEED_CONFIG, SEED_PROXY, SEED_REST}
    for name, text in layout.items():
        assert (DEPLOY / name).read_text() == text, regenerate

    def names(text: str) -> list[tuple[str, str, str]]:
        docs = [d for d in yaml.safe_load_all(text) if d]
        return sorted(
            (d["kind"], d["metadata"].get("namespace", ""), d["metadata"]["name"]) for d in docs
        )

    every = names("\n---\n".join((DEPLOY / r).read_text() for r in resources))
    assert names("\n---\n".join(layout.values())) == every
    # The seed's split: its configuration, stackube-proxy, and the rest.
    assert {kind for kind, _, _ in names(layout[SEED_CONFIG])} == {"ConfigMap", "Secret"}
    assert ("DaemonSet", "kube-system", "stackube-proxy") in names(layout[SEED_PROXY])
    rest = names(layout[SEED_REST])
    assert ("DaemonSet", "kube-system", "stackube-proxy") not in rest
    assert ("CustomResourceDefinition", "", "tenants.stackube.kubernetes.io") in rest


def test_the_helm_chart_is_made_from_the_kustomization_and_templates_what_operators_set() -> None:
    regenerate = f"regenerate with `stackube manifests -o {DEPLOY}`"
    resources = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]
    files = helm_chart.chart_files([(path, (DEPLOY / path).read_text()) for path in resources])
    for name, text in files.items():
        assert (DEPLOY / name).read_text() == text, regenerate
    on_disk = {str(p.relative_to(DEPLOY)) for p in (DEPLOY / "helm").rglob("*") if p.is_file()}
    assert on_disk == set(files), regenerate
    values = helm_chart.values_of(files)
    config = [
        d for d in yaml.safe_load_all((DEPLOY / "controller" / "config.yaml").read_text()) if d
    ]
    assert values["config"] == config[0]["data"]  # every seed key, with deploy/'s example
    assert values["replicas"]["stackube-controller"] == 2
    assert values["image"] == {"repository": "localhost/stackube", "tag": "", "digest": ""}
    templates = "".join(text for name, text in files.items() if "/templates/" in name)
    assert "localhost/stackube" not in templates and "__HELM_" not in templates
    assert templates.count('include "stackube.image"') == sum(
        (DEPLOY / path).read_text().count("image: localhost/stackube") for path in resources
    )
    assert {name for name in files if "/crds/" in name} == {
        "helm/stackube/crds/crds-tenants.stackube.kubernetes.io.yaml",
        "helm/stackube/crds/crds-networks.stackube.kubernetes.io.yaml",
    }
