"""The `stackube controller` program: configuration, clients, leader election,
metrics, then the kopf operator until stopped or no longer leader."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import socket
import threading
import time
import uuid

import kopf

from stackube.config import parse_config, read_key_files
from stackube.controller import metrics, timeline
from stackube.controller.loadbalancer import LoadBalancerReconciler
from stackube.controller.network import NetworkReconciler
from stackube.controller.operator import Reconcilers, register
from stackube.controller.system import keep_system_network
from stackube.controller.tenant import TenantReconciler
from stackube.errors import StackubeError
from stackube.kube.client import api_client, endpoint
from stackube.kube.lease import LeaseLock
from stackube.openstack.cloud import LazyConnection

log = logging.getLogger("stackube.controller")


def _keep_lease(lock: LeaseLock, done: threading.Event, lost: threading.Event) -> None:
    """Renew the lease until `done`; if it cannot be kept, note it and stop the operator
    the way a kubelet would (SIGTERM: kopf's own graceful stop)."""
    period = lock.duration_seconds / 3
    last_ok = time.monotonic()
    while not done.wait(period):
        try:
            if lock.try_acquire_or_renew():
                last_ok = time.monotonic()
                continue
            log.error("leader lease %s/%s taken by another controller", lock.namespace, lock.name)
        except StackubeError as exc:
            if time.monotonic() - last_ok < lock.duration_seconds:
                log.warning("could not renew the leader lease (will retry): %s", exc)
                continue
            log.error("leader lease not renewed for %ss: %s", lock.duration_seconds, exc)
        lost.set()
        os.kill(os.getpid(), signal.SIGTERM)
        return


def run(args: argparse.Namespace) -> int:
    # `kill -USR1 <pid>` prints every thread's stack to the log: for stuck-looking pods.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = parse_config(read_key_files(args.config_dir), read_key_files(args.secret_dir))
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    if args.timeline:
        timeline.log.setLevel(logging.DEBUG)
    kube = api_client(args.kubeconfig)
    apiserver = endpoint(args.kubeconfig)
    openstack = LazyConnection(config)
    metrics.serve(args.metrics_port, args.bind_address)

    # No stop_flag for kopf: it would park an executor thread waiting on it, which
    # asyncio then waits for forever at shutdown. Losing the lease sends SIGTERM instead.
    lost = threading.Event()
    done = threading.Event()
    lock = None
    if args.leader_elect:
        # Unique per process: on the host network every replica's hostname is its
        # node's, and a container's pid is often 1 (as client-go: name + random).
        name = os.environ.get("POD_NAME") or socket.gethostname()
        identity = f"{name}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        lock = LeaseLock(kube, args.lease_namespace, args.lease_name, identity)
        log.info("waiting to become leader (lease %s/%s)", args.lease_namespace, args.lease_name)
        while not lock.try_acquire_or_renew():
            time.sleep(2)
        log.info("became leader as %s", identity)
        threading.Thread(
            target=_keep_lease, args=(lock, done, lost), name="leader-lease", daemon=True
        ).start()

    threading.Thread(
        target=keep_system_network,
        args=(kube, config, done),
        name="system-network",
        daemon=True,
    ).start()
    registry = kopf.OperatorRegistry()
    register(registry, args.resync_seconds)

    @kopf.on.login(registry=registry)
    def _login(**_: object) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=apiserver.server,
            ca_path=apiserver.ca_path,
            certificate_path=apiserver.certificate_path,
            private_key_path=apiserver.private_key_path,
            token=apiserver.token,
            insecure=apiserver.insecure,
            scheme="Bearer" if apiserver.token else None,
        )

    networks = NetworkReconciler(openstack, kube, config, args.neutron_concurrency)
    memo = kopf.Memo(
        reconcilers=Reconcilers(
            TenantReconciler(openstack, kube, config),
            networks,
            wait_for_dns=args.wait_for_dns,
            load_balancers=LoadBalancerReconciler(
                lambda: networks.conn,
                config.ext_net_id,
                networks.project_id,
                networks.owner_if_known,
                kube,
            )
            if args.load_balancers
            else None,
        )
    )
    try:
        kopf.run(
            registry=registry,
            clusterwide=True,
            standalone=True,
            liveness_endpoint=f"http://{args.bind_address}:{args.health_port}/healthz",
            memo=memo,
        )
    finally:
        done.set()
        if lock is not None and not lost.is_set():
            lock.release()
    return 1 if lost.is_set() else 0
