"""The node's container runtime over CRI (runtime.v1, gRPC on a unix socket): which pod
sandboxes are alive and which network namespace each one has.

Follows k8s.io/cri-api pkg/apis/runtime/v1/api.proto (ListPodSandbox,
PodSandboxStatus). The netns path comes from the verbose status's `info` JSON, where
containerd (and CRI-O) put the sandbox's OCI runtime spec: `runtimeSpec.linux.namespaces`
entry of type `network`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from stackube.errors import TemporaryError

DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
TIMEOUT = 10.0  # seconds, per call


@dataclass(frozen=True)
class Sandbox:
    """A pod sandbox the runtime reports READY."""

    id: str
    namespace: str
    name: str
    uid: str
    netns: str  # "" when the runtime does not say (host-network pods have none)


def netns_from_info(info: dict[str, str]) -> str:
    """The network namespace path in a verbose PodSandboxStatus's info, or ""."""
    try:
        doc: Any = json.loads(info.get("info", "{}"))
    except ValueError:
        return ""
    spec = doc.get("runtimeSpec") if isinstance(doc, dict) else None
    namespaces = ((spec or {}).get("linux") or {}).get("namespaces") or []
    for entry in namespaces:
        if isinstance(entry, dict) and entry.get("type") == "network":
            return str(entry.get("path") or "")
    return ""


def endpoint_target(endpoint: str) -> str:
    """`unix:///path` or a bare path -> the gRPC target."""
    return endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"


def ready_sandboxes(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> list[Sandbox]:
    """Every READY pod sandbox with its netns path. Raises TemporaryError when the
    runtime cannot be asked (not running, socket missing, deadline exceeded)."""
    # Imported here: gRPC and the stubs cost ~100 ms, and only the node daemon calls this.
    import grpc  # noqa: PLC0415

    from stackube.host.cri_api import api_pb2, api_pb2_grpc  # noqa: PLC0415

    try:
        with grpc.insecure_channel(endpoint_target(endpoint)) as channel:
            runtime = api_pb2_grpc.RuntimeServiceStub(channel)
            listed = runtime.ListPodSandbox(
                api_pb2.ListPodSandboxRequest(
                    filter=api_pb2.PodSandboxFilter(
                        state=api_pb2.PodSandboxStateValue(state=api_pb2.SANDBOX_READY)
                    )
                ),
                timeout=timeout,
            )
            found = []
            for item in listed.items:
                status = runtime.PodSandboxStatus(
                    api_pb2.PodSandboxStatusRequest(pod_sandbox_id=item.id, verbose=True),
                    timeout=timeout,
                )
                found.append(
                    Sandbox(
                        item.id,
                        item.metadata.namespace,
                        item.metadata.name,
                        item.metadata.uid,
                        netns_from_info(dict(status.info)),
                    )
                )
            return found
    except grpc.RpcError as exc:
        raise TemporaryError(f"container runtime at {endpoint}: {exc}") from exc


def runtime_ready(endpoint: str = DEFAULT_ENDPOINT, timeout: float = TIMEOUT) -> bool:
    """Whether the runtime answers CRI's Status with RuntimeReady true (containerd answers
    `ctr version` before its CRI plugin is initialized; kubelet then refuses to start:
    "server is not initialized yet"). False when it cannot be asked."""
    import grpc  # noqa: PLC0415

    from stackube.host.cri_api import api_pb2, api_pb2_grpc  # noqa: PLC0415

    try:
        with grpc.insecure_channel(endpoint_target(endpoint)) as channel:
            status = api_pb2_grpc.RuntimeServiceStub(channel).Status(
                api_pb2.StatusRequest(), timeout=timeout
            )
    except grpc.RpcError:
        return False
    return any(c.type == "RuntimeReady" and c.status for c in status.status.conditions)
