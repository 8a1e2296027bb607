"""Health probes for devbox services: each one quick, each with a timeout."""

from __future__ import annotations

import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

Probe = Callable[[], bool]


def tcp_open(host: str, port: int, timeout: float = 1.0) -> Probe:
    def probe() -> bool:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            return False

    return probe


def tls_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))
    if cert and key:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


def http_ok(
    url: str,
    timeout: float = 2.0,
    context: ssl.SSLContext | None = None,
    expect: Callable[[int, bytes], bool] = lambda status, body: 200 <= status < 300,
) -> Probe:
    def probe() -> bool:
        request = urllib.request.Request(url, headers={"Connection": "close"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:  # noqa: S310
                return expect(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            return expect(exc.code, b"")
        except (OSError, ValueError):
            return False

    return probe


def command_ok(argv: list[str], timeout: float = 5.0) -> Probe:
    """Healthy when the command exits 0 in time (e.g. a daemon's control client)."""

    def probe() -> bool:
        try:
            return (
                subprocess.run(argv, capture_output=True, timeout=timeout, check=False).returncode
                == 0
            )
        except (OSError, subprocess.TimeoutExpired):
            return False

    return probe
