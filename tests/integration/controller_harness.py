"""Running the real stackube-controller program against the devbox, as a process that
tests can start, kill (crash points) and restart, with the least-privilege RBAC of
deploy/controller/rbac.yaml and a service-account token."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s

from stackube.api.crds import all_crds
from stackube.api.manifests import controller_rbac
from stackube.devbox.box import Devbox
from stackube.devbox.stackube import controller_config_values
from stackube.kube import apply

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def devbox_controller_paused(devbox: Devbox) -> Iterator[None]:
    """Tests run their own controllers: the devbox's one must not act meanwhile."""
    with devbox_services_paused(devbox, "stackube-controller"):
        yield


@contextmanager
def devbox_services_paused(devbox: Devbox, *names: str) -> Iterator[None]:
    """Stop some of the devbox's services while tests run their own instances, and start
    those again afterwards (only those: others may be paused by another fixture)."""
    devbox.pause(*names)
    try:
        yield
    finally:
        devbox.resume(*names)


@contextmanager
def node_cordoned(api: k8s.ApiClient, name: str) -> Iterator[None]:
    """The devbox's node takes no new pods meanwhile, then is as it was (no node yet:
    nothing to do)."""
    core = k8s.CoreV1Api(api)
    try:
        before = bool(core.read_node(name).spec.unschedulable)
    except k8s.ApiException as exc:
        if exc.status != 404:
            raise
        yield
        return
    core.patch_node(name, {"spec": {"unschedulable": True}})
    try:
        yield
    finally:
        core.patch_node(name, {"spec": {"unschedulable": before}})


def stop_processes(procs: list[subprocess.Popen[bytes]], grace: float = 15) -> None:
    """SIGTERM each live process, SIGKILL what is still there after `grace` seconds."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    procs.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def apply_crds(api: k8s.ApiClient) -> None:
    apply.apply_crds(api, all_crds())


def apply_rbac(api: k8s.ApiClient) -> None:
    apply.server_side_apply(api, controller_rbac(), "stackube-tests")


def service_account_kubeconfig(
    api: k8s.ApiClient, devbox: Devbox, path: Path, account: str = "stackube-controller"
) -> Path:
    request = k8s.AuthenticationV1TokenRequest(
        spec=k8s.V1TokenRequestSpec(expiration_seconds=7200, audiences=[])
    )
    token = (
        k8s.CoreV1Api(api)
        .create_namespaced_service_account_token(account, "kube-system", request)
        .status.token
    )
    ca = (devbox.settings.pki_dir / "ca.crt").read_bytes()
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devbox",
                "cluster": {
                    "server": devbox.settings.apiserver_url,
                    "certificate-authority-data": base64.b64encode(ca).decode(),
                },
            }
        ],
        "users": [{"name": account, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "devbox", "user": account}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(doc))
    path.chmod(0o600)
    return path


def write_config(devbox: Devbox, directory: Path) -> tuple[Path, Path]:
    secrets = json.loads(devbox.settings.secrets_file.read_text())
    config_dir, secret_dir = directory / "config", directory / "secret"
    config_dir.mkdir(parents=True, exist_ok=True)
    secret_dir.mkdir(parents=True, exist_ok=True)
    values = controller_config_values(devbox.settings)
    for key, value in values.items():
        (config_dir / key).write_text(value)
    (secret_dir / "password").write_text(secrets["stackube_service"])
    return config_dir, secret_dir


@dataclass
class Controller:
    kubeconfig: Path
    config_dir: Path
    secret_dir: Path
    log_dir: Path
    resync_seconds: float = 5.0
    # More `stackube controller` options (e.g. --timeline).
    extra_args: tuple[str, ...] = ()
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    runs: int = 0

    def start(
        self, crash_after: str | None = None, leader_elect: bool = False
    ) -> subprocess.Popen[bytes]:
        self.runs += 1
        self.health_port, self.metrics_port = free_port(), free_port()
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        if crash_after:
            env["STACKUBE_CRASH_AFTER"] = crash_after
        self.log = self.log_dir / f"controller-{self.runs}.log"
        argv = [
            sys.executable,
            "-m",
            "stackube",
            "controller",
            f"--kubeconfig={self.kubeconfig}",
            f"--config-dir={self.config_dir}",
            f"--secret-dir={self.secret_dir}",
            "--bind-address=127.0.0.1",
            f"--health-port={self.health_port}",
            f"--metrics-port={self.metrics_port}",
            "--leader-elect" if leader_elect else "--no-leader-elect",
            f"--resync-seconds={self.resync_seconds}",
            # This tier's node is cordoned: tenants' DNS servers never run here.
            "--no-wait-for-dns",
            *self.extra_args,
        ]
        with self.log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        self.procs.append(proc)
        return proc

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.health_port}/healthz", timeout=1
                ):
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError(
            f"controller not healthy in {timeout}s:\n{self.log.read_text()[-3000:]}"
        )

    def metrics(self) -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5
        ) as resp:
            return str(resp.read().decode())

    def stop_all(self) -> None:
        stop_processes(self.procs)

    def logs(self) -> str:
        return "".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("controller-*.log"))
        )


def custom(api: k8s.ApiClient) -> Any:
    return k8s.CustomObjectsApi(api)
