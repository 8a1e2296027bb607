"""LoadBalancer Services on floating IPs: the controller's decisions, against an
in-memory stand-in for the four Neutron floating IP calls (no I/O)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from stackube.api.types import FLOATING_IP_ANNOTATION
from stackube.controller import loadbalancer as lb
from stackube.errors import PermanentError, TemporaryError
from stackube.openstack.network import FloatingIP

pytestmark = pytest.mark.unit

EXT = "ext-net"


class FloatingIPs:
    """What Neutron holds: {id: FloatingIP}; addresses handed out in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.ips: dict[str, FloatingIP] = {}
        self._ids = itertools.count(1)
        self._addresses = (f"198.51.100.{n}" for n in itertools.count(10))
        neutron = lb.neutron
        monkeypatch.setattr(neutron, "get_floating_ip", lambda _c, i: self.ips.get(i))
        monkeypatch.setattr(
            neutron,
            "find_floating_ips",
            lambda _c, project, text: [
                f for f in self.ips.values() if f.project_id == project and f.description == text
            ],
        )
        monkeypatch.setattr(neutron, "create_floating_ip", self.create)
        monkeypatch.setattr(neutron, "delete_floating_ip", lambda _c, i: self.ips.pop(i, None))

    def create(
        self, _conn: Any, network: str, project: str, text: str, address: str | None = None
    ) -> FloatingIP:
        taken = {f.address for f in self.ips.values()}
        if address in taken:  # Neutron: 409 IpAddressAlreadyAllocated
            raise TemporaryError(f"IP address {address} already allocated")
        made = FloatingIP(
            f"fip-{next(self._ids)}", address or next(self._addresses), project, network, text
        )
        self.ips[made.id] = made
        return made


def reconciler(project: str = "project-a") -> lb.LoadBalancerReconciler:
    return lb.LoadBalancerReconciler(lambda: None, EXT, lambda _ns: project, lambda _ns: project)  # type: ignore[arg-type,return-value]


def service(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "team-a", "name": "web", "uid": "u-1", "annotations": {}},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], **spec},
    }


def test_which_services_concern_us() -> None:
    assert lb.wants_floating_ip(service())
    assert not lb.wants_floating_ip(service(type="NodePort"))
    assert not lb.wants_floating_ip(service(loadBalancerClass="example.com/other"))
    deleting = service()
    deleting["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    assert not lb.wants_floating_ip(deleting) and lb.concerns_us(deleting)
    changed = service(type="ClusterIP")
    assert not lb.concerns_us(changed)
    changed["metadata"]["finalizers"] = [lb.FINALIZER]
    assert lb.concerns_us(changed)  # its floating IP is still to be released


def test_one_floating_ip_per_service_found_again_after_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neutron = FloatingIPs(monkeypatch)
    body = service()
    first = reconciler().ensure(body)
    assert first.created and first.floating_ip.project_id == "project-a"
    assert first.floating_ip.network_id == EXT
    # The annotation was never written (a crash): the description finds it again.
    again = reconciler().ensure(body)
    assert again.floating_ip == first.floating_ip and not again.created
    assert len(neutron.ips) == 1


def test_an_address_is_asked_for_by_annotation_or_load_balancer_ip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    FloatingIPs(monkeypatch)
    body = service(loadBalancerIP="198.51.100.77")
    assert reconciler().ensure(body).floating_ip.address == "198.51.100.77"
    other = service()
    other["metadata"]["uid"] = "u-2"
    other["metadata"]["annotations"][lb.ADDRESS_ANNOTATION] = "198.51.100.77"
    with pytest.raises(TemporaryError, match="already allocated"):
        reconciler().ensure(other)
    for bad, message in (("nonsense", "is not an IP address"), ("2001:db8::1", "only IPv4")):
        with pytest.raises(PermanentError, match=message):
            lb.requested_address(service(loadBalancerIP=bad))


def test_a_floating_ip_deleted_behind_our_back_comes_back_with_its_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neutron = FloatingIPs(monkeypatch)
    body = service()
    made = reconciler().ensure(body).floating_ip
    body["metadata"]["annotations"][FLOATING_IP_ANNOTATION] = made.id
    body["status"] = {"loadBalancer": {"ingress": [{"ip": made.address}]}}
    neutron.ips.clear()
    repaired = reconciler().ensure(body)
    assert repaired.replaced == made.id and repaired.floating_ip.address == made.address
    # Its address went to someone else meanwhile: a new one, rather than none.
    neutron.ips.clear()
    neutron.create(None, EXT, "project-b", "someone else's", made.address)
    body["metadata"]["annotations"][FLOATING_IP_ANNOTATION] = repaired.floating_ip.id
    moved = reconciler().ensure(body)
    assert moved.created and moved.floating_ip.address != made.address


def test_release_deletes_only_the_services_own_floating_ips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    neutron = FloatingIPs(monkeypatch)
    body = service()
    made = reconciler().ensure(body).floating_ip
    kept = neutron.create(None, EXT, "project-a", "the tenant's own floating IP")
    # An annotation naming a floating IP we did not make (hand-edited) is not deleted.
    body["metadata"]["annotations"][FLOATING_IP_ANNOTATION] = kept.id
    assert reconciler().release(body) == [made.address]
    assert list(neutron.ips) == [kept.id]
    assert reconciler().release(body) == []  # idempotent
