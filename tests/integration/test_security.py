"""The attack matrix: a tenant's real Keystone user, logged in through the real token
webhook with `stackube login` (never impersonation), tries to leave its namespace, its
network or the node. Each attempt must be refused with a message that names what was
refused, and each has a positive control (the allowed path works, or a cluster admin
can) so that a broken check fails the test instead of passing it.

Pods are created with `--dry-run=server`: admission (Pod Security, the CEL policies,
RBAC, ServiceAccount lookup) runs exactly as for a real create, and nothing is
scheduled. The network half of the matrix (TCP from a tenant pod to every host port)
is in test_proxy.py, which runs tenant pods.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest
import requests
import yaml
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from openstack.connection import Connection

from stackube.api.types import GROUP, VERSION
from stackube.devbox.box import Devbox
from stackube.devbox.pki import PkiStore
from stackube.devbox.stackube import AUTH_PORT
from stackube.openstack.cloud import Credentials
from stackube.openstack.tokens import issue_token
from tests.e2e.kubectl import side_by_side
from tests.integration.tenant_users import (
    TenantUser,
    gone,
    login_files,
    make_tenant,
    remember_secret,
    wait_for,
)

pytestmark = pytest.mark.integration

ATTACKER, VICTIM = "attacker", "victim"
DNS_NAMESPACE, DNS_ACCOUNT = "stackube-dns", "tenant-dns"
CONTROLLER = "system:serviceaccount:kube-system:stackube-controller"


@dataclass
class Tenants:
    attacker: TenantUser
    victim: TenantUser
    reader: TenantUser  # another Keystone user of the attacker's project, role `reader`


@pytest.fixture(scope="module")
def tenants(
    devbox: Devbox,
    kube: k8s.ApiClient,
    os_admin: Connection,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Tenants]:
    directory = tmp_path_factory.mktemp("security")
    objects = k8s.CustomObjectsApi(kube)
    reader_id = None
    try:
        attacker, victim = side_by_side(
            lambda name: make_tenant(devbox, kube, name, directory), [ATTACKER, VICTIM]
        )
        domain = os_admin.identity.find_domain("stackube")
        password = remember_secret(f"pw-{secrets.token_hex(8)}")
        name = f"reader-{secrets.token_hex(3)}"
        reader_id = os_admin.identity.create_user(
            name=name, password=password, domain_id=domain.id
        ).id
        role = os_admin.identity.find_role("reader")
        os_admin.identity.assign_project_role_to_user(attacker.project_id, reader_id, role.id)
        kubeconfig, home = login_files(devbox, ATTACKER, name, directory)
        reader = replace(
            attacker,
            password=password,
            user_id=reader_id,
            kubeconfig=kubeconfig,
            cache_home=home,
            username=name,
        )
        yield Tenants(attacker, victim, reader)
    finally:
        if reader_id:
            os_admin.identity.delete_user(reader_id)
        for tenant in (ATTACKER, VICTIM):
            with contextlib.suppress(ApiException):
                objects.delete_cluster_custom_object(GROUP, VERSION, "tenants", tenant)
        for tenant in (ATTACKER, VICTIM):
            wait_for(lambda t=tenant: gone(objects, t), 120, f"Tenant {tenant} deleted")


def admin_kubectl(
    devbox: Devbox, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", f"--kubeconfig={devbox.settings.admin_kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        input=stdin,
    )


def pod(name: str = "probe", **spec: Any) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox", "command": ["sleep", "60"]}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [container], **spec},
    }


def deployment(template: dict[str, Any]) -> dict[str, Any]:
    labels = {"app": "probe"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "probe"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": template["spec"]},
        },
    }


def job(template: dict[str, Any]) -> dict[str, Any]:
    spec = {**template["spec"], "restartPolicy": "Never"}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "probe"},
        "spec": {"template": {"spec": spec}},
    }


def cronjob(template: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": "probe"},
        "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": job(template)["spec"]}},
    }


def dry_create(run: Any, namespace: str, doc: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    return run("-n", namespace, "create", "--dry-run=server", "-f", "-", stdin=json.dumps(doc))  # type: ignore[no-any-return]


def capability(name: str) -> dict[str, Any]:
    return {"container": {"securityContext": {"capabilities": {"add": [name]}}}}


# (attack, the Pod (or Deployment) the tenant submits, what the refusal must name)
POD_ATTACKS: list[tuple[str, dict[str, Any], str]] = [
    ("privileged", pod(container={"securityContext": {"privileged": True}}), "privileged"),
    ("hostNetwork", pod(hostNetwork=True), "hostNetwork"),
    ("hostPID", pod(hostPID=True), "hostPID"),
    ("hostIPC", pod(hostIPC=True), "hostIPC"),
    (
        "hostPath /",
        pod(
            volumes=[{"name": "root", "hostPath": {"path": "/"}}],
            container={"volumeMounts": [{"name": "root", "mountPath": "/host"}]},
        ),
        "hostPath",
    ),
    ("hostPort", pod(container={"ports": [{"containerPort": 80, "hostPort": 8080}]}), "hostPort"),
    ("NET_ADMIN", pod(**capability("NET_ADMIN")), "NET_ADMIN"),
    ("SYS_ADMIN", pod(**capability("SYS_ADMIN")), "SYS_ADMIN"),
    (
        "seccomp Unconfined",
        pod(securityContext={"seccompProfile": {"type": "Unconfined"}}),
        "seccomp",
    ),
    ("nodeName (skip the scheduler)", pod(nodeName="any-node"), "nodeName"),
    ("tolerate every taint", pod(tolerations=[{"operator": "Exists"}]), "tolerations"),
    (
        "tolerate the control plane",
        pod(tolerations=[{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists"}]),
        "node-role.kubernetes.io/control-plane",
    ),
    ("add ALL capabilities", pod(**capability("ALL")), "ALL"),
    (
        "privileged init container",
        pod(
            initContainers=[
                {"name": "i", "image": "busybox", "securityContext": {"privileged": True}}
            ]
        ),
        "privileged",
    ),
    (
        "tolerate another tenant's dedicated nodes",
        pod(tolerations=[{"key": "stackube.kubernetes.io/tenant", "value": VICTIM}]),
        "stackube.kubernetes.io/tenant",
    ),
    (
        "tolerate an operator's taint",
        pod(tolerations=[{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]),
        "dedicated",
    ),
    (
        "system priority (preempt everyone)",
        pod(priorityClassName="system-node-critical"),
        "priorityClassName",
    ),
    (
        "NFS volume (the node mounts it)",
        pod(volumes=[{"name": "n", "nfs": {"server": "127.0.0.1", "path": "/"}}]),
        "the node mounts them",
    ),
    # Pod Security only warns about templates; the CEL policy refuses them at once.
    (
        "privileged Deployment",
        deployment(pod(container={"securityContext": {"privileged": True}})),
        "privileged",
    ),
    ("hostNetwork Job", job(pod(hostNetwork=True)), "hostNetwork"),
    (
        "hostPath CronJob",
        cronjob(pod(volumes=[{"name": "r", "hostPath": {"path": "/"}}])),
        "hostPath",
    ),
    (
        "probe another address (the node connects there, through the probe relay)",
        pod(container={"readinessProbe": {"httpGet": {"host": "10.244.0.9", "port": 80}}}),
        "lifecycle",  # Pod Security: "probe or lifecycle host"; CEL: "... lifecycle hooks"
    ),
    (
        "tcpSocket probe of the node's API relay",
        pod(container={"livenessProbe": {"tcpSocket": {"host": "198.51.100.254", "port": 6443}}}),
        "lifecycle",  # Pod Security: "probe or lifecycle host"; CEL: "... lifecycle hooks"
    ),
    (
        "lifecycle hook to another address",
        pod(container={"lifecycle": {"postStart": {"httpGet": {"host": "10.0.0.1", "port": 80}}}}),
        "lifecycle",  # Pod Security: "probe or lifecycle host"; CEL: "... lifecycle hooks"
    ),
    (
        "another namespace's ServiceAccount",
        pod(serviceAccountName="stackube-controller"),
        "service account",
    ),
]


# Those a cluster admin may still do outside tenant namespaces (the ServiceAccount one is
# refused everywhere by Kubernetes itself).
HOST_ATTACKS = [a for a in POD_ATTACKS if a[0] != "another namespace's ServiceAccount"]


@pytest.mark.parametrize(
    ("attack", "doc", "named"), POD_ATTACKS, ids=[a for a, _, _ in POD_ATTACKS]
)
def test_a_tenant_cannot_run_a_pod_that_leaves_its_sandbox(
    tenants: Tenants, attack: str, doc: dict[str, Any], named: str
) -> None:
    user = tenants.attacker
    refused = dry_create(user.kubectl, ATTACKER, doc)
    assert refused.returncode != 0, f"{attack} was accepted: {refused.stdout}"
    assert "forbidden" in refused.stderr.lower() or "denied" in refused.stderr.lower(), (
        refused.stderr
    )
    assert named.lower() in refused.stderr.lower(), (attack, refused.stderr)


def test_positive_controls_for_the_pod_matrix(devbox: Devbox, tenants: Tenants) -> None:
    """A plain pod and a plain Deployment are the tenant's to make; a cluster admin may
    still run host pods outside tenant namespaces (the checks are not blanket refusals)."""
    user = tenants.attacker
    own_taint = {"key": "stackube.kubernetes.io/tenant", "value": ATTACKER}
    condition = {"key": "node.kubernetes.io/not-ready", "operator": "Exists"}
    volumes = [{"name": "e", "emptyDir": {}}, {"name": "c", "configMap": {"name": "x"}}]
    for doc in (
        pod(),
        deployment(pod()),
        job(pod()),
        cronjob(pod()),
        pod(tolerations=[own_taint, condition], volumes=volumes),
        # probes of the pod itself (the relay takes the kubelet to it)
        pod(
            container={
                "ports": [{"name": "http", "containerPort": 80}],
                "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                "livenessProbe": {"tcpSocket": {"port": 80}},
                "startupProbe": {"grpc": {"port": 9090}},
            }
        ),
    ):
        done = dry_create(user.kubectl, ATTACKER, doc)
        assert done.returncode == 0, done.stderr
    # Pod Security warns about what `restricted` would refuse (the tenant sees why).
    assert "restricted" in dry_create(user.kubectl, ATTACKER, pod()).stderr
    for attack, doc, _ in HOST_ATTACKS:
        done = dry_create(lambda *a, **k: admin_kubectl(devbox, *a, **k), "default", doc)
        assert done.returncode == 0, (attack, done.stderr)


def test_the_cel_policy_holds_without_pod_security_labels(
    devbox: Devbox, kube: k8s.ApiClient
) -> None:
    """The second line does not depend on Pod Security: in a tenant namespace whose
    labels allow everything (a cluster admin's mistake), host pods are still refused,
    even to a cluster admin."""
    core = k8s.CoreV1Api(kube)
    name = f"policy-{secrets.token_hex(3)}"
    labels = {
        "stackube.kubernetes.io/tenant": name,
        "pod-security.kubernetes.io/enforce": "privileged",
    }
    core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels=labels)))
    try:
        admin = lambda *a, **k: admin_kubectl(devbox, *a, **k)  # noqa: E731
        for attack, doc, named in HOST_ATTACKS:
            if attack == "seccomp Unconfined":  # Pod Security's alone (baseline)
                continue
            refused = dry_create(admin, name, doc)
            assert refused.returncode != 0, f"{attack} accepted without Pod Security"
            assert "stackube-tenant-pods" in refused.stderr, (attack, refused.stderr)
            assert named.lower() in refused.stderr.lower(), (attack, refused.stderr)
        assert dry_create(admin, name, pod()).returncode == 0
    finally:
        core.delete_namespace(name)


# ---- RBAC: the namespace, the cluster, other tenants ---------------------------------------
def refused(done: subprocess.CompletedProcess[str]) -> bool:
    return done.returncode != 0 and "forbidden" in done.stderr.lower()


def test_a_tenant_cannot_widen_its_rights(devbox: Devbox, tenants: Tenants) -> None:
    user, victim = tenants.attacker, tenants.victim
    attempts = {
        "relabel its namespace": (
            "label", "namespace", ATTACKER,
            "pod-security.kubernetes.io/enforce=privileged", "--overwrite", "--dry-run=server",
        ),
        "bind cluster-admin in its namespace": (
            "create", "rolebinding", "mine", "--clusterrole=cluster-admin",
            f"--group=stackube:project:{user.project_id}", "--dry-run=server",
        ),
        "bind cluster-admin cluster-wide": (
            "create", "clusterrolebinding", "mine", "--clusterrole=cluster-admin",
            "--group=system:authenticated", "--dry-run=server",
        ),
        "read another tenant's Secrets": ("-n", VICTIM, "get", "secrets"),
        "read another tenant's Services": ("-n", VICTIM, "get", "services"),
        "read another tenant's Endpoints": ("-n", VICTIM, "get", "endpointslices"),
        "read another tenant's Events": ("-n", VICTIM, "get", "events"),
        "read the DNS servers' namespace": ("-n", DNS_NAMESPACE, "get", "pods,configmaps"),
        "a token of the DNS account": ("-n", DNS_NAMESPACE, "create", "token", DNS_ACCOUNT),
        "list Services cluster-wide as its own ServiceAccount": (
            f"--as=system:serviceaccount:{ATTACKER}:default", "get", "services", "-A",
        ),
        "list Namespaces": ("get", "namespaces"),
        "read Tenants": ("get", "tenants"),
    }  # fmt: skip
    for attack, args in attempts.items():
        assert refused(user.kubectl(*args)), (attack, user.kubectl(*args).stderr)
    for kind, body in (
        ("Tenant", {"username": "x", "password": "p"}),
        ("Network", {"cidr": "10.9.0.0/24"}),
    ):
        doc = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": "x"}}
        done = user.kubectl(
            "create", "--dry-run=server", "-f", "-", stdin=json.dumps({**doc, "spec": body})
        )
        assert refused(done), (kind, done.stderr)
    # Positive controls: what it may do, and what an admin can (so the checks can fail).
    assert user.kubectl("-n", ATTACKER, "get", "secrets,services,events").returncode == 0
    assert victim.kubectl("-n", VICTIM, "get", "secrets").returncode == 0
    assert user.kubectl("auth", "can-i", "create", "deployments").stdout.strip() == "yes"
    relabel = admin_kubectl(devbox, *list(attempts["relabel its namespace"]))
    assert relabel.returncode == 0, relabel.stderr


def test_no_service_account_of_a_tenant_namespace_reads_beyond_it(
    devbox: Devbox, kube: k8s.ApiClient, tenants: Tenants
) -> None:
    accounts = [
        a.metadata.name for a in k8s.CoreV1Api(kube).list_namespaced_service_account(ATTACKER).items
    ]
    # The 2017-style DNS account in the tenant's namespace is gone with the design.
    assert "stackube-dns" not in accounts

    def can(subject: str, *what: str) -> str:
        done = admin_kubectl(devbox, "auth", "can-i", *what, f"--as={subject}")
        return done.stdout.strip()

    for account in [*accounts, "stackube-dns"]:
        subject = f"system:serviceaccount:{ATTACKER}:{account}"
        for verb, resource in (
            ("list", "services"),
            ("list", "endpointslices"),
            ("list", "namespaces"),
        ):
            assert can(subject, verb, resource, "-A") == "no", (account, resource)
        assert can(subject, "get", "secrets", "-n", VICTIM) == "no"
    # Positive control: the DNS servers' own account, outside every tenant namespace, can.
    assert (
        can(f"system:serviceaccount:{DNS_NAMESPACE}:{DNS_ACCOUNT}", "list", "services", "-A")
        == "yes"
    )


def test_keystone_roles_map_to_kubernetes_roles(tenants: Tenants) -> None:
    reader, member = tenants.reader, tenants.attacker
    whoami = json.loads(reader.kubectl("auth", "whoami", "-o", "json").stdout)
    groups = whoami["status"]["userInfo"]["groups"]
    assert f"stackube:project:{reader.project_id}:role:reader" in groups
    assert f"stackube:project:{reader.project_id}:role:member" not in groups
    assert reader.kubectl("get", "pods").returncode == 0  # view
    done = reader.kubectl("create", "configmap", "nope", "--from-literal=a=b", "--dry-run=server")
    assert refused(done), done.stderr
    assert reader.kubectl("get", "secrets").returncode != 0  # view does not read Secrets
    # Positive control: the tenant's own user is a member (edit).
    made = member.kubectl("create", "configmap", "yes", "--from-literal=a=b", "--dry-run=server")
    assert made.returncode == 0, made.stderr
    assert member.kubectl("auth", "can-i", "create", "rolebindings").stdout.strip() == "no"


def test_the_controller_writes_only_namespaces_it_made(devbox: Devbox, tenants: Tenants) -> None:
    """Its RBAC must let it write any namespace (tenants come and go); the admission
    policy keeps those writes to tenant namespaces."""
    as_controller = ("--as", CONTROLLER, "--dry-run=server")
    plain = f"plain-{secrets.token_hex(3)}"
    made = admin_kubectl(devbox, "create", "namespace", plain)
    assert made.returncode == 0, made.stderr
    try:
        for args in (
            ("label", "namespace", "kube-system", "x=y", "--overwrite"),
            ("label", "namespace", plain, "stackube.kubernetes.io/tenant=x", "--overwrite"),
            ("delete", "namespace", plain),
            ("-n", "kube-system", "create", "rolebinding", "x", "--clusterrole=admin", "--group=g"),
        ):
            done = admin_kubectl(devbox, *args, *as_controller)
            assert done.returncode != 0 and "stackube-controller-writes" in done.stderr, (
                args,
                done.stderr,
            )
    finally:
        admin_kubectl(devbox, "delete", "namespace", plain, "--wait=false")
    # Positive control: the same writes in a namespace it made for a Tenant.
    for args in (
        ("label", "namespace", ATTACKER, "x=y", "--overwrite"),
        ("-n", ATTACKER, "create", "rolebinding", "x", "--clusterrole=view", "--group=g"),
    ):
        done = admin_kubectl(devbox, *args, *as_controller)
        assert done.returncode == 0, (args, done.stderr)


# ---- the token webhook ---------------------------------------------------------------------
def webhook_review(
    devbox: Devbox, token: str, audiences: list[str] | None = None
) -> dict[str, Any]:
    """Ask stackube-auth directly, as kube-apiserver does (its client certificate)."""
    pki = PkiStore(devbox.settings.pki_dir)
    client = pki.paths("apiserver-webhook-client")
    context = ssl.create_default_context(cafile=str(pki.ca_paths.cert))
    context.load_cert_chain(str(client.cert), str(client.key))
    spec: dict[str, Any] = {"token": token}
    if audiences is not None:
        spec["audiences"] = audiences
    body = json.dumps(
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
    )
    request = urllib.request.Request(
        f"https://{devbox.settings.host}:{AUTH_PORT}/authenticate",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, context=context, timeout=20) as response:  # noqa: S310
        return dict(json.loads(response.read())["status"])


def test_only_well_formed_project_scoped_tenant_tokens_authenticate(
    devbox: Devbox, os_admin: Connection, tenants: Tenants
) -> None:
    user = tenants.attacker
    token = remember_secret(issue_token(user.credentials())[0])
    audience = devbox.settings.service_account_issuer
    assert webhook_review(devbox, token)["authenticated"] is True  # positive control
    granted = webhook_review(devbox, token, [audience, "vault"])
    assert granted["authenticated"] is True and granted["audiences"] == [audience]
    foreign = webhook_review(devbox, token, ["vault"])
    assert foreign["authenticated"] is False and "audience" in foreign["error"]
    for mangled in (f" {token}", f"{token}\n"):
        answer = webhook_review(devbox, mangled)
        assert answer["authenticated"] is False and "malformed" in answer["error"], answer
    # An unscoped token of the same user is not a tenant's (without "unscoped", Keystone
    # scopes it to the user's default project). Domain-scoped ones: tests/unit.
    base = devbox.settings.keystone_url
    unscoped = requests.post(
        f"{base}/auth/tokens",
        json={"auth": {"scope": "unscoped", "identity": {"methods": ["password"], "password": {
            "user": {"name": user.name, "domain": {"name": "stackube"},
                     "password": user.password}}}}},
        timeout=20,
    )  # fmt: skip
    assert unscoped.status_code == 201, unscoped.text
    unscoped_token = remember_secret(unscoped.headers["X-Subject-Token"])
    answer = webhook_review(devbox, unscoped_token)
    assert answer["authenticated"] is False and "scoped" in answer["error"], answer
    # Stackube's own service account: project-scoped, but not in the tenant domain.
    service = Credentials(base, "stackube", devbox.openstack.secrets.stackube_service, "service")
    service_token = remember_secret(issue_token(service)[0])
    answer = webhook_review(devbox, service_token)
    assert answer["authenticated"] is False and "domain" in answer["error"], answer


# ---- adoption and the 2017 password field --------------------------------------------------
def test_a_network_of_another_project_cannot_be_adopted(
    devbox: Devbox, kube: k8s.ApiClient, os_admin: Connection, tenants: Tenants
) -> None:
    objects = k8s.CustomObjectsApi(kube)
    victim_net = next(os_admin.network.networks(name=f"kube-{VICTIM}-{VICTIM}"))
    own_net = next(os_admin.network.networks(name=f"kube-{ATTACKER}-{ATTACKER}"))
    made = []
    try:
        for name, net in (("stolen", victim_net), ("own", own_net)):
            body = {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Network",
                "metadata": {"name": name},
                "spec": {"networkID": net.id},
            }
            objects.create_namespaced_custom_object(GROUP, VERSION, ATTACKER, "networks", body)
            made.append(name)

        def state(name: str) -> dict[str, Any]:
            found = objects.get_namespaced_custom_object(GROUP, VERSION, ATTACKER, "networks", name)
            return dict(found.get("status") or {})

        wait_for(lambda: state("stolen").get("state") == "Failed", 60, "adoption refused")
        assert "belongs to project" in state("stolen")["message"]
        assert victim_net.project_id in state("stolen")["message"]
        wait_for(lambda: state("own").get("state") == "Active", 60, "own network adopted")
    finally:
        for name in made:
            objects.delete_namespaced_custom_object(GROUP, VERSION, ATTACKER, "networks", name)
    assert os_admin.network.get_network(victim_net.id) is not None  # untouched


def test_spec_password_warns_and_reserved_names_are_refused(devbox: Devbox) -> None:
    def tenant(name: str, spec: dict[str, Any]) -> str:
        return yaml.safe_dump(
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "Tenant",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    warned = admin_kubectl(
        devbox,
        "create",
        "--dry-run=server",
        "-f",
        "-",
        stdin=tenant("t1", {"username": "u", "password": "p"}),
    )
    assert warned.returncode == 0 and "passwordSecretRef" in warned.stderr, warned.stderr
    ref = {"username": "u", "passwordSecretRef": {"namespace": "kube-system", "name": "s"}}
    quiet = admin_kubectl(devbox, "create", "--dry-run=server", "-f", "-", stdin=tenant("t1", ref))
    assert quiet.returncode == 0 and "Warning" not in quiet.stderr, quiet.stderr
    for name in ("kube-system", "default", "stackube-dns"):
        done = admin_kubectl(
            devbox, "create", "--dry-run=server", "-f", "-", stdin=tenant(name, ref)
        )
        assert done.returncode != 0 and "reserved" in done.stderr, (name, done.stderr)


def test_a_tenant_may_be_made_stricter_and_tenants_cannot_loosen_it(
    kube: k8s.ApiClient, tenants: Tenants
) -> None:
    core, objects = k8s.CoreV1Api(kube), k8s.CustomObjectsApi(kube)

    def enforced() -> str:
        labels = core.read_namespace(ATTACKER).metadata.labels
        return str(labels["pod-security.kubernetes.io/enforce"])

    root = pod(container={"securityContext": {"runAsUser": 0}})
    assert enforced() == "baseline"
    assert dry_create(tenants.attacker.kubectl, ATTACKER, root).returncode == 0  # the seed's
    patch = {"spec": {"podSecurity": "restricted"}}
    objects.patch_cluster_custom_object(GROUP, VERSION, "tenants", ATTACKER, patch)
    try:
        wait_for(lambda: enforced() == "restricted", 60, "the namespace enforces restricted")
        done = dry_create(tenants.attacker.kubectl, ATTACKER, root)
        assert refused(done) and "restricted" in done.stderr, done.stderr
    finally:
        patch = {"spec": {"podSecurity": "baseline"}}
        objects.patch_cluster_custom_object(GROUP, VERSION, "tenants", ATTACKER, patch)
    wait_for(lambda: enforced() == "baseline", 60, "back to baseline")
    looser = {"spec": {"podSecurity": "privileged"}}
    with pytest.raises(ApiException) as bad:
        objects.patch_cluster_custom_object(GROUP, VERSION, "tenants", ATTACKER, looser)
    assert bad.value.status == 422 and "podSecurity" in str(bad.value.body)


def test_a_tenant_cannot_point_endpoints_at_another_tenants_pods(
    devbox: Devbox, tenants: Tenants
) -> None:
    """Hand-made Endpoints or EndpointSlices would make kube-apiserver's service proxy
    (on the node, like the kubelet's probes) connect to any address, another tenant's pod
    too (CVE-2021-25740): Kubernetes' `edit` and `admin` roles no longer grant them, and
    a tenant's roles are those."""
    endpoints = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": "elsewhere"},
        "subsets": [{"addresses": [{"ip": "10.244.0.9"}], "ports": [{"port": 80}]}],
    }
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "elsewhere", "labels": {"kubernetes.io/service-name": "x"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.0.9"]}],
        "ports": [{"port": 80}],
    }
    for doc in (endpoints, slice_):
        done = dry_create(tenants.attacker.kubectl, ATTACKER, doc)
        assert refused(done), (doc["kind"], done.stderr)
        # positive control: the check is RBAC's, not a broken object
        admin = dry_create(lambda *a, **k: admin_kubectl(devbox, *a, **k), ATTACKER, doc)
        assert admin.returncode == 0, (doc["kind"], admin.stderr)
