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
    updated = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            updated.append(dict(condition))
            continue
        found = True
        changed = condition.get("status") != value
        updated.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now if changed else condition.get("lastTransitionTime", now),
            }
        )
    if not found:
        updated.append(
            {
                "type": type_,
                "status": value,
                "reason": reason,
                "message": message,
                "observedGeneration": generation,
                "lastTransitionTime": now,
            }
        )
    return updated
