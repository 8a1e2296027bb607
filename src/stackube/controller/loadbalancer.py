"""LoadBalancer Services on Neutron floating IPs (docs/decisions/0012-load-balancers.md).

A Service of `type: LoadBalancer` gets a floating IP on the external network, made in
the Keystone project of the Service's namespace (its Tenant's, or the system project),
so Neutron's quotas and accounting apply. It is associated with no port: the tenant's
router owns the address (stackube-proxy routes it locally there and DNATs its ports to
the Service's endpoints). The controller writes the address into
`status.loadBalancer.ingress`, keeps the floating IP's id in an annotation, and holds
the Service with a finalizer until the floating IP is released (Service deleted, or its
type changed).

The address can be asked for with `spec.loadBalancerIP` (deprecated upstream, still
served) or the annotation `stackube.kubernetes.io/load-balancer-ip`, the floating IP's
`floating_ip_address`. A floating IP deleted behind our back is made again (the same
address if it is still free) by the next pass.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stackube.api.types import FLOATING_IP_ANNOTATION
from stackube.errors import PermanentError, StackubeError
from stackube.kube.client import ApiClient
from stackube.openstack import network as neutron
from stackube.openstack.cloud import Connection

log = logging.getLogger(__name__)

FINALIZER = "stackube.kubernetes.io/load-balancer"
ADDRESS_ANNOTATION = "stackube.kubernetes.io/load-balancer-ip"
DESCRIPTION_PREFIX = "stackube LoadBalancer "


def _meta(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def is_ours(body: Mapping[str, Any]) -> bool:
    """A LoadBalancer Service this controller serves (no other loadBalancerClass)."""
    spec = body.get("spec") or {}
    return spec.get("type") == "LoadBalancer" and not spec.get("loadBalancerClass")


def wants_floating_ip(body: Mapping[str, Any]) -> bool:
    return is_ours(body) and not _meta(body).get("deletionTimestamp")


def concerns_us(body: Mapping[str, Any]) -> bool:
    """Ours, or it still holds our finalizer (type changed, or being deleted)."""
    return is_ours(body) or FINALIZER in (_meta(body).get("finalizers") or [])


def requested_address(body: Mapping[str, Any]) -> str | None:
    """The address asked for (annotation first, then spec.loadBalancerIP); raises
    PermanentError if it is not an IPv4 address."""
    annotations = _meta(body).get("annotations") or {}
    text = annotations.get(ADDRESS_ANNOTATION) or (body.get("spec") or {}).get("loadBalancerIP")
    if not text:
        return None
    try:
        address = ipaddress.ip_address(str(text))
    except ValueError:
        raise PermanentError(f"load balancer address {text!r} is not an IP address") from None
    if address.version != 4:
        raise PermanentError(f"load balancer address {text}: only IPv4 is served")
    return str(address)


def description(body: Mapping[str, Any]) -> str:
    """The floating IP's description: finds it again after a crash before the
    annotation was written (the uid tells a re-created Service of one name apart)."""
    meta = _meta(body)
    return f"{DESCRIPTION_PREFIX}{meta.get('namespace')}/{meta.get('name')} ({meta.get('uid')})"


def current_address(body: Mapping[str, Any]) -> str | None:
    ingress = ((body.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return next((str(i["ip"]) for i in ingress if i.get("ip")), None)


@dataclass(frozen=True)
class Allocation:
    floating_ip: neutron.FloatingIP
    created: bool = False
    replaced: str | None = None  # the id of a floating IP that had gone or moved


class LoadBalancerReconciler:
    """Neutron's side of LoadBalancer Services. `project_of(namespace)` is the Keystone
    project of a namespace (raises TemporaryError while its Tenant is not ready);
    `owner_if_known(namespace)` the same for a finalizer, None where it cannot say."""

    def __init__(
        self,
        conn: Callable[[], Connection],
        external_network_id: str | None,
        project_of: Callable[[str], str],
        owner_if_known: Callable[[str], str | None],
        kube: ApiClient | None = None,
    ) -> None:
        self.conn = conn
        self.kube = kube  # for Events
        self._external_network_id = external_network_id
        self.project_of = project_of
        self.owner_if_known = owner_if_known

    @property
    def external_network_id(self) -> str:
        if not self._external_network_id:
            raise PermanentError(
                "LoadBalancer Services need the external network (config ext-net-id)"
            )
        return self._external_network_id

    def ensure(self, body: Mapping[str, Any]) -> Allocation:
        """The Service's floating IP, made if missing (raises TemporaryError or
        PermanentError from Neutron: quota, address taken, address outside the range)."""
        namespace = str(_meta(body).get("namespace"))
        project = self.project_of(namespace)
        wanted = requested_address(body)
        conn = self.conn()
        known = (_meta(body).get("annotations") or {}).get(FLOATING_IP_ANNOTATION)
        floating_ip = neutron.get_floating_ip(conn, known) if known else None
        if floating_ip is not None and (
            floating_ip.project_id != project
            or floating_ip.network_id != self.external_network_id
            or (wanted and floating_ip.address != wanted)
        ):
            # Asked for another address now (or the floating IP is not what we made).
            if floating_ip.description == description(body):
                neutron.delete_floating_ip(conn, floating_ip.id)
            floating_ip = None
        if floating_ip is None:
            found = [
                f
                for f in neutron.find_floating_ips(conn, project, description(body))
                if not wanted or f.address == wanted
            ]
            floating_ip = found[0] if found else None
        if floating_ip is not None:
            return Allocation(floating_ip)
        # Made again after a loss keeps its address where it can.
        address = wanted or (current_address(body) if known else None)
        try:
            made = neutron.create_floating_ip(
                conn, self.external_network_id, project, description(body), address
            )
        except StackubeError:  # Neutron answers 409 for an address in use
            if address and not wanted:  # the old address went to someone else
                made = neutron.create_floating_ip(
                    conn, self.external_network_id, project, description(body)
                )
            else:
                raise
        log.info(
            "service %s/%s: floating IP %s (%s) in project %s",
            namespace,
            _meta(body).get("name"),
            made.address,
            made.id,
            project,
        )
        return Allocation(made, created=True, replaced=known or None)

    def release(self, body: Mapping[str, Any]) -> list[str]:
        """Deletes the Service's floating IPs (the annotated one, and any made for it
        whose id was not recorded); returns their addresses."""
        conn = self.conn()
        project = self.owner_if_known(str(_meta(body).get("namespace")))
        released = []
        known = (_meta(body).get("annotations") or {}).get(FLOATING_IP_ANNOTATION)
        candidates = []
        if known:
            found = neutron.get_floating_ip(conn, known)
            if found is not None and found.description == description(body):
                candidates.append(found)
        if project:
            candidates += neutron.find_floating_ips(conn, project, description(body))
        for floating_ip in {f.id: f for f in candidates}.values():
            neutron.delete_floating_ip(conn, floating_ip.id)
            released.append(floating_ip.address)
            log.info(
                "service %s/%s: released floating IP %s (%s)",
                _meta(body).get("namespace"),
                _meta(body).get("name"),
                floating_ip.address,
                floating_ip.id,
            )
        return released
