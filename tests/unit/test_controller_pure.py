"""Pure pieces of the controller: configuration, names, RBAC, conditions, error kinds."""

from collections.abc import Callable

import pytest
import requests
from keystoneauth1 import exceptions as ksa
from openstack import exceptions as sdk

from stackube import config
from stackube.api import naming
from stackube.api.conditions import set_condition
from stackube.api.types import parse_network
from stackube.controller import rbac, system
from stackube.controller.network import NetworkReconciler
from stackube.controller.operator import (
    FAST_RECHECKS,
    MAX_RECHECK_SECONDS,
    recheck_delay,
    retry_delay,
)
from stackube.errors import NotFoundError, PermanentError, TemporaryError
from stackube.kube.errors import translating as kube_translating
from stackube.openstack.errors import translate
from stackube.openstack.errors import translating as openstack_translating

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
        ({"tenant-cidr": "10.244.128.0/17", "tenant-gateway": "10.244.128.1"}, "overlaps"),
        ({"tenant-gateway": "10.244.0.1"}, "tenant-cidr/tenant-gateway"),
    ],
)
def test_bad_configuration_names_the_key(change: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse_config({**SEED, **change})


def test_names_follow_the_seed() -> None:
    assert naming.neutron_name("test", "test") == "kube-test-test"
    assert naming.project_group("abc") == "stackube:project:abc"
    assert naming.role_group("abc", "member") == "stackube:project:abc:role:member"


def test_role_mapping_defaults_and_parses_in_order() -> None:
    assert config.parse_config(SEED).role_mapping == (
        ("reader", "view"),
        ("member", "edit"),
        ("admin", "admin"),
    )
    assert config.parse_role_mapping("reader=view,member=edit,admin=admin") == (
        config.DEFAULT_ROLE_MAPPING
    )
    parsed = config.parse_config({**SEED, "role-mapping": " operator = admin , member=view\n"})
    assert parsed.role_mapping == (("operator", "admin"), ("member", "view"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "role-mapping: entry ''"),
        ("member=edit,", "role-mapping: entry ''"),
        ("member", "role-mapping: entry 'member'"),
        ("member=edit=admin", "role-mapping: entry 'member=edit=admin'"),
        ("=edit", "role-mapping: entry '=edit'"),
        ("member=", "role-mapping: entry 'member='"),
        ("member=cluster-admin", "role-mapping: entry 'member=cluster-admin'.*only view, edit"),
        ("member=Edit", "ClusterRole 'Edit'"),
        ("member=edit,reader=view,member=view", "Keystone role 'member' is mapped more than once"),
    ],
)
def test_bad_role_mappings_name_the_key_and_the_entry(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.parse_role_mapping(text)
    with pytest.raises(config.ConfigError, match="role-mapping"):
        config.parse_config({**SEED, "role-mapping": text})


def _group(project_id: str, role: str) -> dict[str, str]:
    name = f"stackube:project:{project_id}:role:{role}"
    return {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": name}


def test_tenant_rbac_binds_each_cluster_role_to_the_groups_of_its_keystone_roles() -> None:
    bindings = rbac.tenant_role_bindings("test", "p1", config.DEFAULT_ROLE_MAPPING)
    assert [b["metadata"]["name"] for b in bindings] == [
        "stackube-view",
        "stackube-edit",
        "stackube-admin",
    ]
    for binding, (role, cluster_role) in zip(bindings, config.DEFAULT_ROLE_MAPPING, strict=True):
        assert binding["kind"] == "RoleBinding"
        assert binding["metadata"]["namespace"] == "test"
        assert binding["metadata"]["labels"] == naming.tenant_labels("test", "p1")
        assert binding["roleRef"] == {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": cluster_role,
        }
        assert binding["subjects"] == [_group("p1", role)]
    # The project's group as such is bound to nothing: a role in the project is needed.
    subjects = [s["name"] for b in bindings for s in b["subjects"]]
    assert naming.project_group("p1") not in subjects


def test_tenant_rbac_groups_keystone_roles_mapped_to_the_same_cluster_role() -> None:
    mapping = (("member", "edit"), ("operator", "edit"), ("member2", "view"), ("member", "edit"))
    bindings = rbac.tenant_role_bindings("t", "p", mapping)
    assert [(b["metadata"]["name"], b["subjects"]) for b in bindings] == [
        ("stackube-edit", [_group("p", "member"), _group("p", "operator")]),
        ("stackube-view", [_group("p", "member2")]),
    ]
    assert rbac.tenant_role_bindings("t", "p", ()) == []
    with pytest.raises(ValueError, match="cluster-admin"):
        rbac.tenant_role_bindings("t", "p", (("member", "cluster-admin"),))


def test_stale_role_bindings_are_ours_that_are_no_longer_wanted() -> None:
    wanted = rbac.tenant_role_bindings("t", "p", (("member", "edit"),))
    existing = [
        rbac.LEGACY_ROLE_BINDING,
        "stackube-edit",
        "stackube-admin",
        "stackube-view",
        "stackube-mine",  # the tenant's own: not ours to delete
        "team-readers",
        "stackube-admin",
    ]
    assert rbac.stale_role_bindings(existing, wanted) == [
        "stackube-admin",
        "stackube-tenant-admins",
        "stackube-view",
    ]
    assert rbac.LEGACY_ROLE_BINDING == "stackube-tenant-admins"
    assert rbac.stale_role_bindings(iter(["stackube-edit"]), wanted) == []


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


@pytest.mark.parametrize("translating", [openstack_translating, kube_translating])
def test_adapters_translate_library_errors_and_let_bugs_through(
    translating: Callable[[str], Callable[[Callable[[Exception], None]], Callable[..., None]]],
) -> None:
    @translating("doing a thing")
    def adapter(exc: Exception) -> None:
        raise exc

    with pytest.raises(TemporaryError, match=r"^doing a thing: "):
        adapter(ConnectionRefusedError("refused"))  # an OSError: the connection
    with pytest.raises(KeyError):  # a bug, not "try again later"
        adapter(KeyError("status"))


def test_backoff_doubles_to_a_minute_unless_a_delay_is_asked_for() -> None:
    assert [retry_delay(r, None) for r in range(9)] == [0.5, 1, 2, 4, 8, 16, 32, 60, 60]
    assert retry_delay(8, 1.0) == 1.0


def test_a_dns_recheck_stays_prompt_then_slows_down() -> None:
    delays = [recheck_delay(2.0, r) for r in range(FAST_RECHECKS + 8)]
    assert delays[: FAST_RECHECKS + 1] == [2.0] * (FAST_RECHECKS + 1)
    assert delays[FAST_RECHECKS + 1] == 3.0 and delays[FAST_RECHECKS + 2] == 4.5
    assert delays[-1] == MAX_RECHECK_SECONDS and max(delays) == MAX_RECHECK_SECONDS


def test_a_namespace_is_a_tenants_only_with_both_labels_the_controller_sets() -> None:
    made = naming.tenant_labels("t", "p")
    assert naming.owns_namespace(made, "t")
    assert not naming.owns_namespace(made, "u")
    # What a cluster admin might label by hand: not the controller's to delete.
    assert not naming.owns_namespace({"stackube.kubernetes.io/tenant": "t"}, "t")


def test_a_project_already_a_tenants_cannot_be_adopted_by_another() -> None:
    from stackube.controller.tenant import project_owner  # noqa: PLC0415
    from stackube.openstack.identity import Project  # noqa: PLC0415

    free = Project("p1", "shared", "d", ())
    made = Project("p2", "alpha", "d", (naming.PROJECT_TAG,))
    tenants = [
        {"metadata": {"name": "alpha"}, "spec": {}, "status": {"projectID": "p2"}},
        {"metadata": {"name": "beta"}, "spec": {"tenantID": "p1"}, "status": {}},
    ]
    assert project_owner("gamma", free, tenants) == "beta"
    assert project_owner("beta", free, tenants) is None  # its own
    assert project_owner("gamma", made, tenants) == "alpha"
    assert project_owner("gamma", made, []) == "alpha"  # made by Stackube for alpha
    assert project_owner("alpha", made, tenants) is None


def test_passes_over_one_object_share_one_lock_until_it_is_gone() -> None:
    from stackube.controller.operator import ObjectLocks  # noqa: PLC0415

    locks = ObjectLocks()
    tenant = {"metadata": {"name": "t"}}
    network = {"metadata": {"namespace": "t", "name": "t"}}
    assert locks("tenant", tenant) is locks("tenant", {"metadata": {"name": "t"}})
    assert locks("tenant", tenant) is not locks("network", network)
    first = locks("tenant", tenant)
    locks.forget("tenant", tenant)
    assert locks("tenant", tenant) is not first


def test_a_network_is_active_only_once_its_router_interface_is_up() -> None:
    from stackube.controller.network import gateway_problem  # noqa: PLC0415
    from stackube.openstack.network import Port  # noqa: PLC0415

    def port(status: str, owner: str = "network:router_interface", subnet: str = "s1") -> Port:
        return Port("p1", "", "n1", "proj", "fa:16:3e:00:00:01", ((subnet, "10.244.0.1"),),
                    status, owner, "r1", "")  # fmt: skip

    assert "no interface" in str(gateway_problem([], "r1", "s1"))
    assert "no interface" in str(gateway_problem([port("ACTIVE", subnet="s2")], "r1", "s1"))
    assert "no interface" in str(gateway_problem([port("ACTIVE", "network:dhcp")], "r1", "s1"))
    assert "DOWN" in str(gateway_problem([port("DOWN")], "r1", "s1"))
    assert gateway_problem([port("ACTIVE")], "r1", "s1") is None


def test_the_system_network_comes_from_user_cidr_and_tenants_default_elsewhere() -> None:
    parsed = config.parse_config(SEED)
    assert (parsed.user_cidr, parsed.user_gateway) == ("10.244.0.0/16", "10.244.0.1")
    assert (parsed.tenant_cidr, parsed.tenant_gateway) == ("10.245.0.0/16", "10.245.0.1")
    assert system.system_network_spec(parsed) == {"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}
    network = {"spec": {"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}}
    assert system.spec_drift(network, parsed) is None
    drifted = system.spec_drift({"spec": {"cidr": "10.250.0.0/16"}}, parsed)
    assert drifted is not None and "10.250.0.0/16" in drifted and "kept as it is" in drifted


@pytest.mark.parametrize(
    ("namespace", "name", "cidr", "refused"),
    [
        ("team", "team", "10.244.0.0/16", True),
        ("team", "team", "10.0.0.0/8", True),  # holds user-cidr
        ("team", "team", "10.244.7.0/24", True),
        ("team", "team", "10.245.0.0/16", False),
        ("lab", "own", "192.168.7.0/24", False),
        ("kube-system", "system", "10.244.0.0/16", False),  # the system network itself
        ("kube-system", "other", "10.244.0.0/16", True),
    ],
)
def test_only_the_system_network_may_use_user_cidr(
    namespace: str, name: str, cidr: str, refused: bool
) -> None:
    reconciler = NetworkReconciler(lambda: None, None, config.parse_config(SEED))  # type: ignore[arg-type,return-value]
    spec = parse_network(
        {"metadata": {"namespace": namespace, "name": name}, "spec": {"cidr": cidr}}
    )
    if refused:
        with pytest.raises(PermanentError, match="overlaps the system network's user-cidr"):
            reconciler._check_range(spec, [cidr])
    else:
        reconciler._check_range(spec, [cidr])
