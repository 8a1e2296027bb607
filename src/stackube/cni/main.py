"""The `stackube cni-daemon` program: configuration, clients, recovery, then the
socket server until SIGTERM."""

from __future__ import annotations

import argparse
import faulthandler
import logging
import signal
import threading
from types import FrameType

from stackube.cni.attachments import AttachmentStore
from stackube.cni.daemon import CniDaemon, DaemonSettings
from stackube.cni.drivers import driver_for
from stackube.cni.server import CniSocketServer
from stackube.config import parse_config, read_key_files
from stackube.errors import StackubeError
from stackube.kube.client import api_client
from stackube.kube.watch import network_reflector
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


def run(args: argparse.Namespace) -> int:
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    config = parse_config(read_key_files(args.config_dir), read_key_files(args.secret_dir))
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    driver = driver_for(args.plug_driver or config.plugin_name, config.integration_bridge)
    settings = DaemonSettings(
        node=args.node_name,
        pool_size=args.pool_size,
        pool_eager=args.pool_eager,
        cluster_dns=tuple(args.cluster_dns),
        cluster_domain=args.cluster_domain,
        port_active_timeout=args.port_active_timeout,
        resync_seconds=args.resync_seconds,
    )
    kube_api = api_client(args.kubeconfig)
    daemon = CniDaemon(
        settings,
        LazyConnection(config),
        kube_api,
        driver,
        AttachmentStore(args.state_dir / "attachments"),
    )
    log.info(
        "node %s, %s driver, pools of %d%s",
        settings.node,
        driver.name,
        settings.pool_size,
        " (every Active Network)" if settings.pool_eager else "",
    )
    reflector = network_reflector(kube_api, daemon.on_network, daemon.stopping)
    daemon.networks_watched = reflector.synced
    reflector.start()
    server = CniSocketServer(args.socket, daemon.handle)

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        daemon.stop()
        threading.Thread(target=server.shutdown, daemon=True).start()

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
