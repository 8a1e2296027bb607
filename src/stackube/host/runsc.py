"""TCP connections into gVisor sandboxes, made by gVisor itself (`runsc port-forward`).

A gVisor pod's addresses live in its sandbox's own network stack (netstack), not in the
kernel's network namespace that CNI made: a connection made in that namespace, to the
pod's address or to 127.0.0.1, reaches nothing. `runsc port-forward --stream <socket>
<container> <port>` (gVisor runsc/cmd/portforward.go) connects to a unix socket we
listen on, hands that connection's file to the sandbox's Sentry and exits; the Sentry
dials `127.0.0.1:<port>` inside netstack and copies between the two until either ends.
About 25 ms per connection on the devbox (one short runsc process).

The Sentry ends the sandbox side when the stream reaches EOF: a caller must not
half-close the returned socket while it still wants the answer.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Runsc:
    """runsc as a containerd shim runs it: `binary`, and `root`, the state directory of
    the shim's containerd namespace (`<runsc.toml root>/<namespace>`, e.g.
    `/run/containerd/runsc/k8s.io`)."""

    binary: str
    root: Path

    def runs(self, sandbox_id: str) -> bool:
        """Whether the pod sandbox `sandbox_id` (CRI's id, CNI's CONTAINER_ID) is a
        gVisor sandbox on this node: runsc keeps a state file per container,
        `<root>/<container id>_sandbox:<sandbox id>.state` (runsc/container/state_file.go),
        and the sandbox's own container has the sandbox's id."""
        return (self.root / f"{sandbox_id}_sandbox:{sandbox_id}.state").exists()

    def connect(self, sandbox_id: str, port: int, timeout: float) -> socket.socket:
        """A stream connected to `127.0.0.1:port` inside the sandbox (a unix socket on
        our side: send and receive as on TCP). Raises ConnectionRefusedError when
        nothing listens there (runsc's own message), TimeoutError when runsc takes
        longer than `timeout` seconds, OSError for the rest."""
        with tempfile.TemporaryDirectory(prefix="stackube-runsc-") as directory:
            path = str(Path(directory) / "stream")
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(path)
                listener.listen(1)
                argv = [
                    self.binary,
                    f"--root={self.root}",
                    "port-forward",
                    f"--stream={path}",
                    sandbox_id,
                    str(port),
                ]
                try:
                    done = subprocess.run(
                        argv,
                        capture_output=True,
                        text=True,
                        errors="replace",
                        timeout=timeout,
                        check=False,
                    )
                except subprocess.TimeoutExpired as exc:
                    raise TimeoutError(f"runsc port-forward {port} took over {timeout}s") from exc
                if done.returncode != 0:
                    message = done.stderr.strip().splitlines()[-1:] or ["(no message)"]
                    if "refused" in message[0]:
                        raise ConnectionRefusedError(message[0])
                    raise OSError(f"runsc port-forward {port}: {message[0]}")
                # runsc connected before it handed the stream over: accepting cannot block.
                listener.settimeout(timeout)
                stream, _ = listener.accept()
                return stream
            finally:
                listener.close()
