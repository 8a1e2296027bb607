"""One supervised devbox service, and how to make it run: prepare, start, probe.

`ensure_running` is idempotent: a live process that passes its probe is left alone;
a dead or stuck one is (re)started; on failure the error names the service and
carries the tail of its log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from stackube.devbox.health import Probe
from stackube.devbox.process import ProcessSpec, ProcessTable

log = logging.getLogger(__name__)


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class Service:
    name: str
    process: Callable[[], ProcessSpec]
    probe: Probe
    start_timeout: float = 60.0
    # Idempotent steps around the process: write configs, sync databases, bootstrap.
    prepare: Callable[[], None] = _nothing
    after_start: Callable[[], None] = _nothing
    # Some daemons want their own way down (rabbitmqctl shutdown); default: signal the group.
    stop: Callable[[ProcessTable], None] | None = None


class ServiceError(RuntimeError):
    def __init__(self, service: str, reason: str, log_tail: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason
        self.log_tail = log_tail


# A live process whose probe fails gets this long to come good before it is restarted
# (it may have been started a moment ago by another `up`).
STUCK_GRACE_SECONDS = 10.0


def ensure_running(service: Service, table: ProcessTable) -> str:
    """Make `service` run with its current command line and pass its probe. Returns what
    was done: 'healthy' or 'started'."""
    service.prepare()
    spec = service.process()
    pid = table.pid(service.name)
    if pid is not None:
        if table.started_with(service.name) not in (None, spec.identity):
            log.warning(
                "%s (pid %d) runs with an old command line or configuration: restarting it",
                service.name,
                pid,
            )
            stop_service(service, table)
        elif _wait_healthy(service, table, STUCK_GRACE_SECONDS):
            service.after_start()
            return "healthy"
        else:
            log.warning("%s (pid %d) is running but unhealthy: restarting it", service.name, pid)
            stop_service(service, table)
    table.start(spec)
    if not _wait_healthy(service, table, service.start_timeout):
        reason = (
            "exited during start-up"
            if table.pid(service.name) is None
            else f"not healthy within {service.start_timeout:.0f}s"
        )
        raise ServiceError(service.name, reason, table.tail(service.name))
    service.after_start()
    return "started"


def _wait_healthy(service: Service, table: ProcessTable, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if table.pid(service.name) is None:
            return False
        if service.probe():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def stop_service(service: Service, table: ProcessTable) -> None:
    if service.stop is not None:
        service.stop(table)
    table.stop(service.name)
