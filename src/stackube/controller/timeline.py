"""Where a reconcile pass spends its time: each step's duration as a Prometheus metric
(`stackube_step_duration_seconds{kind, step}`) and, per pass, a one-line timeline in the
controller's debug log; and how long an object takes from creation to Active and from
its deletion request to its finalizer's end (`stackube_lifecycle_seconds{kind, phase}`).

The pass lines go to the logger `stackube.controller.timeline` (`log`), at debug level
(`stackube controller --timeline` shows them without the rest of the debug output).
A pass (`timed_pass`) collects the steps run inside it, in this thread or in threads
started in a copy of its context (contextvars.copy_context().run), as the Network pass's
router thread is. A step outside any pass is not recorded.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import Histogram

log = logging.getLogger(__name__)

STEP_DURATION = Histogram(
    "stackube_step_duration_seconds",
    "Duration of one step of a reconcile pass or finalizer (a Keystone, Neutron or "
    "Kubernetes call or a few), by object kind and step",
    ["kind", "step"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
LIFECYCLE = Histogram(
    "stackube_lifecycle_seconds",
    "Seconds from an object's creation to its first Active state seen by this process "
    "(phase=ready), and from its deletion request to the end of its finalizer "
    "(phase=deleted), by object kind",
    ["kind", "phase"],
    buckets=(1, 2, 3, 5, 8, 13, 20, 30, 60, 120, 300),
)


class PassTimeline:
    """The steps of one pass over one object: (step, seconds), in the order they ended."""

    def __init__(self, kind: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self._clock = clock
        self._started = clock()
        self._steps: list[tuple[str, float]] = []
        self._guard = threading.Lock()

    def record(self, step: str, seconds: float) -> None:
        with self._guard:
            self._steps.append((step, seconds))

    @property
    def steps(self) -> list[tuple[str, float]]:
        with self._guard:
            return list(self._steps)

    def elapsed(self) -> float:
        return self._clock() - self._started

    def summary(self) -> str:
        """`"project 0.12 s, namespace 0.03 s"` (steps in the order they ended; a step
        run twice appears twice); "no steps" for an empty pass."""
        steps = self.steps
        if not steps:
            return "no steps"
        return ", ".join(f"{name} {seconds:.2f} s" for name, seconds in steps)


_CURRENT: ContextVar[PassTimeline | None] = ContextVar("stackube_pass_timeline", default=None)


@contextmanager
def timed_pass(kind: str) -> Iterator[PassTimeline]:
    """Collect the steps run inside into a new PassTimeline (yielded)."""
    timeline = PassTimeline(kind)
    token = _CURRENT.set(timeline)
    try:
        yield timeline
    finally:
        _CURRENT.reset(token)


@contextmanager
def step(name: str) -> Iterator[None]:
    """Time the block as step `name` of the current pass (its kind labels the metric),
    also when it raises: a failed Neutron call's time counts."""
    timeline = _CURRENT.get()
    if timeline is None:
        yield
        return
    started = time.monotonic()
    try:
        yield
    finally:
        seconds = time.monotonic() - started
        timeline.record(name, seconds)
        STEP_DURATION.labels(kind=timeline.kind, step=name).observe(seconds)


def seconds_since(timestamp: str | None, now: datetime.datetime | None = None) -> float | None:
    """Seconds from a Kubernetes timestamp (RFC 3339, `2026-12-04T08:14:13Z`, second
    precision) to `now` (default: the current UTC time); None without a parsable one."""
    if not timestamp:
        return None
    try:
        then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if then.tzinfo is None:
        then = then.replace(tzinfo=datetime.UTC)
    current = now or datetime.datetime.now(datetime.UTC)
    return max(0.0, (current - then).total_seconds())


class OnceEach:
    """Which objects (by uid) an event was already counted for in this process: a Tenant
    Active again after an outage is not "ready" a second time. `forget` when the object
    is gone."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._guard = threading.Lock()

    def first(self, uid: str) -> bool:
        """True the first time `uid` is given (until forgotten)."""
        with self._guard:
            if uid in self._seen:
                return False
            self._seen.add(uid)
            return True

    def forget(self, uid: str) -> None:
        with self._guard:
            self._seen.discard(uid)


def observe_lifecycle(kind: str, phase: str, seconds: float | None) -> None:
    """One `stackube_lifecycle_seconds` observation (none for None)."""
    if seconds is not None:
        LIFECYCLE.labels(kind=kind, phase=phase).observe(seconds)
