"""The tenant DNS objects, the API paths we apply them to, and their configuration."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stackube.config import parse_config
from stackube.controller import dns
from stackube.kube.apply import object_path

pytestmark = pytest.mark.unit

SETTINGS = dns.DnsSettings(image="coredns/coredns:1.14.7", apiserver_url="https://192.0.2.9:6443")


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["kind"]: o for o in objects}


def test_corefile_answers_for_the_namespace_only_and_forwards_nowhere() -> None:
    text = dns.corefile("team-a", SETTINGS)
    assert "namespaces team-a\n" in text
    assert "kubernetes cluster.local in-addr.arpa ip6.arpa {" in text
    assert f".:{dns.DNS_LISTEN_PORT} {{" in text
    assert "forward" not in text
    assert f"kubeconfig {dns.CONFIG_DIR}/kubeconfig" in text


def test_without_an_apiserver_address_coredns_uses_its_in_cluster_config() -> None:
    settings = dns.DnsSettings(image="x")
    assert "kubeconfig" not in dns.corefile("a", settings)
    config_map = by_kind(dns.dns_objects("a", "p", settings))["ConfigMap"]
    assert set(config_map["data"]) == {"Corefile"}


def test_kubeconfig_uses_the_pods_service_account_token() -> None:
    doc = yaml.safe_load(dns.kubeconfig("https://192.0.2.9:6443"))
    assert doc["clusters"][0]["cluster"]["server"] == "https://192.0.2.9:6443"
    assert doc["users"][0]["user"]["tokenFile"].endswith("/serviceaccount/token")
    assert doc["clusters"][0]["cluster"]["certificate-authority"].endswith("/ca.crt")


def test_objects_live_in_the_dns_namespace_named_after_the_tenant() -> None:
    objects = by_kind(dns.dns_objects("team-a", "p1", SETTINGS))
    # No ServiceAccount: the shared one is shipped with the controller's RBAC, outside
    # every tenant namespace (a tenant could use any credential of its own namespace).
    assert set(objects) == {"ConfigMap", "Service", "Deployment"}
    for kind in objects:
        assert objects[kind]["metadata"]["namespace"] == "stackube-dns"
        assert objects[kind]["metadata"]["name"] == "team-a"
    pod = objects["Deployment"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == "tenant-dns"
    # The CNI daemon puts the pod on the network of the tenant this label names.
    assert pod["metadata"]["labels"]["stackube.kubernetes.io/tenant"] == "team-a"
    assert pod["spec"]["volumes"] == [{"name": "config", "configMap": {"name": "team-a"}}]
    refs = dns.dns_references("team-a")
    assert [(r["kind"], r["metadata"]["namespace"], r["metadata"]["name"]) for r in refs] == [
        ("Deployment", "stackube-dns", "team-a"),
        ("Service", "stackube-dns", "team-a"),
        ("ConfigMap", "stackube-dns", "team-a"),
    ]
    assert {(r["apiVersion"], r["kind"]) for r in refs} == {
        (o["apiVersion"], o["kind"]) for o in objects.values()
    }


def test_the_pod_meets_the_restricted_pod_security_level() -> None:
    pod = by_kind(dns.dns_objects("a", "p", SETTINGS))["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["runAsNonRoot"] is True


def test_service_maps_port_53_to_the_unprivileged_listener() -> None:
    objects = by_kind(dns.dns_objects("a", "p", SETTINGS))
    ports = {
        (p["protocol"], p["port"], p["targetPort"]) for p in objects["Service"]["spec"]["ports"]
    }
    assert ports == {("UDP", 53, "dns"), ("TCP", 53, "dns-tcp")}
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "dns": dns.DNS_LISTEN_PORT,
        "dns-tcp": dns.DNS_LISTEN_PORT,
        "ready": dns.DNS_READY_PORT,
        "health": dns.DNS_HEALTH_PORT,
    }
    # Ready when CoreDNS answers (its `ready` plugin), through the CNI probe relay.
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "ready"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "health"}
    assert f"ready :{dns.DNS_READY_PORT}" in objects["ConfigMap"]["data"]["Corefile"]
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert pod["dnsPolicy"] == "Default"
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert objects["Service"]["spec"]["selector"] == selector
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_a_changed_configuration_changes_the_pod_template() -> None:
    def template_annotations(settings: dns.DnsSettings) -> dict[str, str]:
        deployment = by_kind(dns.dns_objects("a", "p", settings))["Deployment"]
        return dict(deployment["spec"]["template"]["metadata"]["annotations"])

    moved = dns.DnsSettings(image=SETTINGS.image, apiserver_url="https://192.0.2.10:6443")
    assert template_annotations(SETTINGS) == template_annotations(SETTINGS)
    assert template_annotations(SETTINGS) != template_annotations(moved)


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "n"}},
            "/api/v1/namespaces/n/configmaps/c",
        ),
        (
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "d", "namespace": "n"},
            },
            "/apis/apps/v1/namespaces/n/deployments/d",
        ),
        (
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                "metadata": {"name": "b"},
            },
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/b",
        ),
    ],
)
def test_object_path(doc: dict[str, Any], path: str) -> None:
    assert object_path(doc) == path


def test_object_path_refuses_unknown_kinds() -> None:
    with pytest.raises(ValueError, match="Pod"):
        object_path({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}})


def test_config_gives_the_pod_apiserver_url_from_the_seed_keys() -> None:
    base = {"auth-url": "http://k/v3", "username": "u", "password": "p", "tenant-name": "t"}
    assert parse_config(base).pod_apiserver_url is None
    config = parse_config({**base, "kubernetes-host": "192.0.2.9", "dns-image": "my/dns:1"})
    assert config.pod_apiserver_url == "https://192.0.2.9:6443"
    assert config.dns_image == "my/dns:1"


def test_the_dns_objects_are_owned_by_their_tenant() -> None:
    for obj in dns.dns_objects("team-a", "p1", SETTINGS, tenant_uid="u-1"):
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "stackube.kubernetes.io/v1",
            "kind": "Tenant",
            "name": "team-a",
            "uid": "u-1",
            "blockOwnerDeletion": False,
        }
    assert all("ownerReferences" not in o["metadata"] for o in dns.dns_objects("a", "p", SETTINGS))


def test_a_tenants_dns_is_ready_once_its_deployment_has_an_available_replica() -> None:
    assert dns.dns_readiness("t", None) == (
        False,
        "waiting for the tenant's DNS server (Deployment stackube-dns/t is not there yet)",
    )
    ready, message = dns.dns_readiness("t", (0, 1))
    assert not ready and "0/1 ready" in message and "describe deployment t" in message
    assert dns.dns_readiness("t", (1, 1))[0]
