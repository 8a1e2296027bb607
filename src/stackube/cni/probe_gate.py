"""tcpSocket probes through the relay, kept honest.

The kubelet's tcpSocket probe only connects (and closes). Through the relay (decision
0009) the connection completes at the relay on 127.0.0.1 before the pod is asked, so
the probe would pass whether or not anything listens in the pod. The gate therefore
checks, from the pod's side (the same way the relay connects), whether each
tcpSocket-probed (pod address, port) is open, and the daemon redirects only open ones:
a closed one's connection is not redirected and dies on the node (its /32 route goes
through `lo`), so the probe fails as it would against the pod.

Closed targets are checked every CLOSED_EVERY seconds (a starting server is seen within
about a second, well inside a liveness probe's failureThreshold x periodSeconds), open
ones every OPEN_EVERY seconds (a server that stopped listening fails its next probes
after at most that long); a new target at once. Checks run side by side (up to
CHECKS_AT_ONCE; a gVisor pod's check is a runsc process, seconds on a busy node), so a
slow one holds back no other target. A check that gets no answer in time (TimeoutError)
says nothing about the port: the target keeps its state and is checked again. A change
of state kicks the daemon's rule sync.

Lenient targets (ports only liveness probes use) start open and close only once seen
closed for LENIENT_CLOSE_SECONDS on end: there a wrong "closed" restarts a container (a
starting gVisor pod's checks wait for runsc, which waits while the sandbox starts its
other containers: seconds; a kubelet's liveness probe fails 3 x 2 s), while a wrong
"open" only delays a restart by those seconds, as an initialDelaySeconds would.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from stackube.cni.probe_relay import Upstream

log = logging.getLogger("stackube.cni.probes")

CLOSED_EVERY = 1.0  # seconds
OPEN_EVERY = 5.0  # seconds
CHECKS_AT_ONCE = 8
LENIENT_CLOSE_SECONDS = 10.0

Target = tuple[str, int]  # (pod address, port)
# True: open; False: closed; None: no answer in time (the state stays as it was)
Check = Callable[[Upstream], bool | None]


def is_open(upstream: Upstream) -> bool | None:
    """Whether `upstream` accepts a connection now (closed again at once): True, False
    when refused or unreachable, None when the connect timed out (`Upstream.connect`'s
    TimeoutError: a busy node or a slow runsc, not an answer from the pod)."""
    try:
        upstream.connect().close()
    except TimeoutError:
        return None
    except OSError:
        return False
    return True


class PortGate:
    """The open/closed state of the tcpSocket-probed targets (thread-safe)."""

    def __init__(
        self, check: Check = is_open, on_change: Callable[[], None] = lambda: None
    ) -> None:
        self._check = check
        self._on_change = on_change
        self._lock = threading.Lock()
        self._targets: dict[Target, Upstream] = {}
        self._open: set[Target] = set()
        self._checked: dict[Target, float] = {}  # target -> monotonic time of its last check
        self._in_flight: set[Target] = set()
        self._new = threading.Event()  # set_targets added a target: check it now
        self._lenient: set[Target] = set()
        self._closed_since: dict[Target, float] = {}  # lenient ones seen closed, since when

    def set_targets(
        self, targets: Mapping[Target, Upstream], lenient: Collection[Target] = ()
    ) -> None:
        """The targets to watch from now on (new ones start closed, lenient ones open;
        all checked at once)."""
        with self._lock:
            added = set(targets) - set(self._targets)
            self._targets = dict(targets)
            self._lenient = set(lenient) & set(targets)
            self._open = (self._open & set(targets)) | (added & self._lenient)
            self._checked = {t: at for t, at in self._checked.items() if t in targets}
            self._closed_since = {
                t: at for t, at in self._closed_since.items() if t in self._lenient
            }
        if added:
            self._new.set()

    def open_targets(self) -> set[Target]:
        with self._lock:
            return set(self._open)

    def _take_due(self, now: float) -> dict[Target, Upstream]:
        """The targets whose turn it is and that no check is looking at (marked in flight)."""
        with self._lock:
            due = {
                target: upstream
                for target, upstream in self._targets.items()
                if target not in self._in_flight
                and now - self._checked.get(target, float("-inf"))
                >= (
                    OPEN_EVERY
                    if target in self._open and target not in self._closed_since
                    else CLOSED_EVERY
                )
            }
            self._in_flight |= set(due)
        return due

    def _check_one(self, target: Target, upstream: Upstream, now: float) -> bool:
        """Checks one target (in flight); returns whether it changed state."""
        try:
            found = self._check(upstream)
        finally:
            with self._lock:
                self._in_flight.discard(target)
        with self._lock:
            if target not in self._targets or found is None:
                return False  # the pod went meanwhile, or no answer: checked again soon
            self._checked[target] = now
            if found or target not in self._lenient:
                self._closed_since.pop(target, None)
            elif now - self._closed_since.setdefault(target, now) < LENIENT_CLOSE_SECONDS:
                return False  # a lenient target stays open until closed for that long
            if found == (target in self._open):
                return False
            (self._open.add if found else self._open.discard)(target)
        log.info(
            "probes: %s:%d is %s in its pod: tcpSocket probes %s",
            *target,
            "open" if found else "closed",
            "relayed" if found else "not relayed (they fail)",
        )
        return True

    def check_due(self, now: float | None = None) -> bool:
        """Checks every target whose turn it is, one after another; returns whether any
        changed state (the daemon's loop, `run`, checks them side by side)."""
        now = time.monotonic() if now is None else now
        changed = False
        for target, upstream in self._take_due(now).items():
            changed |= self._check_one(target, upstream, now)
        return changed

    def _check_and_kick(self, target: Target, upstream: Upstream, now: float) -> None:
        try:
            if self._check_one(target, upstream, now):
                self._on_change()
        except Exception:  # a worker logs and the gate lives on
            log.exception("probe port check of %s:%d failed", *target)

    def run(self, stopping: threading.Event) -> None:
        """Checks until `stopping`, side by side; kicks `on_change` when a target changed
        state."""
        with ThreadPoolExecutor(CHECKS_AT_ONCE, thread_name_prefix="probe-check") as pool:
            while not stopping.is_set():
                try:
                    now = time.monotonic()
                    for target, upstream in self._take_due(now).items():
                        pool.submit(self._check_and_kick, target, upstream, now)
                except Exception:  # a background thread logs and lives on
                    log.exception("probe port checks failed")
                self._new.wait(CLOSED_EVERY / 2)
                self._new.clear()
