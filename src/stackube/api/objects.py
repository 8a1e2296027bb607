"""Kubernetes objects as plain dicts, indexed the way watches report them (pure; callers
that share an index between threads hold their own lock)."""

from __future__ import annotations

from typing import Any

Key = tuple[str, str]  # (namespace, name)


def key_of(obj: dict[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class ObjectIndex:
    """Objects by namespace, then name: a namespace's objects cost what it holds, not
    what the whole cluster holds."""

    def __init__(self) -> None:
        self._by_namespace: dict[str, dict[str, dict[str, Any]]] = {}

    def apply(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> str | None:
        """Record a change (new None: deleted); returns the object's namespace."""
        obj = new if new is not None else old
        if obj is None:
            return None
        namespace, name = key_of(obj)
        if new is None:
            held = self._by_namespace.get(namespace)
            if held is not None:
                held.pop(name, None)
                if not held:
                    del self._by_namespace[namespace]
        else:
            self._by_namespace.setdefault(namespace, {})[name] = new
        return namespace

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._by_namespace.get(namespace, {}).get(name)

    def in_namespace(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """The objects of one namespace, or of all (None)."""
        if namespace is not None:
            return list(self._by_namespace.get(namespace, {}).values())
        return [o for held in self._by_namespace.values() for o in held.values()]

    def namespaces(self) -> set[str]:
        return set(self._by_namespace)
