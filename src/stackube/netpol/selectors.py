"""Kubernetes label selectors (metav1.LabelSelector), evaluated (pure).

Follows k8s.io/apimachinery/pkg/apis/meta/v1 LabelSelectorAsSelector: `matchLabels`
and every `matchExpressions` entry must all hold; an empty selector matches
everything; a null one (None here) matches nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SelectorError(ValueError):
    """A selector the API server would not have accepted (unknown operator, values
    where none belong)."""


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """Whether `labels` satisfy `selector` (None matches nothing; {} everything).

    Raises SelectorError for an operator other than In, NotIn, Exists, DoesNotExist.
    """
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(_holds(e, labels) for e in selector.get("matchExpressions") or [])


def _holds(expression: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = str(expression.get("key", ""))
    operator = str(expression.get("operator"))
    values = set(expression.get("values") or ())
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator in ("Exists", "DoesNotExist"):
        if values:
            raise SelectorError(f"operator {operator} takes no values (key {key!r})")
        return (key in labels) == (operator == "Exists")
    raise SelectorError(f"unknown selector operator {operator!r} (key {key!r})")
