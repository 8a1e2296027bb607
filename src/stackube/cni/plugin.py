"""`kubestack`: the CNI plugin executable. Thin on purpose (standard library only, quick
to start): read env + stdin, forward the request to the node daemon over a unix
socket, print the daemon's result, or a CNI error object and exit 1. Every failure is
logged (to stderr and the daemon's log) before it becomes an error object.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from stackube.cni import spec

DEFAULT_SOCKET = "/run/stackube/cni.sock"
SOCKET_ENV = "STACKUBE_CNI_SOCKET"
TIMEOUT_SECONDS = 120.0

Send = Callable[[dict[str, Any]], dict[str, Any]]


def unix_socket_sender(path: str, timeout: float = TIMEOUT_SECONDS) -> Send:
    """One JSON document each way, newline-terminated, on a fresh connection."""

    def send(message: dict[str, Any]) -> dict[str, Any]:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(timeout)
                conn.connect(path)
                conn.sendall(json.dumps(message).encode() + b"\n")
                chunks: list[bytes] = []
                while not chunks or not chunks[-1].endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    chunks.append(chunk)
        except OSError as exc:
            raise spec.CniError(
                spec.DAEMON_UNREACHABLE,
                "the stackube CNI daemon is not reachable",
                f"{path}: {exc}",
            ) from exc
        try:
            reply = json.loads(b"".join(chunks))
        except ValueError as exc:
            raise spec.CniError(spec.IO_FAILURE, "the CNI daemon sent no valid reply") from exc
        if not isinstance(reply, dict):
            raise spec.CniError(spec.IO_FAILURE, "the CNI daemon sent no valid reply")
        return reply

    return send


def socket_path(env: Mapping[str, str], config: Mapping[str, Any]) -> str:
    """$STACKUBE_CNI_SOCKET, else the network configuration's "socket", else the default."""
    configured = config.get("socket")
    return env.get(SOCKET_ENV) or (configured if isinstance(configured, str) else DEFAULT_SOCKET)


def run(
    env: Mapping[str, str],
    stdin: bytes,
    stdout: TextIO,
    stderr: TextIO,
    sender_for: Callable[[str], Send],
) -> int:
    """`sender_for(socket path)` talks to the daemon (the path comes from env or the
    network configuration)."""
    version = spec.RESULT_VERSION
    try:
        request = spec.parse_request(env, stdin)
        version = request.cni_version
        if request.command == "VERSION":
            reply: dict[str, Any] = spec.version_result()
        else:
            send = sender_for(socket_path(env, request.config))
            reply = send(spec.to_message(request))
            if "error" in reply:
                error = reply["error"]
                raise spec.CniError(
                    int(error.get("code", spec.IO_FAILURE)),
                    str(error.get("msg", "CNI daemon error")),
                    str(error.get("details", "")),
                )
            reply = reply.get("result", {})
    except spec.CniError as exc:
        print(f"kubestack: {exc.msg} (code {exc.code}) {exc.details}".rstrip(), file=stderr)
        json.dump(exc.to_json(version), stdout)
        return 1
    if reply:
        json.dump(reply, stdout)
    return 0


def main() -> int:
    return run(os.environ, sys.stdin.buffer.read(), sys.stdout, sys.stderr, unix_socket_sender)


if __name__ == "__main__":
    sys.exit(main())
