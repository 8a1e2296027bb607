"""`stackube csi`: the CSI driver's controller plugin (beside external-provisioner and
external-attacher) or node plugin (registered with kubelet), each a gRPC server on a
unix socket, configured by the seed's cinder.conf (stackube.volume.config).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from stackube.config import ConfigError, read_key_files
from stackube.host import blockdev
from stackube.openstack import cloud
from stackube.openstack import volume as cinder_api
from stackube.volume import config as volume_config
from stackube.volume.csi import (
    DRIVER_NAME,
    ControllerServicer,
    IdentityServicer,
    NodeServicer,
)
from stackube.volume.csi_api import csi_pb2_grpc
from stackube.volume.main import CinderAdapter, NamespaceProjects, node_volumes
from stackube.volume.registration import RegistrationServicer
from stackube.volume.registration_api import api_pb2_grpc

log = logging.getLogger("stackube.csi")

OPENSTACK_TIMEOUT = 30.0
GRPC_WORKERS = 4


def _socket_path(endpoint: str) -> Path:
    if not endpoint.startswith("unix://"):
        raise volume_config.VolumeConfigError(f"--endpoint must be unix:///path, not {endpoint}")
    return Path(endpoint.removeprefix("unix://"))


def _listen(server: grpc.Server, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a socket left by a previous run
    server.add_insecure_port(f"unix://{path}")


class ProjectConnections:
    """Cinder scoped to a tenant's project, as Stackube's service account (which holds a
    role on every project of the Tenants' domain), so the volume is the project's and
    its quotas apply. One connection per project, kept."""

    def __init__(self, config: volume_config.VolumeConfig) -> None:
        self.config = config
        self._conns: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _conn(self, project_id: str) -> Any:
        with self._lock:
            if project_id not in self._conns:
                c = self.config
                creds = cloud.Credentials(
                    auth_url=c.auth_url, username=c.username, password=c.password,
                    project_name="", region=c.region, user_domain=c.user_domain,
                    project_id=project_id,
                )  # fmt: skip
                self._conns[project_id] = cloud.connect(creds, timeout=OPENSTACK_TIMEOUT)
            return self._conns[project_id]

    def find(self, project_id: str, name: str) -> cinder_api.Volume | None:
        return cinder_api.find_own_volume(self._conn(project_id), name)

    def create(
        self, project_id: str, name: str, size_gib: int, description: str,
        metadata: Mapping[str, str],
    ) -> cinder_api.Volume:  # fmt: skip
        return cinder_api.create_volume(
            self._conn(project_id), name, size_gib, description, metadata
        )


class AdminCinder(CinderAdapter):
    def delete_volume(self, volume_id: str) -> None:
        cinder_api.delete_volume(self.conn, volume_id)


def _admin(config: volume_config.VolumeConfig) -> AdminCinder:
    creds = cloud.Credentials(
        auth_url=config.auth_url, username=config.username, password=config.password,
        project_name=config.project_name, region=config.region,
        user_domain=config.user_domain, project_domain=config.project_domain,
    )  # fmt: skip
    return AdminCinder(cloud.connect_as_service(creds, timeout=OPENSTACK_TIMEOUT))


def build_server(args: argparse.Namespace, config: volume_config.VolumeConfig) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=GRPC_WORKERS))
    socket = _socket_path(args.endpoint)
    controller = args.mode == "controller"
    csi_pb2_grpc.add_IdentityServicer_to_server(IdentityServicer(controller), server)
    if controller:
        csi_pb2_grpc.add_ControllerServicer_to_server(
            ControllerServicer(
                cinder=_admin(config),
                projects=ProjectConnections(config),
                namespaces=NamespaceProjects(config.kubeconfig),
            ),
            server,
        )
    else:
        csi_pb2_grpc.add_NodeServicer_to_server(
            NodeServicer(
                volumes=node_volumes(
                    config, Path(args.host_cgroups) if args.host_cgroups else None
                ),
                node_id=config.node_name,
                bind_mount=blockdev.bind_mount,
                unmount=blockdev.unmount,
            ),
            server,
        )
    _listen(server, socket)
    return server


def registration_server(args: argparse.Namespace) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    api_pb2_grpc.add_RegistrationServicer_to_server(
        RegistrationServicer(DRIVER_NAME, str(_socket_path(args.endpoint))), server
    )
    _listen(server, Path(args.registration_dir) / f"{DRIVER_NAME}-reg.sock")
    return server


def _config(args: argparse.Namespace) -> volume_config.VolumeConfig:
    """From the mounted ConfigMap and Secret (a pod), else from cinder.conf (a host)."""
    if args.config_dir is None:
        return volume_config.load(Path(args.cloud_config))
    try:
        data = read_key_files(Path(args.config_dir))
        secret = read_key_files(Path(args.secret_dir) if args.secret_dir else None)
    except ConfigError as exc:
        raise volume_config.VolumeConfigError(str(exc)) from exc
    if args.mode == "node" and not args.node_name.strip():
        raise volume_config.VolumeConfigError(
            "the node's name is required (--node-name or $NODE_NAME)"
        )
    return volume_config.from_seed(data, secret, args.node_name, Path(args.state_dir))


def run(args: argparse.Namespace) -> int:
    for noisy in ("urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = _config(args)
    servers = [build_server(args, config)]
    if args.mode == "node":
        servers.append(registration_server(args))
    for server in servers:
        server.start()
    log.info("CSI %s plugin %s serving on %s", args.mode, DRIVER_NAME, args.endpoint)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    for server in servers:
        server.stop(grace=5).wait()
    log.info("stopped")
    return 0
