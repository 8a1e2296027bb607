"""The daemon's unix socket: one JSON request line in, one JSON reply line out, a
thread per connection (the work is mostly waiting on Neutron and netlink)."""

from __future__ import annotations

import json
import logging
import os
import socketserver
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from stackube.cni import spec

log = logging.getLogger("stackube.cni")

Handler = Callable[[Mapping[str, Any]], dict[str, Any]]
MAX_REQUEST_BYTES = 1 << 20


class _Connection(socketserver.StreamRequestHandler):
    server: CniSocketServer

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            reply: dict[str, Any] = {
                "error": spec.CniError(spec.DECODE_FAILURE, f"bad request: {exc}").to_json()
            }
        else:
            reply = self.server.handler(message)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class CniSocketServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    # A node starting many pods at once connects many plugins at once (default: 5).
    request_queue_size = 512

    def __init__(self, path: Path, handler: Handler) -> None:
        self.handler = handler
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.unlink(missing_ok=True)  # a stale socket of a previous run
        old_umask = os.umask(0o177)  # only root (the runtime) may talk to us
        try:
            super().__init__(str(path), _Connection)
        finally:
            os.umask(old_umask)
        log.info("listening on %s", path)
