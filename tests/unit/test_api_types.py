import pytest

from stackube.api import types

pytestmark = pytest.mark.unit


def tenant(spec: dict[str, object], name: str = "test") -> dict[str, object]:
    return {"metadata": {"name": name}, "spec": spec}


def network(
    spec: dict[str, object], name: str = "test", namespace: str = "test"
) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


def test_the_seed_tenant_parses() -> None:
    spec = types.parse_tenant(tenant({"username": "test", "password": "password"}))
    assert spec == types.TenantSpec("test", "test", "password")
    assert not spec.adopts_project


def test_secret_ref_and_adoption() -> None:
    spec = types.parse_tenant(
        tenant(
            {
                "username": "u",
                "passwordSecretRef": {"namespace": "kube-system", "name": "s"},
                "tenantID": "0123456789abcdef0123456789abcdef",
            }
        )
    )
    assert spec.password_secret_ref == types.SecretRef("kube-system", "s", "password")
    assert spec.adopts_project


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (tenant({"password": "p"}), "spec.username"),
        (tenant({"username": "a b", "password": "p"}), "spec.username"),
        (tenant({"username": "u"}), "spec.password"),
        (
            tenant(
                {
                    "username": "u",
                    "password": "p",
                    "passwordSecretRef": {"namespace": "n", "name": "s"},
                }
            ),
            "only one",
        ),
        (tenant({"username": "u", "password": "p", "tenantID": "nope"}), "spec.tenantID"),
        (tenant({"username": "u", "password": "p"}, name="Bad_Name"), "metadata.name"),
        (tenant({"username": "u", "password": "p"}, name="a" * 64), "metadata.name"),
        (tenant({"username": "u", "password": "p"}, name="kube-system"), "reserved"),
        (tenant({"username": "u", "password": "p"}, name="default"), "reserved"),
        (tenant({"username": "u", "password": "p"}, name="stackube-dns"), "reserved"),
        (tenant({"username": "u", "password": "p", "podSecurity": "privileged"}), "podSecurity"),
    ],
)
def test_bad_tenants_are_refused_naming_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(types.SpecError, match=field.replace(".", r"\.")):
        types.parse_tenant(body)


def test_pod_security_defaults_to_baseline_and_always_reports_restricted() -> None:
    seed = types.parse_tenant(tenant({"username": "u", "password": "p"}))
    strict = types.parse_tenant(
        tenant({"username": "u", "password": "p", "podSecurity": "restricted"})
    )
    assert (seed.pod_security, strict.pod_security) == ("baseline", "restricted")
    labels = types.pod_security_labels("baseline")
    assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert types.pod_security_labels("restricted")["pod-security.kubernetes.io/enforce"] == (
        "restricted"
    )


def test_the_seed_network_parses() -> None:
    spec = types.parse_network(
        network({"cidr": "10.244.0.0/16", "gateway": "10.244.0.1", "networkID": ""})
    )
    assert spec == types.NetworkSpec("test", "test", "10.244.0.0/16", "10.244.0.1", None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cidr": "10.244.0.0/33"}, "spec.cidr"),
        ({"cidr": "10.244.0.1/16"}, "spec.cidr"),
        ({"cidr": "10.244.0.0/16", "gateway": "10.245.0.1"}, "spec.gateway"),
        ({"cidr": "10.244.0.0/16", "gateway": "10.244.0.0"}, "spec.gateway"),
        ({"cidr": "10.244.0.0/16", "gateway": "not-an-ip"}, "spec.gateway"),
        ({"cidr": "10.244.0.0/31"}, "too small"),
        ({}, "spec.cidr is required"),
        ({"networkID": "xyz"}, "spec.networkID"),
    ],
)
def test_bad_networks_are_refused_naming_the_field(spec: dict[str, object], message: str) -> None:
    with pytest.raises(types.SpecError, match=message.replace(".", r"\.")):
        types.parse_network(network(spec))


def test_adopted_network_needs_no_cidr() -> None:
    spec = types.parse_network(network({"networkID": "0a1b2c3d-0000-4000-8000-123456789abc"}))
    assert spec.adopts_network and spec.cidr is None


def test_ipv6_networks_are_accepted() -> None:
    spec = types.parse_network(network({"cidr": "fd00:10::/64", "gateway": "fd00:10::1"}))
    assert spec.cidr == "fd00:10::/64"


def test_the_object_index_follows_a_watch() -> None:
    from stackube.api.objects import ObjectIndex  # noqa: PLC0415

    index = ObjectIndex()
    svc = {"metadata": {"namespace": "a", "name": "web"}}
    assert index.apply(None, svc) == "a" and index.in_namespace("a") == [svc]
    assert index.in_namespace("b") == [] and index.namespaces() == {"a"}
    assert index.apply(svc, None) == "a" and index.in_namespace() == []
    assert index.apply(None, None) is None
