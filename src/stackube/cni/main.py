"""The `stackube cni-daemon` program: configuration, clients, recovery, then the
socket server until SIGTERM."""

from __future__ import annotations

import argparse
import faulthandler
import fcntl
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import FrameType

from stackube.cni.attachments import AttachmentStore
from stackube.cni.daemon import CniDaemon, DaemonSettings
from stackube.cni.drivers import driver_for
from stackube.cni.netpol import PodPolicyEngine
from stackube.cni.probe_relay import ProbeRelay
from stackube.cni.server import CniSocketServer
from stackube.config import parse_config, read_key_files
from stackube.errors import StackubeError, TemporaryError
from stackube.host import iptables
from stackube.host.portrelay import PortRelay
from stackube.host.runsc import Runsc
from stackube.kube.client import api_client
from stackube.kube.lease import LeaseLock
from stackube.kube.watch import network_reflector, node_pod_reflector, policy_reflectors
from stackube.openstack.cloud import LazyConnection

log = logging.getLogger("stackube.cni")


def _recover(daemon: CniDaemon) -> None:
    """Retry until Neutron and the apiserver answer: a node daemon outlives outages."""
    delay = 1.0
    while not daemon.stopping.is_set():
        try:
            daemon.recover()
            return
        except StackubeError as exc:
            log.warning("recovery failed, retrying in %.0f s: %s", delay, exc)
            daemon.stopping.wait(delay)
            delay = min(delay * 2, 30.0)


LEASE_SECONDS = 30  # a crashed daemon's node is free again after this (or at once for
# a daemon restarted on the same host with the same state directory)


class NodeTakenError(StackubeError):
    """Another stackube-cni-daemon serves this node (identity) or this state directory."""


def lock_state_dir(state_dir: Path) -> int:
    """An exclusive lock on `<state-dir>/daemon.lock` for the process's life (the kernel
    drops it when the process dies). Raises NodeTakenError if another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(state_dir / "daemon.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NodeTakenError(
            f"another stackube-cni-daemon uses the state directory {state_dir}"
        ) from None
    return fd


def claim_node(lease: LeaseLock) -> None:
    """Hold the node's Lease, or raise NodeTakenError naming who holds it. The identity is
    host + state directory: a restart here takes over at once (the state-dir lock
    proves the old process is gone); any other daemon waits out the Lease. While the
    API server cannot answer, it waits (a node daemon outlives outages)."""
    delay = 1.0
    while True:
        try:
            held = lease.try_acquire_or_renew()
            break
        except TemporaryError as exc:  # a refusal (RBAC) is permanent: the caller exits
            log.warning("cannot reach the node's Lease yet, retrying in %.0f s: %s", delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)
    if not held:
        holder, renewed = lease.holder()
        raise NodeTakenError(
            f"node {lease.name.removeprefix('stackube-cni-')} is served by another "
            f"stackube-cni-daemon ({holder or 'unknown'}, Lease {lease.namespace}/{lease.name} "
            f"renewed {renewed}); two daemons would fight over its pods' ports. Stop that "
            f"one, or give this one its own --node-name"
        )


def _keep_node(lease: LeaseLock, stop: threading.Event) -> None:
    """Renew the Lease every third of its duration; losing it, or failing to renew it
    for longer than it lasts (another daemon may hold it by then), stops the daemon."""
    renewed = time.monotonic()
    while not stop.wait(LEASE_SECONDS / 3):
        try:
            if not lease.try_acquire_or_renew():
                log.error("lost the node's Lease %s to another daemon: stopping", lease.name)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            renewed = time.monotonic()
        except StackubeError as exc:
            log.warning("could not renew the node's Lease (will retry): %s", exc)
        except Exception:  # a background thread logs and lives on
            log.exception("renewing the node's Lease failed")
        if time.monotonic() - renewed > LEASE_SECONDS:
            log.error("the node's Lease %s expired unrenewed: stopping", lease.name)
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _runsc(binary: str, root: Path) -> Runsc | None:
    """gVisor's runsc for probes and port-forward into gVisor pods, if it is there."""
    if not binary:
        return None
    if not os.access(binary, os.X_OK) or not Path(binary).is_file():
        log.warning(
            "--runsc %s is not an executable file: gVisor pods (if any) get no probes or "
            "port-forward from this node",
            binary,
        )
        return None
    log.info("gVisor pods: probes and port-forward through %s (state in %s)", binary, root)
    return Runsc(binary, root)


def run(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = parse_config(read_key_files(args.config_dir), read_key_files(args.secret_dir))
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    driver = driver_for(args.plug_driver or config.plugin_name, config.integration_bridge)
    lock_state_dir(args.state_dir)  # held until exit
    settings = DaemonSettings(
        node=args.node_name,
        binding_host=args.binding_host,
        cri_endpoint=args.cri_endpoint,
        repair_seconds=args.repair_seconds,
        node_link=args.node_link,
        pool_size=args.pool_size,
        pool_eager=args.pool_eager,
        cluster_dns=tuple(args.cluster_dns),
        cluster_domain=args.cluster_domain,
        port_active_timeout=args.port_active_timeout,
        resync_seconds=args.resync_seconds,
        network_wait_seconds=args.network_wait_seconds,
    )
    kube_api = api_client(args.kubeconfig)
    lease = LeaseLock(
        kube_api,
        args.lease_namespace,
        f"stackube-cni-{settings.node}",
        f"{socket.gethostname()}:{args.state_dir.resolve()}",
        LEASE_SECONDS,
    )
    claim_node(lease)
    stopping = threading.Event()
    threading.Thread(target=_keep_node, args=(lease, stopping), name="lease", daemon=True).start()
    daemon = CniDaemon(
        settings,
        LazyConnection(config),
        kube_api,
        driver,
        AttachmentStore(args.state_dir / "attachments"),
        hostport_relay=PortRelay("hostport") if args.hostports else None,
        runsc=_runsc(args.runsc, args.runsc_root),
    )
    log.info(
        "node %s (Neutron host %s), %s driver, pools of %d%s",
        settings.node,
        settings.host,
        driver.name,
        settings.pool_size,
        " (every Active Network)" if settings.pool_eager else "",
    )
    reflector = network_reflector(kube_api, daemon.on_network, daemon.stopping)
    daemon.networks_watched = reflector.synced
    reflector.start()
    node_pod_reflector(kube_api, settings.node, daemon.on_pod, daemon.stopping).start()
    if args.network_policy:
        policies = PodPolicyEngine(iptables, daemon.policy_pods)
        for watch in policy_reflectors(kube_api, policies.on_change, daemon.stopping).values():
            watch.start()
        threading.Thread(
            target=policies.run, args=(daemon.stopping,), name="netpol", daemon=True
        ).start()
    relay = ProbeRelay(daemon.resolve_probe, args.probe_relay_port)
    daemon.relay_port = relay.port
    threading.Thread(target=relay.serve_forever, name="probe-relay", daemon=True).start()
    server = CniSocketServer(args.socket, daemon.handle)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stopping.set()
        daemon.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()
        threading.Thread(target=relay.shutdown, daemon=True).start()
        if isinstance(daemon.hostport_relay, PortRelay):
            threading.Thread(target=daemon.hostport_relay.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Serve while recovering: requests for sandboxes wait on their own locks, STATUS
    # says "not ready" until recovery is done.
    serving = threading.Thread(target=server.serve_forever, name="socket", daemon=True)
    serving.start()
    _recover(daemon)
    if not daemon.stopping.is_set():
        daemon.start_background()
    serving.join()
    server.server_close()
    args.socket.unlink(missing_ok=True)
    return 0
