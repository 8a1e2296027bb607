"""containerd-shim-runsc-v1 for containerd 1.6: gVisor's shim, with its `start` answer
in the form containerd 1.6 reads.

containerd runs a runtime's shim binary as `<shim> [flags] start` and reads the new
shim's ttrpc address from its stdout. containerd 1.6 takes the whole output as the
address; gVisor's shim (built on containerd 2's shim library) prints containerd 1.7+'s
bootstrap parameters, `{"version":2,"address":"unix:///run/containerd/s/...",
"protocol":"ttrpc"}` (containerd core/runtime/v2/bootstrap.go). Version 2 is the task
API containerd 1.6 speaks, so only the form differs: this wrapper prints the address.
Every other invocation (`delete`, `-v`) is the real shim's, unchanged.

Usage: python3 -m stackube.runtime.shim <real shim> <its arguments...>
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# What containerd 1.6 can use: ttrpc over a unix socket, task API v2.
SUPPORTED_VERSION = 2
SUPPORTED_PROTOCOL = "ttrpc"


class BootstrapError(ValueError):
    """The shim's `start` answer is not one containerd 1.6 can use."""


def bootstrap_address(output: str) -> str:
    """The address in a shim's `start` output: containerd 1.7+'s JSON bootstrap
    parameters (version 2, ttrpc) or an address as older shims print it.

    Raises BootstrapError for another version or protocol (containerd 1.6 would dial
    it and fail with a worse message).
    """
    text = output.strip()
    if not text.startswith("{"):
        return text
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BootstrapError(f"shim start printed unreadable JSON: {text!r}") from exc
    version, protocol = params.get("version"), params.get("protocol", SUPPORTED_PROTOCOL)
    address = params.get("address")
    if version != SUPPORTED_VERSION or protocol != SUPPORTED_PROTOCOL or not address:
        raise BootstrapError(
            f"shim start answered version {version!r} over {protocol!r}; containerd 1.6 "
            f"needs version {SUPPORTED_VERSION} over {SUPPORTED_PROTOCOL}: {text!r}"
        )
    return str(address)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python3 -m stackube.runtime.shim <real shim> [arguments...]", file=sys.stderr)
        return 2
    shim, shim_args = args[0], args[1:]
    if not shim_args or shim_args[-1] != "start":
        os.execv(shim, [shim, *shim_args])  # noqa: S606 (the real shim, as containerd named it)
    # The shim it starts outlives this call; stderr is containerd's, as for the real shim.
    done = subprocess.run(
        [shim, *shim_args], stdout=subprocess.PIPE, text=True, check=False, timeout=60
    )
    if done.returncode != 0:
        sys.stdout.write(done.stdout)
        return done.returncode
    try:
        sys.stdout.write(bootstrap_address(done.stdout))
    except BootstrapError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
