"""Kubernetes-style status conditions (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Condition = dict[str, Any]


def set_condition(
    conditions: Sequence[Condition],
    *,
    type_: str,
    status: bool,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """Conditions with `type_` set; lastTransitionTime moves only when status flips."""
    value = "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    unchanged = previous is not None and previous.get("status") == value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": (previous or {}).get("lastTransitionTime", now) if unchanged else now,
    }
    if previous is None:
        return [*map(dict, conditions), condition]
    return [condition if c is previous else dict(c) for c in conditions]
