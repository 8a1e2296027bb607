"""Progress lines for long devbox steps: what runs, for how long, and how it ended."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Prints `[  12.3s] step ...` lines; on a terminal, a ticking timer for long steps."""

    def __init__(self, out: TextIO = sys.stderr, tick: float = 10.0) -> None:
        self.out = out
        self.tick = tick
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def _stamp(self) -> str:
        return f"[{time.monotonic() - self.started:7.1f}s]"

    def say(self, message: str) -> None:
        with self._lock:
            print(f"{self._stamp()} {message}", file=self.out, flush=True)

    @contextmanager
    def step(self, title: str) -> Iterator[None]:
        """A step: announce it, keep saying it is still running, report its duration."""
        begun = time.monotonic()
        done = threading.Event()
        self.say(f"{title} ...")

        def ticker() -> None:
            while not done.wait(self.tick):
                self.say(f"  ... still {title} ({time.monotonic() - begun:.0f}s)")

        thread = threading.Thread(target=ticker, daemon=True)
        thread.start()
        try:
            yield
        except BaseException:
            done.set()
            self.say(f"FAILED: {title} after {time.monotonic() - begun:.1f}s")
            raise
        done.set()
        self.say(f"ok: {title} ({time.monotonic() - begun:.1f}s)")
