"""Leader election on a coordination.k8s.io Lease (one active controller at a time)."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from stackube.kube.client import REQUEST_TIMEOUT
from stackube.kube.errors import translating

log = logging.getLogger(__name__)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class LeaseLock:
    api: k8s.ApiClient
    namespace: str
    name: str
    identity: str
    duration_seconds: int = 15

    @translating("leader election lease")
    def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the lease afterwards. Optimistic concurrency
        (resourceVersion) makes two contenders safe."""
        coordination = k8s.CoordinationV1Api(self.api)
        now = _now()
        try:
            lease = coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = k8s.V1Lease(
                metadata=k8s.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=k8s.V1LeaseSpec(
                    holder_identity=self.identity,
                    lease_duration_seconds=self.duration_seconds,
                    acquire_time=now,
                    renew_time=now,
                    lease_transitions=0,
                ),
            )
            try:
                coordination.create_namespaced_lease(
                    self.namespace, body, _request_timeout=REQUEST_TIMEOUT
                )
            except ApiException as create_exc:
                if create_exc.status == 409:
                    return False
                raise
            return True
        spec = lease.spec
        holder = spec.holder_identity
        renewed = spec.renew_time or spec.acquire_time
        expired = (
            renewed is None
            or renewed
            + datetime.timedelta(seconds=spec.lease_duration_seconds or self.duration_seconds)
            < now
        )
        if holder and holder != self.identity and not expired:  # None: released
            return False
        if holder != self.identity:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            log.info("taking over leader lease from %s", holder)
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = self.duration_seconds
        try:
            coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise
        return True

    @translating("leader election lease")
    def holder(self) -> tuple[str, datetime.datetime | None]:
        """(holder identity or "", last renewal) as the Lease says now."""
        coordination = k8s.CoordinationV1Api(self.api)
        try:
            lease = coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException as exc:
            if exc.status == 404:
                return "", None
            raise
        return str(lease.spec.holder_identity or ""), lease.spec.renew_time

    @translating("leader election lease")
    def release(self) -> None:
        coordination = k8s.CoordinationV1Api(self.api)
        try:
            lease = coordination.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=REQUEST_TIMEOUT
            )
        except ApiException:
            return
        if lease.spec.holder_identity == self.identity:
            lease.spec.holder_identity = None
            lease.spec.renew_time = None
            coordination.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=REQUEST_TIMEOUT
            )
