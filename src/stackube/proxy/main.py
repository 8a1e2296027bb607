"""The `stackube proxy` program: watches, then the sync engine until SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from stackube.host import iptables, netlink, nftables
from stackube.host.portrelay import PortRelay
from stackube.kube.client import api_client
from stackube.kube.watch import cluster_reflectors
from stackube.proxy.sync import NodePorts, ProxyEngine
from stackube.proxy.tenants import ProxySettings

log = logging.getLogger("stackube.proxy")


def run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    relays = PortRelay("nodeport")
    node_ports = NodePorts(relays, args.node_name, args.nodeport_addresses, netlink.ipv4_addresses)
    engine = ProxyEngine(
        ProxySettings(args.cluster_dns, args.dns_namespace, args.service_cidr),
        iptables,
        args.min_sync_seconds,
        node_ports,
        nft=nftables,
        backend=args.backend,
    )
    reflectors = cluster_reflectors(api_client(args.kubeconfig), engine.on_change, stop)
    for reflector in reflectors.values():
        reflector.start()
    for name, reflector in reflectors.items():
        while not reflector.synced.wait(1):
            if stop.is_set():
                return 0
            log.info("waiting for the first list of %s", name)
    log.info("listed %s: full sync", ", ".join(reflectors))
    threading.Thread(target=engine.run, args=(stop,), name="sync", daemon=True).start()
    try:
        while not stop.wait(args.housekeeping_seconds):
            try:
                engine.housekeeping()
            except Exception:  # a bug or an odd kernel answer: say so, keep serving
                log.exception(
                    "housekeeping failed; trying again in %.0f s", args.housekeeping_seconds
                )
    finally:
        relays.stop()
    return 0
