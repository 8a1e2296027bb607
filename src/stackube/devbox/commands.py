"""Running one-shot commands for devbox steps, and remembering steps already done."""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from stackube.devbox.process import service_environ


class StepError(RuntimeError):
    """A devbox step failed; the message says which and carries the command's output."""


def run(
    argv: Sequence[str],
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float = 600.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        list(argv),
        env={**service_environ(), **(env or {})},
        input=input_text,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-25:])
        raise StepError(f"{argv[0]} exited with {proc.returncode}:\n{tail}")
    return proc


def package_version(package: str) -> str:
    """The installed version of a Debian package ("" if it is not installed)."""
    return run(["dpkg-query", "-W", "-f=${Version}", package], check=False).stdout.strip()


def fingerprint(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


class Markers:
    """Steps that are expensive and idempotent anyway (db sync, bootstrap) run again only
    when their inputs change: the marker file holds a fingerprint of those inputs."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def once(self, name: str, inputs: str, action: Callable[[], object]) -> bool:
        marker = self.directory / f"{name}.done"
        if marker.exists() and marker.read_text() == inputs:
            return False
        action()
        self.directory.mkdir(parents=True, exist_ok=True)
        marker.write_text(inputs)
        return True
