"""The Tenant reconciler: a Keystone project, user and role; a namespace; the tenant's
RBAC; its default Network. Level-based: every pass reads what exists and fixes what
differs, so a crash between any two steps converges on the next pass.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stackube.api import naming
from stackube.api.types import (
    DNS_NAMESPACE,
    LABEL_TENANT,
    SpecError,
    TenantSpec,
    parse_tenant,
    pod_security_labels,
    runtime_class_labels,
)
from stackube.config import ControllerConfig
from stackube.controller import dns, rbac
from stackube.controller.loadbalancer import DESCRIPTION_PREFIX
from stackube.controller.timeline import step
from stackube.errors import PermanentError, TemporaryError
from stackube.faults import checkpoint
from stackube.kube import apply
from stackube.kube import resources as kube
from stackube.kube.client import ApiClient
from stackube.netpol.defaults import default_policy, default_policy_reference
from stackube.openstack import identity
from stackube.openstack import network as neutron
from stackube.openstack import volume as cinder
from stackube.openstack.cloud import Connection

log = logging.getLogger(__name__)

# The external steps of a Tenant, in order: crash points for the crash-safety tests.
TENANT_STEPS = (
    "keystone-project",
    "namespace",
    "network-object",
    "keystone-user",
    "keystone-role",
    "rbac",
    "dns",
)
# Not under kopf's own annotation prefix (kopf hides those from its diffs).
NETWORK_STATE_ANNOTATION = "network.stackube.kubernetes.io/state"
FIELD_MANAGER = "stackube-controller"
TENANT_DELETE_STEPS = ("namespace-deleted", "networks-gone", "user-deleted", "project-deleted")


@dataclass(frozen=True)
class TenantResult:
    """What a pass found: the ids for status, and whether the default Network is Active."""

    project_id: str
    user_id: str
    network_state: str | None
    network_message: str
    dns_ready: bool = False
    dns_message: str = ""


class TenantReconciler:
    def __init__(
        self,
        openstack: Callable[[], Connection],
        kube_api: ApiClient,
        config: ControllerConfig,
    ) -> None:
        self._openstack = openstack
        self.kube = kube_api
        self.config = config
        self._domain_id: str | None = None
        self._member_role: str | None = None
        # user id -> digest of the password Keystone last accepted (memory only): a pass
        # need not ask Keystone for a token to learn that nothing changed.
        self._verified: dict[str, str] = {}
        # The summary last written on each Tenant's Network (publish_summary): a pass
        # that would write the same one reads nothing.
        self._summaries: dict[str, dict[str, Any]] = {}
        # Tenants whose stale RoleBindings this process has removed.
        self._bindings_tidied: set[str] = set()
        # Tenants whose default NetworkPolicy is known absent (no DELETE every pass).
        self._no_default_policy: set[str] = set()

    @property
    def conn(self) -> Connection:
        return self._openstack()

    def _domain(self) -> str:
        if self._domain_id is None:
            found = identity.find_domain_id(self.conn, self.config.tenant_domain_name)
            if found is None:
                raise PermanentError(
                    f"Keystone domain {self.config.tenant_domain_name!r} for tenants does not exist"
                )
            self._domain_id = found
        return self._domain_id

    def _member(self) -> str:
        if self._member_role is None:
            self._member_role = identity.ensure_role(self.conn, "member")
        return self._member_role

    # ---- pieces -------------------------------------------------------------------------
    def password(self, spec: TenantSpec) -> str:
        if spec.password is not None:
            return spec.password
        ref = spec.password_secret_ref
        if ref is None:  # parse_tenant guarantees one of the two
            raise PermanentError("spec.password or spec.passwordSecretRef is required")
        value = kube.secret_value(self.kube, ref.namespace, ref.name, ref.key)
        if not value:
            raise TemporaryError(
                f"Secret {ref.namespace}/{ref.name} has no key {ref.key!r} (yet)", retry_after=5
            )
        return value

    def project(self, spec: TenantSpec, status: Mapping[str, Any]) -> identity.Project:
        if spec.tenant_id is not None:
            adopted = identity.get_project(self.conn, spec.tenant_id)
            if adopted is None:
                raise PermanentError(f"adopted Keystone project {spec.tenant_id} does not exist")
            if naming.SYSTEM_PROJECT_TAG in adopted.tags:
                # Its members would be members of the system network's project.
                raise PermanentError(
                    f"adopted Keystone project {spec.tenant_id} is Stackube's system project "
                    "(the system network's): it cannot be a Tenant"
                )
            if adopted.domain_id != self._domain():
                # The webhook authenticates only tokens of the tenant domain's projects,
                # and Stackube manages users only there: elsewhere the Tenant would work
                # for nobody.
                raise PermanentError(
                    f"adopted Keystone project {spec.tenant_id} is not in the tenant domain "
                    f"{self.config.tenant_domain_name!r}: only projects there can be Tenants"
                )
            # Checked when the project is first taken (once this Tenant records it, a later
            # Tenant naming it fails on its own check): not a Tenant list on every pass.
            other = None
            if status.get("projectID") != adopted.id:
                other = project_owner(spec.name, adopted, kube.list_tenants(self.kube))
            if other is not None:
                # Both namespaces would bind the project's groups: each tenant's users
                # would be in the other's namespace, and its networks adoptable there.
                raise PermanentError(
                    f"adopted Keystone project {spec.tenant_id} is Tenant {other!r}'s"
                )
            return adopted
        recorded = status.get("projectID")
        if recorded:
            project = identity.get_project(self.conn, recorded)
            if project is None:
                # Recreating it would orphan whatever the old project still owns.
                raise PermanentError(
                    f"Keystone project {recorded} was deleted outside Stackube: "
                    "delete this Tenant and create it again"
                )
            return project
        domain = self._domain()
        project = identity.find_project(self.conn, spec.name, domain)
        if project is None:
            project = identity.create_project(
                self.conn,
                spec.name,
                domain,
                description=f"Stackube tenant {spec.name}",
                tags=(naming.PROJECT_TAG,),
            )
            log.info("tenant %s: created Keystone project %s", spec.name, project.id)
            checkpoint("keystone-project")
        elif naming.PROJECT_TAG not in project.tags:
            raise PermanentError(
                f"a Keystone project named {spec.name!r} exists in domain "
                f"{self.config.tenant_domain_name!r} and was not made by Stackube: "
                "set spec.tenantID to adopt it"
            )
        return project

    def user(self, spec: TenantSpec, password: str, project: identity.Project) -> identity.User:
        domain = self._domain()
        user = identity.find_user(self.conn, spec.username, domain)
        if user is None:
            user = identity.create_user(self.conn, spec.username, password, domain, project.id)
            log.info("tenant %s: created Keystone user %s", spec.name, user.id)
            self._verified[user.id] = _digest(password)
            checkpoint("keystone-user")
            return user
        if user.default_project_id not in (None, project.id):
            raise PermanentError(
                f"Keystone user {spec.username!r} already belongs to another tenant's project"
            )
        # Setting a password revokes the user's tokens: only when it really changed.
        if self._verified.get(user.id) == _digest(password):
            return user
        if not identity.password_works(self.config.auth_url, user.id, password):
            identity.set_password(self.conn, user.id, password)
            log.info("tenant %s: updated the password of Keystone user %s", spec.name, user.id)
        self._verified[user.id] = _digest(password)
        return user

    def namespace(
        self, spec: TenantSpec, project: identity.Project, current: kube.Namespace | None
    ) -> None:
        """Make or relabel the Tenant's namespace; `current` is the namespace as read
        at the start of the pass (None: absent), not terminating."""
        # Pod Security labels too: tenants cannot write namespaces, and every pass puts
        # back what someone with that right changed.
        labels = {
            **naming.tenant_labels(spec.name, project.id),
            **pod_security_labels(spec.pod_security),
        }
        runtime = runtime_class_labels(spec)
        if current is None:
            set_runtime = {k: v for k, v in runtime.items() if v is not None}
            kube.create_namespace(self.kube, spec.name, {**labels, **set_runtime})
            log.info("tenant %s: created namespace", spec.name)
            checkpoint("namespace")
            return
        if not naming.owns_namespace(current.labels, spec.name):
            raise PermanentError(
                f"namespace {spec.name} exists and was not made for this Tenant (labels "
                f"{LABEL_TENANT}={spec.name} and app.kubernetes.io/managed-by="
                "stackube-controller missing)"
            )
        wanted: dict[str, str | None] = {**labels, **runtime}
        if any(current.labels.get(k) != v for k, v in wanted.items()):
            kube.label_namespace(self.kube, spec.name, wanted)

    def default_network(
        self, spec: TenantSpec, project: identity.Project
    ) -> tuple[str | None, str]:
        network = kube.get_network(self.kube, spec.name, spec.name)
        if network is None:
            kube.create_network(
                self.kube,
                spec.name,
                spec.name,
                {"cidr": self.config.tenant_cidr, "gateway": self.config.tenant_gateway},
                naming.tenant_labels(spec.name, project.id),
            )
            log.info("tenant %s: created Network %s/%s", spec.name, spec.name, spec.name)
            checkpoint("network-object")
            return None, "Network created"
        status = network.get("status") or {}
        return status.get("state"), status.get("message", "")

    # ---- the pass ---------------------------------------------------------------------
    def reconcile(self, body: Mapping[str, Any]) -> TenantResult:
        try:
            spec = parse_tenant(body)
        except SpecError as exc:
            raise PermanentError(str(exc)) from exc
        status = body.get("status") or {}
        with step("password"):
            password = self.password(spec)
        with step("namespace-read"):
            current = kube.get_namespace(self.kube, spec.name)
        if current is not None and current.terminating:
            # A Tenant deleted and made again: the old namespace is still emptying (its
            # Tenant's finalizer did not wait for it). Nothing is made until it is gone.
            raise TemporaryError(f"namespace {spec.name} is still terminating", retry_after=2)
        with step("keystone-project"):
            project = self.project(spec, status)
        # The namespace and Network first: Neutron's work (the slowest part) then runs
        # in the Network's own pass while this one finishes Keystone and RBAC.
        with step("namespace"):
            self.namespace(spec, project, current)
        with step("network-object"):
            network_state, network_message = self.default_network(spec, project)
        with step("keystone-user"):
            user = self.user(spec, password, project)
        with step("keystone-role"):
            identity.grant_project_role(self.conn, user.id, project.id, self._member())
        checkpoint("keystone-role")
        with step("rbac"):
            self.role_bindings(spec.name, project.id)
        checkpoint("rbac")
        with step("dns"):
            self.dns(spec.name, project.id, str(body["metadata"].get("uid") or ""))
        checkpoint("dns")
        with step("network-policy"):
            self.default_network_policy(spec, project.id)
        with step("dns-readiness"):
            dns_ready, dns_message = dns.dns_readiness(
                spec.name, kube.deployment_replicas(self.kube, DNS_NAMESPACE, spec.name)
            )
        return TenantResult(
            project.id, user.id, network_state, network_message, dns_ready, dns_message
        )

    def role_bindings(self, tenant: str, project_id: str) -> None:
        """The Keystone role mapping as RoleBindings in the tenant's namespace; bindings
        the mapping no longer names (and 2017-style ones) are removed."""
        wanted = rbac.tenant_role_bindings(tenant, project_id, self.config.role_mapping)
        for binding in wanted:
            kube.apply_role_binding(self.kube, tenant, binding)
        if tenant in self._bindings_tidied:
            return
        # Once per tenant and process (the mapping is configuration): deleting an absent
        # binding is a no-op, so no list (or right to list) is needed.
        for name in rbac.stale_role_bindings(rbac.CONTROLLER_ROLE_BINDINGS, wanted):
            if kube.delete_role_binding(self.kube, tenant, name):
                log.info("tenant %s: removed RoleBinding %s (no longer mapped)", tenant, name)
        self._bindings_tidied.add(tenant)

    def dns(self, tenant: str, project_id: str, tenant_uid: str) -> None:
        """The tenant's DNS server, in the DNS namespace: applied every pass (one PATCH
        per object; nothing changes when nothing differs). Owned by the Tenant, so the
        garbage collector removes it even if the finalizer never runs to its end."""
        settings = dns.DnsSettings(
            image=self.config.dns_image,
            cluster_domain=self.config.cluster_domain,
            apiserver_url=self.config.pod_apiserver_url,
        )
        objects = dns.dns_objects(tenant, project_id, settings, tenant_uid)
        apply.server_side_apply(self.kube, objects, FIELD_MANAGER)

    def default_network_policy(self, spec: TenantSpec, project_id: str) -> None:
        """spec.defaultNetworkPolicy as the NetworkPolicy stackube-default-deny in the
        tenant's namespace (applied on every pass of the Tenant, which puts back what
        the tenant's users edited or deleted), or its removal for "None"."""
        policy = default_policy(
            spec.name, spec.default_network_policy, naming.tenant_labels(spec.name, project_id)
        )
        if policy is not None:
            apply.server_side_apply(self.kube, [policy], FIELD_MANAGER)
            self._no_default_policy.discard(spec.name)
            return
        if spec.name in self._no_default_policy:
            return
        if apply.delete_objects(self.kube, [default_policy_reference(spec.name)]):
            log.info("tenant %s: default NetworkPolicy removed", spec.name)
        self._no_default_policy.add(spec.name)

    def publish_summary(self, tenant: str, summary: dict[str, Any]) -> None:
        """Put the Tenant's state where its users can read it: `status.tenant` of its
        default Network (they cannot read Tenants, which may hold spec.password).
        Written only when it changed; nothing while the Network is absent or going."""
        if self._summaries.get(tenant) == summary:
            return
        network = kube.get_network(self.kube, tenant, tenant)
        if network is None or network["metadata"].get("deletionTimestamp"):
            return
        if (network.get("status") or {}).get("tenant") != summary:
            kube.patch_network_status(self.kube, tenant, tenant, {"tenant": summary})
        self._summaries[tenant] = summary

    def note_network_state(self, tenant: str, state: str) -> None:
        """Record the default Network's state on the Tenant (an annotation), which
        makes kopf run the Tenant's pass again."""
        kube.annotate_tenant(self.kube, tenant, {NETWORK_STATE_ANNOTATION: state})

    def finalize(
        self, body: Mapping[str, Any], remove_network: Callable[[Mapping[str, Any]], None]
    ) -> None:
        """Remove everything in a safe order, in one pass: the namespace's deletion asked
        for, the DNS server, each of its Networks removed by `remove_network` (a Network
        object: its Neutron teardown, what the Network's own finalizer would do, then
        its deletion), then the Keystone user, the project's Cinder volumes,
        security groups and floating IPs, the project. Raises TemporaryError while
        something must be waited for (a PersistentVolumeClaim still in the namespace, a
        volume still attached, a port Stackube did not make); the next pass starts over
        and skips what is done."""
        name = str(body["metadata"]["name"])
        self._summaries.pop(name, None)
        spec_body = body.get("spec") or {}
        status = body.get("status") or {}
        with step("namespace-read"):
            namespace = kube.get_namespace(self.kube, name)
        # Not the Tenant's (it failed on someone else's namespace): left alone.
        if namespace is not None and naming.owns_namespace(namespace.labels, name):
            owned, networks = True, self._delete_namespace(name, namespace)
        else:
            owned, networks = False, []
        # Not in the tenant's namespace, so not emptied with it.
        with step("dns-delete"):
            self._delete_dns(name)
        for network in networks:
            with step("network-remove"):
                remove_network(network)
        checkpoint("networks-gone")
        domain = self._domain()
        project_id = spec_body.get("tenantID") or status.get("projectID")
        if not project_id:
            with step("keystone-project-find"):
                found = identity.find_project(self.conn, name, domain)
            project_id = found.id if found and naming.PROJECT_TAG in found.tags else None
        username = spec_body.get("username")
        if username:
            with step("keystone-user-delete"):
                user = identity.find_user(self.conn, str(username), domain)
                if user is not None and user.default_project_id in (None, project_id):
                    identity.delete_user(self.conn, user.id)
                    log.info("tenant %s: deleted Keystone user %s", name, user.id)
        checkpoint("user-deleted")
        if project_id and not spec_body.get("tenantID"):
            with step("cinder-volumes-delete"):
                self._delete_volumes(name, project_id, claims_to_await=owned)
            # Neutron keeps a deleted project's security groups (its default group, with
            # our Services rule): remove them while the project still exists.
            with step("security-groups-delete"):
                groups = neutron.delete_security_groups(self.conn, project_id)
            if groups:
                log.info("tenant %s: deleted %d security group(s)", name, groups)
            # LoadBalancer floating IPs whose Service's finalizer did not run (e.g. the
            # controller was down while the namespace went): never billed to a ghost.
            with step("floating-ips-release"):
                released = neutron.delete_floating_ips(self.conn, project_id, DESCRIPTION_PREFIX)
            if released:
                log.info("tenant %s: released floating IPs %s", name, ", ".join(released))
            with step("keystone-project-delete"):
                identity.delete_project(self.conn, project_id)
            log.info("tenant %s: deleted Keystone project %s", name, project_id)
        checkpoint("project-deleted")

    def _delete_namespace(self, name: str, namespace: kube.Namespace) -> list[dict[str, Any]]:
        """Ask for the deletion of the Tenant's namespace (as read, the Tenant's); the
        Networks in it, for the caller to tear down and delete. They are not deleted
        here: a Network deleted before its teardown would have its own finalizer race
        the Tenant's for it (Kubernetes' namespace controller deletes them too, from
        5 s after the namespace's deletion, by which time they are usually gone).

        The namespace is not awaited: Kubernetes' namespace controller empties it from
        5 s after the request (its namespaceDeletionGracePeriod), and again every 8 s
        while content with a finalizer remains. Nothing else in it needs the Keystone
        project or Neutron to go: pods' ports go with their Networks; Cinder volumes and
        floating IPs are the caller's, by project."""
        if not namespace.terminating:
            # First, so that no Network can be made in it after the list below.
            with step("namespace-delete"):
                kube.delete_namespace(self.kube, name)
        checkpoint("namespace-deleted")
        with step("networks-list"):
            return kube.list_networks(self.kube, name)

    def _delete_dns(self, name: str) -> None:
        if apply.delete_objects(self.kube, dns.dns_references(name)):
            log.info("tenant %s: deleted its DNS server", name)

    def _delete_volumes(self, name: str, project_id: str, claims_to_await: bool) -> None:
        """The project's Cinder volumes (the tenant's disks die with it, as its networks
        do). Raises TemporaryError while the namespace still has a PersistentVolumeClaim
        (a terminating pod may still write to its volume; the CSI driver deletes the
        claimed ones itself; only `claims_to_await`: the namespace was the Tenant's),
        then while a volume is attached or being deleted."""
        volumes = cinder.project_volumes(self.conn, project_id)
        if volumes is None:  # no block-storage service in this cloud
            return
        # Also with no volume yet: one may be being provisioned for a claim.
        if claims_to_await:
            claims = kube.claim_names(self.kube, name)
            if claims:
                raise TemporaryError(
                    f"waiting for {len(claims)} PersistentVolumeClaim(s) in namespace {name} "
                    f"to go before its Cinder volumes ({', '.join(claims[:5])})",
                    retry_after=5,
                )
        if not volumes:
            return
        refused = []
        for volume in volumes:
            if volume.status not in cinder.DELETABLE:
                continue
            try:
                cinder.delete_volume(self.conn, volume.id)
            except TemporaryError as exc:  # e.g. its status changed since the list
                refused.append(f"{volume.id}: {exc}")
                continue
            log.info("tenant %s: deleting Cinder volume %s", name, volume.id)
        states = ", ".join(sorted(f"{v.id} {v.status}" for v in volumes))
        why = f"; refused: {'; '.join(refused)}" if refused else ""
        raise TemporaryError(
            f"waiting for {len(volumes)} Cinder volume(s) to be deleted ({states}){why}",
            retry_after=2,
        )


def project_owner(
    tenant: str, project: identity.Project, tenants: list[dict[str, Any]]
) -> str | None:
    """Another Tenant that owns this Keystone project (its id in that Tenant's spec or
    status, or a project Stackube made for a Tenant of another name), else None."""
    for other in tenants:
        name = str((other.get("metadata") or {}).get("name", ""))
        spec, status = other.get("spec") or {}, other.get("status") or {}
        if name != tenant and project.id in (spec.get("tenantID"), status.get("projectID")):
            return name
    if naming.PROJECT_TAG in project.tags and project.name != tenant:
        return project.name
    return None


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()
