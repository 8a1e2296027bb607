"""kopf wiring: which events run which reconciler, and how outcomes become status,
conditions, Events, retries and metrics.

kopf gives us the watch streams, one-at-a-time handling per object, finalizers,
retries and the liveness endpoint. The decisions stay in the reconcilers; here:
- create, spec update, operator resume and a periodic timer all run the same
  level-based pass (the timer repairs drift, e.g. a Neutron network deleted by hand);
- TemporaryError -> state Pending with the reason, retried with backoff
  (or after Retry-After); PermanentError -> state Failed, a Warning Event, no retry
  until the spec changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import kopf

from stackube import faults
from stackube.api.conditions import set_condition
from stackube.api.types import (
    FINALIZER,
    FLOATING_IP_ANNOTATION,
    GROUP,
    NETWORK_PLURAL,
    TENANT_PLURAL,
    VERSION,
    State,
)
from stackube.controller import loadbalancer as lb
from stackube.controller import metrics, timeline
from stackube.controller.loadbalancer import LoadBalancerReconciler
from stackube.controller.network import NetworkReconciler
from stackube.controller.tenant import TenantReconciler
from stackube.errors import PermanentError, StackubeError, TemporaryError
from stackube.kube import pods as kube_pods
from stackube.kube import resources as kube_resources
from stackube.kube.client import ApiClient

log = logging.getLogger(__name__)

RESYNC_SECONDS = 60.0
MAX_BACKOFF_SECONDS = 60.0


@dataclass
class Reconcilers:
    tenants: TenantReconciler
    networks: NetworkReconciler
    # Active Tenants have a DNS server that answers (off: Active once the network is).
    wait_for_dns: bool = True
    load_balancers: LoadBalancerReconciler | None = None


@dataclass(frozen=True)
class Outcome:
    """What a pass found: the state and its message, more status fields, conditions
    beside Ready ((type, status, reason, message)), and, when it waits for something no
    watched object reports (a Deployment's readiness), how soon to look again."""

    state: State
    message: str
    fields: dict[str, Any]
    conditions: tuple[tuple[str, bool, str, str], ...] = ()
    recheck_seconds: float | None = None


DNS_CONDITION = "DNSReady"
DNS_RECHECK_SECONDS = 2.0
MAX_RECHECK_SECONDS = 30.0
FAST_RECHECKS = 10  # passes (a Tenant pass: ~10 API calls, ~0.5 s)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class PasswordHashingDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf remembers the last handled spec in an annotation; never a plain password:
    a digest still lets a password change count as a change."""

    def build(self, *, body: Any, extra_fields: Iterable[Any] | None = None) -> Any:
        essence = super().build(body=body, extra_fields=extra_fields)
        password = essence.get("spec", {}).get("password")
        if password:
            digest = hashlib.sha256(password.encode()).hexdigest()
            essence["spec"]["password"] = f"sha256:{digest}"
        return essence


def configure_settings(settings: kopf.OperatorSettings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = PasswordHashingDiffBase(prefix=GROUP)
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 32  # some wait for a Neutron slot; others go on
    settings.posting.level = logging.WARNING
    # If a stop ever hangs, kopf kills its thread (the process) after this long.
    settings.process.ultimate_exiting_timeout = 20


def _status(
    body: Mapping[str, Any], state: State, message: str, ready: bool, reason: str
) -> dict[str, Any]:
    old = body.get("status") or {}
    generation = int(body.get("metadata", {}).get("generation") or 0)
    conditions = set_condition(
        old.get("conditions") or [],
        type_="Ready",
        status=ready,
        reason=reason,
        message=message,
        generation=generation,
        now=_now(),
    )
    return {
        "state": state.value,
        "message": message,
        "observedGeneration": generation,
        "conditions": conditions,
    }


class ObjectLocks:
    """One lock per object, shared by its create/update/resume handlers, its timer's
    passes and its finalizer: kopf runs an object's event handlers one at a time, but a
    timer tick runs beside them, and two passes over the same Tenant at once race (a
    finalizer's security-group cleanup listed again by a second pass re-creates the
    project's default group in Neutron)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str, str], threading.Lock] = {}

    @staticmethod
    def _key(kind: str, body: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = body.get("metadata") or {}
        return kind, str(meta.get("namespace") or ""), str(meta.get("name") or "")

    def __call__(self, kind: str, body: Mapping[str, Any]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(self._key(kind, body), threading.Lock())

    def forget(self, kind: str, body: Mapping[str, Any]) -> None:
        """The object is gone (its finalizer finished)."""
        with self._guard:
            self._locks.pop(self._key(kind, body), None)


LOCKS = ObjectLocks()
# Objects whose first Active this process has counted (stackube_lifecycle_seconds).
FIRST_ACTIVE = timeline.OnceEach()


@contextlib.contextmanager
def one_at_a_time(kind: str, body: Mapping[str, Any]) -> Iterator[None]:
    """Hold the object's lock (LOCKS) for a pass, whose steps are the object's (the
    crash points of stackube.faults may name it)."""
    with LOCKS(kind, body), faults.acting_on(str(body["metadata"]["name"])):
        yield


def retry_delay(retry: int, hinted: float | None) -> float:
    """A delay the failure asked for (Retry-After, or "waiting for X" that resolves
    soon) is honoured as it is; otherwise 0.5 s doubling up to a minute."""
    if hinted is not None:
        return hinted
    return min(0.5 * 2.0 ** min(retry, 7), MAX_BACKOFF_SECONDS)


def recheck_delay(recheck_seconds: float, retry: int) -> float:
    """Seconds before pass `retry` (0, 1, ...) looks again at something that is on its
    way (a tenant's DNS server starting, ~10-20 s): every `recheck_seconds` for the
    first FAST_RECHECKS looks, so Active follows readiness closely, then slowing down by
    half each time to every MAX_RECHECK_SECONDS for something that takes long."""
    slower = 1.5 ** min(max(0, retry - FAST_RECHECKS), 10)
    return min(recheck_seconds * slower, MAX_RECHECK_SECONDS)


def run_pass(
    kind: str,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    action: Callable[[], Outcome],
) -> None:
    """Run one reconcile pass and turn its outcome into status, Events and retries.
    Passes over one object run one at a time (LOCKS)."""
    with one_at_a_time(kind, body):
        _run_pass(kind, body, patch, retry, action)


def _run_pass(
    kind: str,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    action: Callable[[], Outcome],
) -> None:
    started = time.monotonic()
    with timeline.timed_pass(kind) as steps:
        try:
            outcome = action()
        except TemporaryError as exc:
            metrics.observe(kind, "temporary", time.monotonic() - started)
            _log_pass(kind, body, retry, steps, f"waiting: {exc}")
            patch.status.update(_status(body, State.PENDING, str(exc), False, "TemporaryFailure"))
            raise kopf.TemporaryError(str(exc), delay=retry_delay(retry, exc.retry_after)) from exc
        except PermanentError as exc:
            metrics.observe(kind, "permanent", time.monotonic() - started)
            _log_pass(kind, body, retry, steps, f"failed: {exc}")
            patch.status.update(_status(body, State.FAILED, str(exc), False, "PermanentFailure"))
            kopf.warn(body, reason="Failed", message=str(exc))
            raise kopf.PermanentError(str(exc)) from exc
    metrics.observe(kind, "ok", time.monotonic() - started)
    _log_pass(kind, body, retry, steps, outcome.state.value)
    state, message = outcome.state, outcome.message
    ready = state is State.ACTIVE
    status = _status(body, state, message, ready, state.value)
    for type_, value, reason, text in outcome.conditions:
        status["conditions"] = set_condition(
            status["conditions"],
            type_=type_,
            status=value,
            reason=reason,
            message=text,
            generation=status["observedGeneration"],
            now=_now(),
        )
    patch.status.update(status)
    patch.status.update(outcome.fields)
    old_state = (body.get("status") or {}).get("state")
    if ready and old_state != State.ACTIVE.value:
        kopf.info(body, reason="Active", message=message)
        meta = body.get("metadata") or {}
        age = timeline.seconds_since(meta.get("creationTimestamp"))
        if FIRST_ACTIVE.first(str(meta.get("uid"))):
            timeline.observe_lifecycle(kind, "ready", age)
        log.info("%s %s: Active, %s s after its creation", kind, _name(body), _round(age))
    if outcome.recheck_seconds is not None:
        # kopf keeps the patch of a handler that asks to be retried.
        raise kopf.TemporaryError(message, delay=recheck_delay(outcome.recheck_seconds, retry))


def _name(body: Mapping[str, Any]) -> str:
    meta = body.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


def _round(seconds: float | None) -> str:
    return "?" if seconds is None else f"{seconds:.0f}"


def _log_pass(
    kind: str, body: Mapping[str, Any], retry: int, steps: timeline.PassTimeline, result: str
) -> None:
    """The debug timeline: one line per pass, its steps and what it came to."""
    timeline.log.debug(
        "%s %s: pass %d took %.2f s (%s): %s",
        kind,
        _name(body),
        retry,
        steps.elapsed(),
        steps.summary(),
        result,
    )


async def resync(
    kind: str,
    body: kopf.Body,
    patch: kopf.Patch,
    action: Callable[[], Outcome],
    live: Callable[[], Mapping[str, Any] | None],
) -> None:
    """A timer tick: the same pass, in a thread like the other handlers (the timer itself
    is async so that kopf's sleep between ticks is cancellable at shutdown). Failures are
    already in status; the next tick retries. `live` reads the object afresh: a tick
    that waited for the object's lock must not act on a Tenant deleted meanwhile."""
    if body.metadata.get("deletionTimestamp"):
        return

    def tick() -> None:
        with one_at_a_time(kind, body):
            current = live()
            if current is None or (current.get("metadata") or {}).get("deletionTimestamp"):
                return
            _run_pass(kind, body, patch, 0, action)

    try:
        await asyncio.to_thread(tick)
    except (kopf.TemporaryError, kopf.PermanentError):
        return
    except StackubeError as exc:  # reading the object failed: the next tick tries again
        log.warning("%s %s: resync skipped: %s", kind, body.metadata.name, exc)


def run_finalizer(
    kind: str,
    body: kopf.Body,
    patch: kopf.Patch,
    retry: int,
    action: Callable[[], bool | None],
) -> None:
    """Run a finalizer's `action` under the object's lock and turn its outcome into
    status, Events and retries. `action` returns False when it found nothing to do (the
    object was already cleaned up by someone else): no deletion is then counted."""
    started = time.monotonic()
    kind_delete = f"{kind}-delete"
    with timeline.timed_pass(kind_delete) as steps:
        try:
            with one_at_a_time(kind, body):
                acted = action()
        except TemporaryError as exc:
            metrics.observe(kind_delete, "waiting", time.monotonic() - started)
            _log_pass(kind_delete, body, retry, steps, f"waiting: {exc}")
            patch.status.update(_status(body, State.TERMINATING, str(exc), False, "Terminating"))
            raise kopf.TemporaryError(str(exc), delay=retry_delay(retry, exc.retry_after)) from exc
        except PermanentError as exc:
            # Deletion must finish eventually: a permanent error is reported and retried
            # slowly rather than leaving the finalizer stuck for good.
            metrics.observe(kind_delete, "permanent", time.monotonic() - started)
            _log_pass(kind_delete, body, retry, steps, f"failed: {exc}")
            patch.status.update(_status(body, State.TERMINATING, str(exc), False, "DeleteFailed"))
            kopf.warn(body, reason="DeleteFailed", message=str(exc))
            raise kopf.TemporaryError(str(exc), delay=MAX_BACKOFF_SECONDS) from exc
    if acted is False:
        _forget(kind, body)
        _log_pass(kind_delete, body, retry, steps, "nothing left to do")
        return
    _finalized(kind, body, retry, steps, started=started, result="done")
    age = timeline.seconds_since(body.get("metadata", {}).get("deletionTimestamp"))
    log.info("%s %s: finalized, %s s after its deletion was asked", kind, _name(body), _round(age))


def _forget(kind: str, body: Mapping[str, Any]) -> None:
    """The object is gone: its lock and its first-Active mark go too."""
    LOCKS.forget(kind, body)
    FIRST_ACTIVE.forget(str((body.get("metadata") or {}).get("uid")))


def _finalized(
    kind: str,
    body: Mapping[str, Any],
    retry: int,
    steps: timeline.PassTimeline,
    *,
    started: float,
    result: str,
) -> None:
    """What every finished teardown records: lock and marks forgotten, the pass counted
    and logged, the time since the deletion was asked (when it was)."""
    _forget(kind, body)
    metrics.observe(f"{kind}-delete", "ok", time.monotonic() - started)
    _log_pass(f"{kind}-delete", body, retry, steps, result)
    age = timeline.seconds_since((body.get("metadata") or {}).get("deletionTimestamp"))
    timeline.observe_lifecycle(kind, "deleted", age)


def network_still_ours(api: ApiClient, network: Mapping[str, Any]) -> dict[str, Any] | None:
    """The Network read afresh, if it is still this object (same uid) and still carries
    our finalizer; else None: it was finalized meanwhile (by its Tenant's finalizer or
    its own), and nothing must be torn down again."""
    meta = network["metadata"]
    current = kube_resources.get_network(api, str(meta["namespace"]), str(meta["name"]))
    if current is None:
        return None
    fresh = current.get("metadata") or {}
    if fresh.get("uid") != meta.get("uid") or FINALIZER not in (fresh.get("finalizers") or []):
        return None
    return current


def remove_network_now(r: Reconcilers, network: Mapping[str, Any]) -> None:
    """A Tenant's finalizer removes its Networks itself, rather than wait for their own
    finalizers (and poll for it). Under the Network's lock, and only if it is still ours
    (network_still_ours): the same Neutron teardown, then the Network's deletion and our
    finalizer's removal, after which Kubernetes deletes it at once (kopf's finalizer for
    it, if started meanwhile, waits for the lock and then finds it gone). Timed as a
    `network-delete` pass."""
    meta = network["metadata"]
    api = r.networks.kube
    started = time.monotonic()
    with timeline.timed_pass("network-delete") as steps, one_at_a_time("network", network):
        current = network_still_ours(api, network)
        if current is None:
            _log_pass("network-delete", network, 0, steps, "nothing left to do")
            return
        r.networks.finalize(current)
        namespace, name = str(meta["namespace"]), str(meta["name"])
        if not current["metadata"].get("deletionTimestamp"):
            kube_resources.delete_network(api, namespace, name)
        kube_resources.remove_network_finalizer(api, namespace, name, FINALIZER)
    # A Network handler that waited for the lock meanwhile finds it gone (above). Its
    # deletion was asked for by the namespace controller, or just now (then no age).
    _finalized(
        "network", current, 0, steps, started=started, result="done, by its Tenant's finalizer"
    )
    log.info("network %s: torn down and deleted by its Tenant's finalizer", _name(current))


# ---- LoadBalancer Services --------------------------------------------------------------
def _service_event(r: LoadBalancerReconciler, body: kopf.Body, reason: str, message: str) -> None:
    """A Normal Event on the Service (kopf posts only warnings: see configure_settings)."""
    if r.kube is None:
        return
    meta = body.get("metadata") or {}
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    try:
        kube_pods.object_event(
            r.kube,
            "Service",
            namespace,
            name,
            str(meta.get("uid")),
            reason=reason,
            message=message,
            warning=False,
            component="stackube-controller",
            host=socket.gethostname(),
        )
    except StackubeError as exc:  # an Event is worth a log line, not a retry
        log.warning("service %s/%s: event %s not recorded: %s", namespace, name, reason, exc)


def service_pass(r: LoadBalancerReconciler, body: kopf.Body, patch: kopf.Patch, retry: int) -> None:
    """One level-based pass over a Service that concerns us (loadbalancer.concerns_us):
    finalizer first, then the floating IP and the status; or, once it is no longer a
    LoadBalancer or is being deleted, the release and the finalizer's removal. Neutron's
    refusals (quota, address taken) become a Warning Event and a retry with backoff."""
    with LOCKS("service", body):
        meta = body.get("metadata") or {}
        finalizers = list(meta.get("finalizers") or [])
        try:
            if not lb.wants_floating_ip(body):
                released = r.release(body)
                if released and not meta.get("deletionTimestamp"):
                    patch.status["loadBalancer"] = {"ingress": None}
                    _service_event(r, body, "Released", f"released {', '.join(released)}")
                patch.metadata.annotations[FLOATING_IP_ANNOTATION] = None
                if lb.FINALIZER in finalizers:
                    patch.metadata["finalizers"] = [f for f in finalizers if f != lb.FINALIZER]
                LOCKS.forget("service", body)
                return
            if lb.FINALIZER not in finalizers:
                # Held before anything exists in Neutron; kopf applies the patch and runs
                # the pass again at once.
                patch.metadata["finalizers"] = [*finalizers, lb.FINALIZER]
                raise kopf.TemporaryError("adding the finalizer first", delay=0)
            allocation = r.ensure(body)
        except StackubeError as exc:
            kopf.warn(body, reason="AllocationFailed", message=str(exc))
            delay = retry_delay(retry, getattr(exc, "retry_after", None))
            raise kopf.TemporaryError(str(exc), delay=max(delay, 5.0)) from exc
        address = allocation.floating_ip.address
        patch.metadata.annotations[FLOATING_IP_ANNOTATION] = allocation.floating_ip.id
        if lb.current_address(body) != address:
            patch.status["loadBalancer"] = {"ingress": [{"ip": address, "ipMode": "VIP"}]}
        if allocation.replaced:
            kopf.warn(
                body,
                reason="Repaired",
                message=f"floating IP {allocation.replaced} was gone; now {address}",
            )
        elif allocation.created:
            _service_event(r, body, "Allocated", f"floating IP {address}")


# ---- Tenant ---------------------------------------------------------------------------
def _tenant_pass(r: Reconcilers, body: kopf.Body) -> Callable[[], Outcome]:
    name = str(body["metadata"]["name"])

    def publish(state: State, message: str, dns_ready: bool) -> None:
        """The summary tenants read on their Network; never fails the pass."""
        summary = {"state": state.value, "message": message, "dnsReady": dns_ready}
        try:
            r.tenants.publish_summary(name, summary)
        except StackubeError as exc:
            log.warning("tenant %s: summary not written to its Network: %s", name, exc)

    def action() -> Outcome:
        try:
            outcome = tenant_outcome()
        # Failures are told to tenants without their text (it may name other projects,
        # Secrets or internal endpoints): the details are on the Tenant, the operator's.
        except PermanentError:
            publish(State.FAILED, "failed: ask the operator (the Tenant's status)", False)
            raise
        except TemporaryError:
            publish(State.PENDING, "waiting: the controller retries; details on the Tenant", False)
            raise
        dns_ready = any(c[0] == DNS_CONDITION and c[1] for c in outcome.conditions)
        publish(outcome.state, outcome.message, dns_ready)
        return outcome

    def tenant_outcome() -> Outcome:
        result = r.tenants.reconcile(body)
        ids = {"projectID": result.project_id, "userID": result.user_id}
        dns = (
            DNS_CONDITION,
            result.dns_ready,
            "Answering" if result.dns_ready else "Waiting",
            result.dns_message,
        )
        if result.network_state == State.FAILED.value:
            raise PermanentError(f"Network {name}/{name} failed: {result.network_message}")
        if result.network_state != State.ACTIVE.value:
            waiting = f"waiting for Network {name}/{name} ({result.network_state or 'new'})"
            # The Network's state change annotates the Tenant, which runs this pass again.
            return Outcome(State.INITIALIZING, waiting, ids, (dns,))
        if result.dns_ready or not r.wait_for_dns:
            ready = "network, DNS" if result.dns_ready else "network (DNS not awaited)"
            return Outcome(
                State.ACTIVE,
                f"tenant ready: Keystone project, user, namespace, RBAC, {ready}",
                ids,
                (dns,),
            )
        # Active means the user guide's next step works: `nslookup` needs the DNS server.
        return Outcome(State.INITIALIZING, result.dns_message, ids, (dns,), DNS_RECHECK_SECONDS)

    return action


def register(registry: kopf.OperatorRegistry, resync_seconds: float = RESYNC_SECONDS) -> None:
    """Register every handler on `registry` (a fresh one per operator instance); the
    timers re-run each object's pass every `resync_seconds` to repair drift."""
    tenants = (GROUP, VERSION, TENANT_PLURAL)
    networks = (GROUP, VERSION, NETWORK_PLURAL)

    def every_resync(resource: tuple[str, str, str]) -> kopf.on.TimerDecorator:
        return kopf.timer(
            *resource,
            registry=registry,
            interval=resync_seconds,
            initial_delay=resync_seconds,
            idle=resync_seconds / 2,
        )

    @kopf.on.startup(registry=registry)
    def _configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        configure_settings(settings)

    @kopf.on.resume(*tenants, registry=registry)
    @kopf.on.create(*tenants, registry=registry)
    @kopf.on.update(*tenants, registry=registry)
    def tenant_reconcile(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        run_pass("tenant", body, patch, retry, _tenant_pass(memo.reconcilers, body))

    @every_resync(tenants)
    async def tenant_resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        kube_api = memo.reconcilers.tenants.kube
        live = lambda: kube_resources.get_tenant(kube_api, body.metadata.name)  # noqa: E731
        await resync("tenant", body, patch, _tenant_pass(memo.reconcilers, body), live)

    @kopf.on.delete(*tenants, registry=registry)
    def tenant_delete(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        r = memo.reconcilers
        remove = lambda network: remove_network_now(r, network)  # noqa: E731
        run_finalizer("tenant", body, patch, retry, lambda: r.tenants.finalize(body, remove))

    def network_action(memo: kopf.Memo, body: kopf.Body) -> Callable[[], Outcome]:
        def action() -> Outcome:
            result = memo.reconcilers.networks.reconcile(body)
            ids = {
                "networkID": result.network_id,
                "subnetID": result.subnet_id or "",
                "routerID": result.router_id or "",
                "routerExternalIP": result.router_external_ip,
            }
            if result.recreated:
                kopf.warn(
                    body,
                    reason="Recreated",
                    message=f"Neutron network was missing; recreated as {result.network_id}",
                )
            return Outcome(State.ACTIVE, "Neutron network, subnet and router ready", ids)

        return action

    @kopf.on.resume(*networks, registry=registry)
    @kopf.on.create(*networks, registry=registry)
    @kopf.on.update(*networks, registry=registry, field="spec")
    def network_reconcile(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        run_pass("network", body, patch, retry, network_action(memo, body))

    @every_resync(networks)
    async def network_resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        kube_api = memo.reconcilers.networks.kube
        namespace, name = str(body.metadata.namespace), str(body.metadata.name)
        live = lambda: kube_resources.get_network(kube_api, namespace, name)  # noqa: E731
        await resync("network", body, patch, network_action(memo, body), live)

    @kopf.on.field(*networks, registry=registry, field="status.state")
    def network_state_changed(body: kopf.Body, new: Any, memo: kopf.Memo, **_: Any) -> None:
        # A Tenant waits for its default Network: tell it, instead of it polling.
        namespace, name = body.metadata.namespace, body.metadata.name
        if namespace == name and new:
            memo.reconcilers.tenants.note_network_state(name, str(new))

    services = ("", "v1", "services")

    def lb_concerned(body: kopf.Body, memo: kopf.Memo, **_: Any) -> bool:
        return memo.reconcilers.load_balancers is not None and lb.concerns_us(body)

    @kopf.on.resume(*services, registry=registry, when=lb_concerned)
    @kopf.on.create(*services, registry=registry, when=lb_concerned)
    @kopf.on.update(*services, registry=registry, when=lb_concerned)
    def service_reconcile(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        service_pass(memo.reconcilers.load_balancers, body, patch, retry)

    # optional: our own finalizer holds the Service, kopf's is not needed.
    @kopf.on.delete(*services, registry=registry, when=lb_concerned, optional=True)
    def service_delete(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        service_pass(memo.reconcilers.load_balancers, body, patch, retry)

    @kopf.timer(
        *services,
        registry=registry,
        interval=resync_seconds,
        initial_delay=resync_seconds,
        idle=resync_seconds / 2,
        when=lb_concerned,
    )
    def service_resync(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **_: Any) -> None:
        # Repairs a floating IP deleted behind our back; failures retry on the next tick.
        with contextlib.suppress(kopf.TemporaryError):
            service_pass(memo.reconcilers.load_balancers, body, patch, 0)

    @kopf.on.delete(*networks, registry=registry)
    def network_delete(
        body: kopf.Body, patch: kopf.Patch, retry: int, memo: kopf.Memo, **_: Any
    ) -> None:
        def action() -> bool:
            # Under the lock: its Tenant's finalizer may have removed it meanwhile, and a
            # namespace of the same name may since hold a new Tenant's network.
            current = network_still_ours(memo.reconcilers.networks.kube, body)
            if current is None:
                return False
            memo.reconcilers.networks.finalize(current)
            return True

        run_finalizer("network", body, patch, retry, action)
