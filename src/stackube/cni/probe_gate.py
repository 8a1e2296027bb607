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
after at most that long). A change of state kicks the daemon's rule sync.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from stackube.cni.probe_relay import Upstream

log = logging.getLogger("stackube.cni.probes")

CLOSED_EVERY = 1.0  # seconds
OPEN_EVERY = 5.0  # seconds

Target = tuple[str, int]  # (pod address, port)


def is_open(upstream: Upstream) -> bool:
    """Whether `upstream` accepts a connection now (closed again at once)."""
    try:
        upstream.connect().close()
    except OSError:
        return False
    return True


class PortGate:
    """The open/closed state of the tcpSocket-probed targets (thread-safe)."""

    def __init__(
        self,
        check: Callable[[Upstream], bool] = is_open,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self._check = check
        self._on_change = on_change
        self._lock = threading.Lock()
        self._targets: dict[Target, Upstream] = {}
        self._open: set[Target] = set()
        self._checked: dict[Target, float] = {}  # target -> monotonic time of its last check

    def set_targets(self, targets: Mapping[Target, Upstream]) -> None:
        """The targets to watch from now on (new ones start closed until checked)."""
        with self._lock:
            self._targets = dict(targets)
            self._open &= set(targets)
            self._checked = {t: at for t, at in self._checked.items() if t in targets}

    def open_targets(self) -> set[Target]:
        with self._lock:
            return set(self._open)

    def check_due(self, now: float | None = None) -> bool:
        """Checks every target whose turn it is; returns whether any changed state."""
        now = time.monotonic() if now is None else now
        with self._lock:
            due = {
                target: upstream
                for target, upstream in self._targets.items()
                if now - self._checked.get(target, float("-inf"))
                >= (OPEN_EVERY if target in self._open else CLOSED_EVERY)
            }
        changed = False
        for target, upstream in due.items():  # outside the lock: a check may take 5 s
            found = self._check(upstream)
            with self._lock:
                if target not in self._targets:
                    continue  # the pod went meanwhile
                self._checked[target] = now
                if found != (target in self._open):
                    changed = True
                    (self._open.add if found else self._open.discard)(target)
                    log.info(
                        "probes: %s:%d is %s in its pod: tcpSocket probes %s",
                        *target,
                        "open" if found else "closed",
                        "relayed" if found else "not relayed (they fail)",
                    )
        return changed

    def run(self, stopping: threading.Event) -> None:
        """Checks until `stopping`; kicks `on_change` when a target changed state."""
        while not stopping.wait(CLOSED_EVERY / 2):
            try:
                if self.check_due():
                    self._on_change()
            except Exception:  # a background thread logs and lives on
                log.exception("probe port checks failed")
