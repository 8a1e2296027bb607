"""remove_network_finalizer against an HTTP-level fake of the Kubernetes API: a merge
patch carrying the resourceVersion read, read and sent again after a conflict (409)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client as k8s

from stackube.api.types import FINALIZER
from stackube.errors import TemporaryError
from stackube.kube import resources

pytestmark = pytest.mark.unit

PATH = "/apis/stackube.kubernetes.io/v1/namespaces/demo/networks/demo"
OURS, OTHER = FINALIZER, "example.com/other"


class FakeNetworkApi:
    """One Network. Each PATCH whose resourceVersion is stale gets 409; `conflicts`
    other writes happen between a GET and the next PATCH (the version moves on)."""

    def __init__(self, finalizers: list[str] | None, conflicts: int = 0) -> None:
        self.finalizers = finalizers  # None: no such Network
        self.version = 1
        self.conflicts = conflicts
        self.patches: list[dict[str, Any]] = []

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if path != PATH or self.finalizers is None:
            return 404, {"kind": "Status", "code": 404, "reason": "NotFound"}
        if method == "GET":
            if self.conflicts:  # another writer gets in after this read
                self.conflicts -= 1
                self.version += 1
                return 200, self._object(self.version - 1)
            return 200, self._object(self.version)
        patch = json.loads(body)
        self.patches.append(patch)
        if patch["metadata"]["resourceVersion"] != str(self.version):
            return 409, {"kind": "Status", "code": 409, "reason": "Conflict"}
        self.finalizers = patch["metadata"]["finalizers"]
        self.version += 1
        return 200, self._object(self.version)

    def _object(self, version: int) -> dict[str, Any]:
        return {
            "apiVersion": "stackube.kubernetes.io/v1",
            "kind": "Network",
            "metadata": {
                "name": "demo",
                "namespace": "demo",
                "resourceVersion": str(version),
                "finalizers": list(self.finalizers or []),
            },
        }


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[ThreadingHTTPServer] = []

    def start(fake: FakeNetworkApi) -> k8s.ApiClient:
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = fake.handle(self.command, self.path, self.rfile.read(length))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PATCH = _answer  # noqa: N815 - http.server names

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        config = k8s.Configuration(host=f"http://127.0.0.1:{server.server_address[1]}")
        return k8s.ApiClient(config)

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_our_finalizer_goes_and_the_others_stay(serve: Any) -> None:
    fake = FakeNetworkApi([OTHER, OURS])
    resources.remove_network_finalizer(serve(fake), "demo", "demo", OURS)
    assert fake.finalizers == [OTHER]
    assert fake.patches == [{"metadata": {"finalizers": [OTHER], "resourceVersion": "1"}}]


def test_a_conflict_is_read_and_patched_again(serve: Any) -> None:
    fake = FakeNetworkApi([OURS, OTHER], conflicts=1)
    resources.remove_network_finalizer(serve(fake), "demo", "demo", OURS)
    assert fake.finalizers == [OTHER]
    assert [p["metadata"]["resourceVersion"] for p in fake.patches] == ["1", "2"]


def test_conflicts_beyond_the_attempts_are_a_temporary_error(serve: Any) -> None:
    fake = FakeNetworkApi([OURS], conflicts=resources.FINALIZER_ATTEMPTS)
    with pytest.raises(TemporaryError):
        resources.remove_network_finalizer(serve(fake), "demo", "demo", OURS)
    assert fake.finalizers == [OURS]
    assert len(fake.patches) == resources.FINALIZER_ATTEMPTS


@pytest.mark.parametrize("finalizers", [None, [OTHER]])
def test_nothing_is_sent_for_a_network_gone_or_without_our_finalizer(
    serve: Any, finalizers: list[str] | None
) -> None:
    fake = FakeNetworkApi(finalizers)
    resources.remove_network_finalizer(serve(fake), "demo", "demo", OURS)
    assert fake.patches == []
