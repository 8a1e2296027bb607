"""From `kubectl run` to the pod Running on the devbox's node, with and without warm
Neutron port pools.

Run (root, devbox up):  python3 -m benchmarks.pod_startup [--pods 20]

One tenant; for each mode the devbox's CNI daemon is replaced by the same program with
that mode's pool size (`--pool-size=0`, then `--pool-size=<pods> --pool-eager`, the pool
filled before the first pod); then, one at a time, `kubectl -n <tenant> run p<i>
--image=busybox -- sleep 3600` and the time until the API shows the pod Running
(polled every 20 ms). Both modes run in the same invocation, side by side. Prints a
Markdown table (milliseconds).
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
from pathlib import Path

from kubernetes import client as k8s
from openstack.connection import Connection
from tests.integration.cni_harness import (
    create_tenant,
    delete_tenant,
    network_id_of,
    pool_ports,
    wait_for,
)
from tests.integration.controller_harness import stop_processes

from benchmarks.live import with_live_tenant
from benchmarks.stats import row
from stackube.devbox.box import Devbox
from stackube.devbox.node import NodePaths, cni_daemon_argv
from stackube.devbox.settings import DevboxSettings
from stackube.kube.client import api_client
from stackube.openstack.cloud import connect_cloud


def running(core: k8s.CoreV1Api, namespace: str, name: str) -> bool:
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except k8s.ApiException:
        return False
    return bool(pod.status and pod.status.phase == "Running")


def start_pod(kubeconfig: Path, namespace: str, name: str) -> None:
    subprocess.run(
        [
            "kubectl", f"--kubeconfig={kubeconfig}", "-n", namespace, "run", name,
            "--image=busybox", "--restart=Never", "--command", "--", "sleep", "3600",
        ],
        check=True, capture_output=True,
    )  # fmt: skip


def one_mode(
    devbox: Devbox, core: k8s.CoreV1Api, tenant: str, label: str, pods: int
) -> list[float]:
    kubeconfig = devbox.settings.admin_kubeconfig
    latencies = []
    for index in range(pods):
        name = f"{label}-{index}"
        started = time.monotonic()
        start_pod(kubeconfig, tenant, name)
        while not running(core, tenant, name):
            if time.monotonic() - started > 120:
                raise AssertionError(f"pod {name} not Running within 120 s")
            time.sleep(0.02)
        latencies.append((time.monotonic() - started) * 1000)
    for index in range(pods):
        core.delete_namespaced_pod(f"{label}-{index}", tenant, grace_period_seconds=0)
    wait_for(
        lambda: not [p for p in core.list_namespaced_pod(tenant).items
                     if p.metadata.name.startswith(f"{label}-")],
        180, "the pods to go",
    )  # fmt: skip
    return latencies


def daemon(devbox: Devbox, extra: list[str], log: Path) -> subprocess.Popen[bytes]:
    argv = [*cni_daemon_argv(devbox.settings, NodePaths(devbox.settings.node_dir)), *extra]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    time.sleep(3)
    return proc


@with_live_tenant
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    args = parser.parse_args()
    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    kube = api_client(devbox.settings.admin_kubeconfig)
    core = k8s.CoreV1Api(kube)
    admin: Connection = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    tenant = f"bench-pods-{secrets.token_hex(2)}"
    log_dir = devbox.settings.log_dir
    results: dict[str, list[float]] = {}
    create_tenant(kube, tenant)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        network_id = wait_for(lambda: network_id_of(kube, tenant), 120, "the Network")
        devbox.table.stop("stackube-cni-daemon")
        procs.append(daemon(devbox, ["--pool-size=0"], log_dir / "bench-cni-no-pool.log"))
        results["no pool"] = one_mode(devbox, core, tenant, "nopool", args.pods)
        stop_processes(procs)
        procs.append(
            daemon(
                devbox,
                [f"--pool-size={args.pods}", "--pool-eager"],
                log_dir / "bench-cni-pool.log",
            )
        )
        wait_for(
            lambda: len(list(pool_ports(admin, network_id))) >= args.pods,
            300, "the pool to fill",
        )  # fmt: skip
        results["warm pool"] = one_mode(devbox, core, tenant, "pool", args.pods)
    finally:
        stop_processes(procs)
        devbox.up()  # the devbox's own daemon again
        delete_tenant(kube, tenant, timeout=300)
    print("| CNI daemon | pods | p50 ms | p95 ms | max ms |")
    print("|---|---|---|---|---|")
    for label, values in results.items():
        print(row(label, values, digits=0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
