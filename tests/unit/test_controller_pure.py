"""Pure pieces of the controller: configuration, names, RBAC, conditions, error kinds."""

import pytest
import requests
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from stackube import config
from stackube.api import naming
from stackube.api.conditions import set_condition
from stackube.controller import rbac
from stackube.controller.operator import retry_delay
from stackube.errors import NotFoundError, PermanentError, TemporaryError
from stackube.openstack.errors import translate

pytestmark = pytest.mark.unit

SEED = {
    "auth-url": "https://192.168.128.66/identity_admin/v2.0",
    "username": "admin",
    "password": "admin",
    "tenant-name": "admin",
    "region": "RegionOne",
    "ext-net-id": "550370a3-4fc2-4494-919d-cae33f5b3de8",
    "plugin-name": "ovs",
    "integration-bridge": "br-int",
    "user-cidr": "10.244.0.0/16",
    "user-gateway": "10.244.0.1",
    "kubernetes-host": "192.168.0.33",
    "kubernetes-port": "6443",
    "keyring": "AQBZU5lZ/Z7lEBAAJuC17RYjjqIUANs2QVn7pw==",
}


def test_the_seed_configmap_is_accepted_with_warnings() -> None:
    parsed = config.parse_config(SEED)
    assert parsed.auth_url == "https://192.168.128.66/identity_admin/v3"
    assert parsed.ext_net_id == "550370a3-4fc2-4494-919d-cae33f5b3de8"
    assert parsed.kubernetes_port == 6443
    assert any("Secret" in w for w in parsed.warnings)
    assert any("v2.0" in w for w in parsed.warnings)


def test_secret_values_win_and_are_never_in_repr() -> None:
    data = {k: v for k, v in SEED.items() if k not in ("password", "keyring")}
    parsed = config.parse_config(data, {"password": "s3cret", "keyring": "K3Y"})
    assert parsed.password == "s3cret"
    assert not any("Secret" in w for w in parsed.warnings)
    assert "s3cret" not in repr(parsed) and "K3Y" not in repr(parsed)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"auth-url": ""}, "missing configuration keys: auth-url"),
        ({"bogus": "1"}, "unknown configuration keys: bogus"),
        ({"user-gateway": "10.0.0.1"}, "user-cidr/user-gateway"),
        ({"kubernetes-port": "http"}, "kubernetes-port"),
    ],
)
def test_bad_configuration_names_the_key(change: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse_config({**SEED, **change})


def test_names_follow_the_seed() -> None:
    assert naming.neutron_name("test", "test") == "kube-test-test"
    assert naming.project_group("abc") == "stackube:project:abc"


def test_tenant_rbac_binds_admin_in_the_namespace_to_the_project_group_only() -> None:
    binding = rbac.tenant_role_binding("test", "p1")
    assert binding["kind"] == "RoleBinding"
    assert binding["metadata"]["namespace"] == "test"
    assert binding["roleRef"]["name"] == "admin"
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "stackube:project:p1"}
    ]


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = set_condition(
        [], type_="Ready", status=False, reason="A", message="m", generation=1, now="t1"
    )
    same = set_condition(
        first, type_="Ready", status=False, reason="B", message="n", generation=2, now="t2"
    )
    flipped = set_condition(
        same, type_="Ready", status=True, reason="C", message="o", generation=2, now="t3"
    )
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "B"
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["status"] == "True"
    other = set_condition(
        flipped, type_="NetworkReady", status=True, reason="D", message="", generation=2, now="t4"
    )
    assert [c["type"] for c in other] == ["Ready", "NetworkReady"]


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (sdk.HttpException(message="boom", http_status=503), TemporaryError),
        (sdk.HttpException(message="slow down", http_status=429), TemporaryError),
        (
            sdk.HttpException(message="Quota exceeded for resources: ['network']", http_status=409),
            PermanentError,
        ),
        (sdk.HttpException(message="conflict", http_status=409), TemporaryError),
        (sdk.HttpException(message="bad request", http_status=400), PermanentError),
        (sdk.NotFoundException(message="gone", http_status=404), NotFoundError),
        (ksa.ConnectFailure("refused"), TemporaryError),
        (requests.ConnectionError("reset"), TemporaryError),
        (ksa.Unauthorized("no"), PermanentError),
    ],
)
def test_openstack_errors_are_classified(exc: Exception, kind: type[Exception]) -> None:
    translated = translate(exc, "doing a thing")
    assert type(translated) is kind
    assert str(translated).startswith("doing a thing: ")


def test_backoff_doubles_to_a_minute_unless_a_delay_is_asked_for() -> None:
    assert [retry_delay(r, None) for r in range(9)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(8, 1.0) == 1.0
