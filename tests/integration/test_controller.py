"""stackube-controller on the devbox's real kube-apiserver, Keystone and Neutron."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from openstack.connection import Connection
from openstack.exceptions import ConflictException

from stackube.api.naming import neutron_name
from stackube.api.types import GROUP, VERSION
from stackube.devbox.box import Devbox
from stackube.openstack import cloud
from stackube.openstack import network as neutron
from tests.integration.controller_harness import (
    REPO,
    Controller,
)

pytestmark = pytest.mark.integration

SEED_TENANT = """\
apiVersion: "stackube.kubernetes.io/v1"
kind: Tenant
metadata:
  name: test
spec:
  username: "test"
  password: "password"
"""


@pytest.fixture
def controller(harness: Controller) -> Iterator[Controller]:
    harness.start()
    harness.wait_healthy()
    yield harness
    harness.stop_all()


# ---- helpers ------------------------------------------------------------------------------
def objects(kube: k8s.ApiClient) -> k8s.CustomObjectsApi:
    return k8s.CustomObjectsApi(kube)


# Tenant passwords of this run: none may ever appear in the controller's log.
PASSWORDS: list[str] = []


def create_tenant(kube: k8s.ApiClient, name: str, username: str | None = None) -> str:
    password = f"pw-{secrets.token_hex(8)}"
    PASSWORDS.append(password)
    body = yaml.safe_load(SEED_TENANT)
    body["metadata"]["name"] = name
    body["spec"]["username"] = username or name
    body["spec"]["password"] = password
    objects(kube).create_cluster_custom_object(GROUP, VERSION, "tenants", body)
    return password


def read(
    kube: k8s.ApiClient, kind: str, name: str, namespace: str | None = None
) -> dict[str, Any] | None:
    try:
        if namespace:
            found = objects(kube).get_namespaced_custom_object(
                GROUP, VERSION, namespace, kind, name
            )
        else:
            found = objects(kube).get_cluster_custom_object(GROUP, VERSION, kind, name)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return dict(found)


def wait_until(check: Callable[[], Any], timeout: float, what: str, logs: Callable[[], str]) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs()[-4000:]}")


def state_of(kube: k8s.ApiClient, kind: str, name: str, namespace: str | None = None) -> str | None:
    found = read(kube, kind, name, namespace)
    return (found or {}).get("status", {}).get("state")


def wait_active(kube: k8s.ApiClient, harness: Controller, name: str, timeout: float = 60) -> None:
    wait_until(
        lambda: state_of(kube, "tenants", name) == "Active",
        timeout,
        f"Tenant {name} Active",
        harness.logs,
    )


def delete_tenant(kube: k8s.ApiClient, name: str) -> None:
    try:
        objects(kube).delete_cluster_custom_object(GROUP, VERSION, "tenants", name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def leftovers(
    kube: k8s.ApiClient, os_admin: Connection, name: str, username: str | None = None
) -> list[str]:
    """Everything a Tenant made that still exists (empty when cleaned up)."""
    found = []
    if read(kube, "tenants", name) is not None:
        found.append(f"tenant {name}")
    try:
        k8s.CoreV1Api(kube).read_namespace(name)
        found.append(f"namespace {name}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    try:
        k8s.AppsV1Api(kube).read_namespaced_deployment(name, "stackube-dns")
        found.append(f"DNS server stackube-dns/{name}")
    except ApiException as exc:
        if exc.status != 404:
            raise
    domain = os_admin.identity.find_domain("stackube")
    if os_admin.identity.find_project(name, domain_id=domain.id, ignore_missing=True):
        found.append(f"project {name}")
    if os_admin.identity.find_user(username or name, domain_id=domain.id, ignore_missing=True):
        found.append(f"user {username or name}")
    neutron = neutron_name(name, name)
    found += [f"network {n.id}" for n in os_admin.network.networks(name=neutron)]
    found += [f"subnet {s.id}" for s in os_admin.network.subnets(name=neutron)]
    found += [f"router {r.id}" for r in os_admin.network.routers(name=neutron)]
    return found


@pytest.fixture
def cleanup_tenants(
    kube: k8s.ApiClient, os_admin: Connection, harness: Controller
) -> Iterator[list[str]]:
    """Tenants a test makes are deleted afterwards (with a controller running), and the
    test fails if anything of theirs is left in Kubernetes, Keystone or Neutron."""
    names: list[str] = []
    yield names
    if not names:
        return
    running = any(p.poll() is None for p in harness.procs)
    if not running:
        harness.start()
    for name in names:
        delete_tenant(kube, name)
    for name in names:
        wait_until(
            lambda n=name: not leftovers(kube, os_admin, n), 90, f"{name} cleaned up", harness.logs
        )
    if not running:
        harness.stop_all()


# ---- tests --------------------------------------------------------------------------------
def tenant_role_bindings(kube: k8s.ApiClient, namespace: str) -> dict[str, tuple[str, list[str]]]:
    found = k8s.RbacAuthorizationV1Api(kube).list_namespaced_role_binding(namespace).items
    return {b.metadata.name: (b.role_ref.name, [s.name for s in b.subjects or []]) for b in found}


def assert_tenant_dns(kube: k8s.ApiClient, tenant: str) -> None:
    """The tenant's own DNS server, answering for its namespace only, outside it."""
    core, apps = k8s.CoreV1Api(kube), k8s.AppsV1Api(kube)
    corefile = core.read_namespaced_config_map(tenant, "stackube-dns").data["Corefile"]
    assert f"namespaces {tenant}\n" in corefile
    dns_ports = core.read_namespaced_service(tenant, "stackube-dns").spec.ports
    assert sorted((p.protocol, p.port) for p in dns_ports) == [("TCP", 53), ("UDP", 53)]
    deployment = apps.read_namespaced_deployment(tenant, "stackube-dns")
    assert deployment.spec.template.spec.service_account_name == "tenant-dns"
    # No ServiceAccount in the tenant's namespace but the one Kubernetes makes.
    accounts = core.list_namespaced_service_account(tenant).items
    assert [a.metadata.name for a in accounts] in ([], ["default"])


def test_seed_tenant_flow(
    devbox: Devbox, kube: k8s.ApiClient, os_admin: Connection, controller: Controller
) -> None:
    objects(kube).create_cluster_custom_object(
        GROUP, VERSION, "tenants", yaml.safe_load(SEED_TENANT)
    )
    try:
        wait_active(kube, controller, "test")
        namespace = k8s.CoreV1Api(kube).read_namespace("test")
        assert namespace.status.phase == "Active"
        network = read(kube, "networks", "test", "test")
        assert network is not None
        assert network["spec"] == {"cidr": "10.245.0.0/16", "gateway": "10.245.0.1"}
        assert network["status"]["state"] == "Active"
        tenant = read(kube, "tenants", "test")
        assert tenant is not None
        project_id = tenant["status"]["projectID"]

        nets = list(os_admin.network.networks(name="kube-test-test"))
        assert [n.project_id for n in nets] == [project_id]
        # Services reach pods from the router: its address is admitted by the default group.
        groups = list(os_admin.network.security_groups(project_id=project_id, name="default"))
        admitted = [
            r.remote_ip_prefix
            for r in os_admin.network.security_group_rules(security_group_id=groups[0].id)
            if r.direction == "ingress"
        ]
        assert "10.245.0.1/32" in admitted
        subnets = list(os_admin.network.subnets(network_id=nets[0].id))
        assert [(s.cidr, s.gateway_ip) for s in subnets] == [("10.245.0.0/16", "10.245.0.1")]
        routers = list(os_admin.network.routers(name="kube-test-test"))
        assert [r.project_id for r in routers] == [project_id]
        assert network["status"]["routerID"] == routers[0].id

        user = cloud.connect(
            cloud.Credentials(
                devbox.settings.keystone_url,
                "test",
                "password",
                "test",
                user_domain="stackube",
                project_domain="stackube",
            )
        )
        token = os_admin.identity.validate_token(user.auth_token)
        assert token.project["id"] == project_id
        user.close()

        # The default role mapping: Keystone reader/member/admin -> view/edit/admin.
        group = f"stackube:project:{project_id}:role:"
        assert tenant_role_bindings(kube, "test") == {
            "stackube-view": ("view", [f"{group}reader"]),
            "stackube-edit": ("edit", [f"{group}member"]),
            "stackube-admin": ("admin", [f"{group}admin"]),
        }
        labels = namespace.metadata.labels
        assert labels["pod-security.kubernetes.io/enforce"] == "baseline"
        assert labels["pod-security.kubernetes.io/warn"] == "restricted"

        assert_tenant_dns(kube, "test")
    finally:
        delete_tenant(kube, "test")
    wait_until(
        lambda: not leftovers(kube, os_admin, "test"), 90, "tenant test cleaned up", controller.logs
    )
    # (listed unfiltered: a listing filtered by project makes Neutron create its default group)
    assert not [g for g in os_admin.network.security_groups() if g.project_id == project_id]
    for kind in ("config_map", "service"):
        with pytest.raises(ApiException) as gone:
            getattr(k8s.CoreV1Api(kube), f"read_namespaced_{kind}")("test", "stackube-dns")
        assert gone.value.status == 404
    with pytest.raises(ApiException) as gone:
        k8s.AppsV1Api(kube).read_namespaced_deployment("test", "stackube-dns")
    assert gone.value.status == 404


@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("networks", {"cidr": "10.244.0.0/33"}, "spec.cidr"),
        ("networks", {"cidr": "10.244.0.1/16"}, "spec.cidr"),
        ("networks", {"cidr": "10.244.0.0/16", "gateway": "10.245.0.1"}, "spec.gateway"),
        ("networks", {"cidr": "10.244.0.0/16", "gateway": "nope"}, "spec.gateway"),
        ("tenants", {"password": "p"}, "spec.username"),
        ("tenants", {"username": "u"}, "spec.password"),
        ("tenants", {"username": "with space", "password": "p"}, "spec.username"),
    ],
)
def test_bad_input_is_rejected_by_the_apiserver_naming_the_field(
    kube: k8s.ApiClient, harness: Controller, kind: str, body: dict[str, Any], field: str
) -> None:
    meta: dict[str, Any] = {"name": "bad"}
    if kind == "networks":
        meta["namespace"] = "default"
    document = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind[:-1].title(),
        "metadata": meta,
        "spec": body,
    }
    with pytest.raises(ApiException) as refused:
        if kind == "networks":
            objects(kube).create_namespaced_custom_object(GROUP, VERSION, "default", kind, document)
        else:
            objects(kube).create_cluster_custom_object(GROUP, VERSION, kind, document)
    assert refused.value.status == 422
    assert field in refused.value.body


def test_invalid_tenant_name_is_rejected(kube: k8s.ApiClient, harness: Controller) -> None:
    document = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Tenant",
        "metadata": {"name": "a." + "b" * 70},
        "spec": {"username": "u", "password": "p"},
    }
    with pytest.raises(ApiException) as refused:
        objects(kube).create_cluster_custom_object(GROUP, VERSION, "tenants", document)
    assert refused.value.status == 422
    assert "metadata.name" in refused.value.body


def test_two_tenants_with_the_same_cidr_get_separate_networks_and_routers(
    kube: k8s.ApiClient, os_admin: Connection, controller: Controller, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants += ["alpha", "beta"]
    create_tenant(kube, "alpha")
    create_tenant(kube, "beta")
    wait_active(kube, controller, "alpha")
    wait_active(kube, controller, "beta")
    a, b = read(kube, "networks", "alpha", "alpha"), read(kube, "networks", "beta", "beta")
    assert a and b
    assert a["spec"]["cidr"] == b["spec"]["cidr"] == "10.245.0.0/16"
    assert a["status"]["networkID"] != b["status"]["networkID"]
    assert a["status"]["routerID"] != b["status"]["routerID"]


def test_the_system_network_and_networks_of_plain_namespaces(
    kube: k8s.ApiClient, os_admin: Connection, controller: Controller
) -> None:
    """The system Network exists and is Active under the system project; a cluster
    admin's Network in a plain namespace is made under that project too (it was Pending
    for want of a Tenant); one overlapping user-cidr fails with a message saying so."""
    system = wait_until(
        lambda: (
            (read(kube, "networks", "system", "kube-system") or {}).get("status", {}).get("state")
            == "Active"
        ),
        120,
        "the system Network Active",
        controller.logs,
    )
    assert system
    network = read(kube, "networks", "system", "kube-system")
    assert network and network["spec"] == {"cidr": "10.244.0.0/16", "gateway": "10.244.0.1"}
    project = os_admin.identity.find_project(
        "stackube-system", domain_id="default", ignore_missing=True
    )
    assert project is not None and "stackube-system" in project.tags
    net = os_admin.network.get_network(network["status"]["networkID"])
    assert net.project_id == project.id and net.name == "kube-kube-system-system"

    namespace = f"plain-{secrets.token_hex(3)}"
    core = k8s.CoreV1Api(kube)
    core.create_namespace({"metadata": {"name": namespace}})

    def network(name: str, cidr: str) -> None:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Network",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"cidr": cidr},
        }
        objects(kube).create_namespaced_custom_object(GROUP, VERSION, namespace, "networks", body)

    try:
        network("own", "192.168.77.0/24")
        network("clash", "10.244.5.0/24")
        wait_until(
            lambda: state_of(kube, "networks", "own", namespace) == "Active",
            90,
            "the plain namespace's Network Active",
            controller.logs,
        )
        own = read(kube, "networks", "own", namespace)
        assert own
        made = os_admin.network.get_network(own["status"]["networkID"])
        assert made.project_id == project.id
        wait_until(
            lambda: state_of(kube, "networks", "clash", namespace) == "Failed",
            60,
            "the overlapping Network Failed",
            controller.logs,
        )
        clash = read(kube, "networks", "clash", namespace)
        assert clash
        message = clash["status"]["message"]
        assert "overlaps the system network's user-cidr 10.244.0.0/16" in message, message
        assert not list(os_admin.network.networks(name=neutron_name(namespace, "clash")))
    finally:
        core.delete_namespace(namespace)
    wait_until(
        lambda: not list(os_admin.network.networks(name=neutron_name(namespace, "own"))),
        90,
        "the plain namespace's Neutron network deleted",
        controller.logs,
    )


def test_a_neutron_network_deleted_by_hand_comes_back(
    kube: k8s.ApiClient, os_admin: Connection, controller: Controller, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants.append("drift")
    create_tenant(kube, "drift")
    wait_active(kube, controller, "drift")
    network = read(kube, "networks", "drift", "drift")
    assert network
    old = network["status"]
    # By hand, as an operator would: the interface, then the network (again if the
    # controller's resync put the interface back in between: it repairs drift).
    for attempt in range(5):
        for port_id in neutron.router_interface_ports(os_admin, old["routerID"]):
            os_admin.network.remove_interface_from_router(old["routerID"], port=port_id)
        try:
            os_admin.network.delete_network(old["networkID"])
            break
        except ConflictException:
            if attempt == 4:
                raise
            time.sleep(1)

    def recreated() -> bool:
        current = (read(kube, "networks", "drift", "drift") or {}).get("status", {})
        return current.get("state") == "Active" and current.get("networkID") not in (
            None,
            old["networkID"],
        )

    wait_until(recreated, 30, "the network to be recreated", controller.logs)
    assert len(list(os_admin.network.networks(name="kube-drift-drift"))) == 1


def test_deletion_completes_when_requested_while_the_controller_was_down(
    kube: k8s.ApiClient, os_admin: Connection, harness: Controller
) -> None:
    harness.start()
    harness.wait_healthy()
    create_tenant(kube, "offline")
    wait_active(kube, harness, "offline")
    harness.stop_all()
    delete_tenant(kube, "offline")
    time.sleep(2)
    tenant = read(kube, "tenants", "offline")
    assert tenant is not None and tenant["metadata"].get("deletionTimestamp"), (
        "finalizer must hold it"
    )
    harness.start()
    try:
        wait_until(
            lambda: not leftovers(kube, os_admin, "offline"), 90, "offline cleaned up", harness.logs
        )
    finally:
        harness.stop_all()


def test_a_tenants_deletion_ends_without_waiting_for_its_namespace(
    kube: k8s.ApiClient, os_admin: Connection, controller: Controller
) -> None:
    """The Tenant's finalizer removes its Networks itself and then Keystone's objects,
    instead of waiting for Kubernetes to empty the namespace: here something else's
    finalizer holds the namespace (a ConfigMap's), and the Tenant, its user, project,
    Neutron network, security groups and its LoadBalancer's floating IP still go; the
    Service's own finalizer then lets it go without making anything again. Positive
    controls: the floating IP and the project's security groups existed; the namespace
    is still there."""
    name = "ns-held"
    core = k8s.CoreV1Api(kube)
    try:
        create_tenant(kube, name)
        wait_active(kube, controller, name)
        tenant = read(kube, "tenants", name)
        assert tenant is not None
        project_id = tenant["status"]["projectID"]
        held = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name="held", finalizers=["example.com/hold"])
        )
        core.create_namespaced_config_map(name, held)
        service = k8s.V1Service(
            metadata=k8s.V1ObjectMeta(name="web"),
            spec=k8s.V1ServiceSpec(
                type="LoadBalancer", ports=[k8s.V1ServicePort(port=80)], selector={"a": "b"}
            ),
        )
        core.create_namespaced_service(name, service)

        def project_ips() -> list[str]:
            return [ip.floating_ip_address for ip in os_admin.network.ips(project_id=project_id)]

        def project_groups() -> list[str]:
            # Unfiltered: a listing filtered by project makes Neutron create the
            # project's default group when it has none.
            groups = os_admin.network.security_groups()
            return [g.id for g in groups if g.project_id == project_id]

        wait_until(
            lambda: len(project_ips()) == 1, 60, "the Service's floating IP", controller.logs
        )
        assert project_groups()
        delete_tenant(kube, name)
        wait_until(
            lambda: leftovers(kube, os_admin, name) == [f"namespace {name}"],
            60,
            "everything but the namespace gone",
            controller.logs,
        )
        assert core.read_namespace(name).metadata.deletion_timestamp is not None
        assert read(kube, "networks", name, name) is None
        assert f"tenant {name}: finalized" in controller.logs()
        assert project_ips() == []
        assert project_groups() == []

        def service_gone() -> bool:
            try:
                core.read_namespaced_service("web", name)
            except ApiException as exc:
                if exc.status == 404:
                    return True
                raise
            return False

        # Its own finalizer still lets it go, with the project gone, and makes nothing.
        wait_until(service_gone, 60, "the Service gone from the namespace", controller.logs)
        assert project_ips() == []
    finally:
        try:
            core.patch_namespaced_config_map("held", name, {"metadata": {"finalizers": None}})
        except ApiException as exc:
            if exc.status != 404:
                raise
        delete_tenant(kube, name)
        wait_until(
            lambda: not leftovers(kube, os_admin, name), 60, "the namespace gone", controller.logs
        )


def test_outage_shows_pending_then_recovers(
    devbox: Devbox, kube: k8s.ApiClient, controller: Controller, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants.append("outage")
    devbox.table.stop("neutron-server")
    try:
        create_tenant(kube, "outage")
        wait_until(
            lambda: state_of(kube, "networks", "outage", "outage") == "Pending",
            60,
            "Network Pending while Neutron is down",
            controller.logs,
        )
        network = read(kube, "networks", "outage", "outage")
        assert network and "Neutron" in network["status"]["message"]
    finally:
        devbox.up()
        # `up` also restarted the devbox's own controller, paused for this module.
        devbox.pause("stackube-controller")
    wait_active(kube, controller, "outage", timeout=120)


def test_metrics_count_reconciles(
    controller: Controller, kube: k8s.ApiClient, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants.append("metrics")
    create_tenant(kube, "metrics")
    wait_active(kube, controller, "metrics")
    text = controller.metrics()
    assert 'stackube_reconciles_total{kind="tenant",outcome="ok"}' in text
    assert 'stackube_reconciles_total{kind="network",outcome="ok"}' in text


def test_no_password_appears_in_any_controller_log(devbox: Devbox, harness: Controller) -> None:
    """Runs after the tests above in this module: their tenants' passwords, and the
    controller's own service password, are nowhere in what the controller logged."""
    service_password = json.loads(devbox.settings.secrets_file.read_text())["stackube_service"]
    logs = harness.logs()
    assert logs, "the controller logged nothing at all?"
    assert PASSWORDS, "no tenant was created in this module"
    for secret in [*PASSWORDS, service_password]:
        assert secret not in logs


def test_manifests_are_accepted_by_the_apiserver(
    devbox: Devbox, harness: Controller, tmp_path: Path
) -> None:
    done = subprocess.run(
        ["kubectl", "apply", "--dry-run=server", "-k", str(REPO / "deploy")],
        capture_output=True,
        text=True,
        check=False,
        # HOME too: kubectl keeps its discovery cache there (else in the working dir).
        env={
            "KUBECONFIG": str(devbox.settings.admin_kubeconfig),
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
        },
    )
    assert done.returncode == 0, done.stderr


def keystone_accepts(devbox: Devbox, username: str, password: str, project: str) -> bool:
    try:
        conn = cloud.connect(
            cloud.Credentials(
                devbox.settings.keystone_url,
                username,
                password,
                project,
                user_domain="stackube",
                project_domain="stackube",
            )
        )
        ok = bool(conn.auth_token)
        conn.close()
    except Exception:  # noqa: BLE001 - any refusal means "not accepted"
        return False
    return ok


def make_secret(kube: k8s.ApiClient, namespace: str, name: str, password: str) -> None:
    body = k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name), string_data={"password": password})
    k8s.CoreV1Api(kube).create_namespaced_secret(namespace, body)


def test_password_from_a_secret_and_a_changed_password(
    devbox: Devbox, kube: k8s.ApiClient, controller: Controller, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants += ["fromsecret", "pwchange"]
    secret_name, password = f"pw-{secrets.token_hex(3)}", f"pw-{secrets.token_hex(8)}"
    PASSWORDS.append(password)
    make_secret(kube, "kube-system", secret_name, password)
    try:
        body = yaml.safe_load(SEED_TENANT)
        body["metadata"]["name"] = "fromsecret"
        body["spec"] = {
            "username": "fromsecret",
            "passwordSecretRef": {"namespace": "kube-system", "name": secret_name},
        }
        objects(kube).create_cluster_custom_object(GROUP, VERSION, "tenants", body)
        wait_active(kube, controller, "fromsecret")
        assert keystone_accepts(devbox, "fromsecret", password, "fromsecret")
    finally:
        k8s.CoreV1Api(kube).delete_namespaced_secret(secret_name, "kube-system")

    first = create_tenant(kube, "pwchange")
    wait_active(kube, controller, "pwchange")
    assert keystone_accepts(devbox, "pwchange", first, "pwchange")
    second = f"pw-{secrets.token_hex(8)}"
    PASSWORDS.append(second)
    objects(kube).patch_cluster_custom_object(
        GROUP, VERSION, "tenants", "pwchange", {"spec": {"password": second}}
    )
    wait_until(
        lambda: keystone_accepts(devbox, "pwchange", second, "pwchange"),
        30,
        "the new password to work",
        controller.logs,
    )
    assert not keystone_accepts(devbox, "pwchange", first, "pwchange")
    annotations = (read(kube, "tenants", "pwchange") or {})["metadata"].get("annotations", {})
    assert not any(second in value for value in annotations.values())


def test_a_secret_outside_the_controller_namespace_fails_clearly(
    kube: k8s.ApiClient, controller: Controller, cleanup_tenants: list[str]
) -> None:
    cleanup_tenants.append("elsewhere")
    secret_name = f"pw-{secrets.token_hex(3)}"
    make_secret(kube, "default", secret_name, "irrelevant")
    try:
        body = yaml.safe_load(SEED_TENANT)
        body["metadata"]["name"] = "elsewhere"
        body["spec"] = {
            "username": "elsewhere",
            "passwordSecretRef": {"namespace": "default", "name": secret_name},
        }
        objects(kube).create_cluster_custom_object(GROUP, VERSION, "tenants", body)
        wait_until(
            lambda: state_of(kube, "tenants", "elsewhere") == "Failed",
            30,
            "the Tenant to fail",
            controller.logs,
        )
        tenant = read(kube, "tenants", "elsewhere")
        assert tenant and "403" in tenant["status"]["message"]
        assert "secret" in tenant["status"]["message"]
    finally:
        k8s.CoreV1Api(kube).delete_namespaced_secret(secret_name, "default")
