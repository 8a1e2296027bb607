"""Kubernetes objects as plain dicts, indexed the way watches report them (pure; callers
that share an index between threads hold their own lock)."""

from __future__ import annotations

from typing import Any

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ObjectIndex:
    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Any]] = {}

    def apply(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
        """Record a change (new None: deleted); returns the object's namespace."""
        obj = new if new is not None else old
        if obj is None:
            return None
        key = key_of(obj)
        if new is None:
            self._objects.pop(key, None)
        else:
            self._objects[key] = new
        return key[0]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._objects.get((namespace, name))

    def in_namespace(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of one namespace, or of all (None)."""
        return [o for (ns, _), o in self._objects.items() if namespace in (None, ns)]

    def namespaces(self) -> set[str]:
        return {ns for ns, _ in self._objects}
