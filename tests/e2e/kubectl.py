"""kubectl, run as a person runs it (with the devbox's admin kubeconfig)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path

    def argv(self, *args: str) -> list[str]:
        return ["kubectl", f"--kubeconfig={self.kubeconfig}", *args]

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 120, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), input=stdin, capture_output=True, text=True, timeout=timeout,
            check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
        return done

    def json(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.run(*args, "-o", "json").stdout))

    def events(self, namespace: str, name: str) -> str:
        """The events of the object `name` in `namespace`, one "reason: message" a line
        (for assertion messages: what the kubelet saw)."""
        template = "jsonpath={range .items[*]}{.reason}: {.message}{'\\n'}{end}"
        return self.run(
            "-n", namespace, "get", "events", "--field-selector",
            f"involvedObject.name={name}", "-o", template, check=False,
        ).stdout  # fmt: skip


def eventually(probe: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.5)


def idle(seconds: int) -> list[str]:
    """A container command that idles for `seconds` and stops at SIGTERM at once
    (`sleep` as PID 1 ignores it: every delete would wait out the grace period)."""
    return ["sh", "-c", f"trap 'exit 0' TERM; sleep {seconds} & wait"]


def side_by_side(work: Callable[[T], Any], items: list[T]) -> list[Any]:
    """`work` on every item at once (threads; kubectl and the API clients allow it),
    results in order; the first error is raised once all are done."""
    with ThreadPoolExecutor(max(1, len(items))) as pool:
        futures = [pool.submit(work, item) for item in items]
    return [future.result() for future in futures]
