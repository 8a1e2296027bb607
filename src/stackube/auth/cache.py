"""A bounded cache of review outcomes, keyed by a digest of the token (tokens
themselves are never kept), each entry valid until its own deadline."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Entry:
    response: dict[str, Any]
    deadline: float


class ReviewCache:
    """LRU with per-entry deadlines (monotonic seconds). Not thread-safe: the webhook
    uses it from its event loop only."""

    def __init__(self, max_entries: int = 10000, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.deadline <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return entry.response

    def put(self, key: str, response: dict[str, Any], ttl: float) -> None:
        if ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = Entry(response, self.clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def valid_ttl(expires_in: float, ttl: float) -> float:
    """How long a valid result may be reused: never past the token's own expiry."""
    return max(0.0, min(expires_in, ttl))
