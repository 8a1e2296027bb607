import pytest

from stackube.devbox import gobuild

pytestmark = pytest.mark.unit

KUBE_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
	github.com/spf13/cobra v1.10.2
	k8s.io/api v0.0.0
	k8s.io/client-go v0.0.0
	k8s.io/streaming v0.0.0
	k8s.io/utils v0.0.0-20260108192941-914a6e750570
)

replace k8s.io/api => ./staging/src/k8s.io/api
"""


def test_staging_modules_are_exactly_the_v0_0_0_k8s_requirements() -> None:
    assert gobuild.staging_modules(KUBE_GO_MOD) == [
        "k8s.io/api",
        "k8s.io/client-go",
        "k8s.io/streaming",
    ]


@pytest.mark.parametrize(
    ("kube", "staging"), [("v1.37.2", "v0.37.2"), ("v1.34.0", "v0.34.0"), ("v1.9.11", "v0.9.11")]
)
def test_staging_version_follows_the_kubernetes_release(kube: str, staging: str) -> None:
    assert gobuild.staging_version(kube) == staging


@pytest.mark.parametrize("bad", ["1.37.2", "v1.37", "v2.0.0", "v1.37.2-rc.1", ""])
def test_staging_version_rejects_non_release_versions(bad: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes release"):
        gobuild.staging_version(bad)


def test_kubernetes_plan_replaces_every_staging_module_and_stamps_the_version() -> None:
    plan = gobuild.kubernetes_plan("v1.37.2", KUBE_GO_MOD, ["kube-apiserver"])
    lines = plan.go_mod.splitlines()
    assert "go 1.26.0" in lines
    assert "require k8s.io/kubernetes v1.37.2" in lines
    for module in ("k8s.io/api", "k8s.io/client-go", "k8s.io/streaming"):
        assert f"replace {module} => {module} v0.37.2" in lines
    assert not any("k8s.io/utils" in line for line in lines)
    assert "version.gitVersion=v1.37.2" in plan.ldflags
    assert "version.gitMinor=37" in plan.ldflags
    assert plan.programs == (
        gobuild.GoProgram("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
    )


def test_default_plan_builds_the_control_plane_and_kubelet() -> None:
    names = [p.name for p in gobuild.kubernetes_plan("v1.37.2", KUBE_GO_MOD).programs]
    assert names == ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"]


def test_etcd_plan_builds_the_server_module_main_package() -> None:
    plan = gobuild.etcd_plan("v3.6.16", "module go.etcd.io/etcd/server/v3\n\ngo 1.26.0\n")
    assert "require go.etcd.io/etcd/server/v3 v3.6.16" in plan.go_mod.splitlines()
    assert plan.programs[0].package == "go.etcd.io/etcd/server/v3"


def test_tools_go_imports_each_program_under_a_build_tag() -> None:
    text = gobuild.tools_go(
        [gobuild.GoProgram("a", "example.com/a"), gobuild.GoProgram("b", "example.com/b")]
    )
    assert text.startswith("//go:build tools\n")
    assert '\t_ "example.com/a"\n' in text
    assert '\t_ "example.com/b"\n' in text


def test_coredns_plan_builds_the_released_main_package() -> None:
    plan = gobuild.coredns_plan("v1.14.7", "module github.com/coredns/coredns\n\ngo 1.25.0\n")
    assert "require github.com/coredns/coredns v1.14.7" in plan.go_mod.splitlines()
    assert "go 1.25.0" in plan.go_mod.splitlines()
    assert plan.programs == (gobuild.GoProgram("coredns", "github.com/coredns/coredns"),)
