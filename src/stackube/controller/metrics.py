"""Prometheus metrics of the controller: passes by kind and outcome, their durations."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

RECONCILES = Counter(
    "stackube_reconciles_total",
    "Reconcile passes, by object kind and outcome (ok, temporary, permanent, waiting)",
    ["kind", "outcome"],
)
DURATION = Histogram(
    "stackube_reconcile_duration_seconds",
    "Duration of reconcile passes, by object kind",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60),
)


def observe(kind: str, outcome: str, seconds: float) -> None:
    RECONCILES.labels(kind=kind, outcome=outcome).inc()
    DURATION.labels(kind=kind).observe(seconds)


def serve(port: int, address: str = "0.0.0.0") -> None:  # noqa: S104 - a pod's metrics port
    start_http_server(port, addr=address)
