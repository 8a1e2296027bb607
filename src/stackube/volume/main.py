"""`cinder~flexvolume_driver`: the executable kubelet calls (FlexVolume), wiring the
node's volume logic to Cinder, the Kubernetes API and the node's block devices.

kubelet reads the driver's combined stdout and stderr as one JSON object, so nothing
but that object is ever printed: logs go to `<state-dir>/driver.log`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stackube.api.types import LABEL_PROJECT_ID, is_tenant_namespace
from stackube.errors import StackubeError
from stackube.host import blockdev, cgroups
from stackube.kube import client as kube_client
from stackube.kube import resources
from stackube.openstack import cloud
from stackube.openstack import volume as cinder_api
from stackube.volume import config as volume_config
from stackube.volume import flexvolume
from stackube.volume.node import NodeVolumes
from stackube.volume.records import RecordStore

log = logging.getLogger("stackube.volume")

CONFIG_ENV = "STACKUBE_CINDER_CONF"
OPENSTACK_TIMEOUT = 30.0


class CinderAdapter:
    """NodeVolumes' view of Cinder, over one openstacksdk connection."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def get_volume(self, volume_id: str) -> cinder_api.Volume | None:
        return cinder_api.get_volume(self.conn, volume_id)

    def attachments_of(self, volume_id: str) -> list[cinder_api.Attachment]:
        return cinder_api.attachments_of(self.conn, volume_id)

    def create_attachment(
        self, volume_id: str, instance: str, connector: Mapping[str, Any], mode: str
    ) -> cinder_api.Attachment:
        return cinder_api.create_attachment(self.conn, volume_id, instance, connector, mode)

    def complete_attachment(self, attachment_id: str) -> None:
        cinder_api.complete_attachment(self.conn, attachment_id)

    def delete_attachment(self, attachment_id: str) -> None:
        cinder_api.delete_attachment(self.conn, attachment_id)


class NamespaceProjects:
    """A namespace's Keystone project: the label the controller puts on a Tenant's
    namespace (tenants cannot edit namespaces)."""

    def __init__(self, kubeconfig: Path | None) -> None:
        self.kubeconfig = kubeconfig

    def project_of(self, namespace: str) -> str | None:
        with kube_client.session(self.kubeconfig) as api:
            found = resources.get_namespace(api, namespace)
        # Nothing new for a namespace being deleted: its Tenant's finalizer may be
        # deleting the project's volumes (docs/decisions/0019).
        if found is None or found.terminating or not is_tenant_namespace(found.labels):
            return None
        return found.labels.get(LABEL_PROJECT_ID) or None

    def pod_uid(self, namespace: str, name: str) -> str | None:
        with kube_client.session(self.kubeconfig) as api:
            return resources.pod_uid(api, namespace, name)


class HostStorage:
    """NodeVolumes' view of the node (stackube.host.blockdev). `host_cgroups`: the node's
    cgroup file system, when the driver runs in a pod: each rbd-fuse server moves to its
    root cgroups (stackube.host.cgroups), so that a restart of the pod keeps the mounts."""

    def __init__(self, host_cgroups: Path | None = None) -> None:
        self.host_cgroups = host_cgroups

    def rbd_fuse_mount(
        self, directory: Path, conf: Path, client: str, pool: str, image: str
    ) -> None:
        blockdev.rbd_fuse_mount(directory, conf, client, pool, image)
        if self.host_cgroups is None:
            return
        for pid in blockdev.fuse_server_pids(directory):
            problems = cgroups.move_to_root(pid, self.host_cgroups)
            if problems:
                log.warning(
                    "rbd-fuse %d (%s) stays in this container's cgroups, so a restart of this"
                    " pod breaks its mount: %s", pid, directory, "; ".join(problems),
                )  # fmt: skip
            else:
                log.info("rbd-fuse %d (%s) moved to the node's root cgroups", pid, directory)

    mounted_source = staticmethod(blockdev.mounted_source)
    unmount = staticmethod(blockdev.unmount)
    loop_device_of = staticmethod(blockdev.loop_device_of)
    loop_attach = staticmethod(blockdev.loop_attach)
    loop_detach = staticmethod(blockdev.loop_detach)
    filesystem_type = staticmethod(blockdev.filesystem_type)
    make_filesystem = staticmethod(blockdev.make_filesystem)
    mount = staticmethod(blockdev.mount)


def node_volumes(
    config: volume_config.VolumeConfig, host_cgroups: Path | None = None
) -> NodeVolumes:
    creds = cloud.Credentials(
        auth_url=config.auth_url,
        username=config.username,
        password=config.password,
        project_name=config.project_name,
        region=config.region,
        user_domain=config.user_domain,
        project_domain=config.project_domain,
    )
    return NodeVolumes(
        cinder=CinderAdapter(cloud.connect_as_service(creds, timeout=OPENSTACK_TIMEOUT)),
        namespaces=NamespaceProjects(config.kubeconfig),
        storage=HostStorage(host_cgroups),
        store=RecordStore(config.state_dir),
        node_name=config.node_name,
        keyring=volume_config.keyring_text(config),
    )


def _log_to(state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    handler = logging.FileHandler(state_dir / "driver.log")
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s [{os.getpid()}] %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("openstack", "keystoneauth", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def call(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, str]:
    """One FlexVolume call: (status, JSON line to print)."""
    if not argv:
        return flexvolume.FAILURE, flexvolume.result(flexvolume.FAILURE, "no command given")
    command, args = argv[0], argv[1:]
    if command == "init":
        return flexvolume.SUCCESS, flexvolume.init_result()
    if command not in ("mount", "unmount"):
        return flexvolume.NOT_SUPPORTED, flexvolume.result(flexvolume.NOT_SUPPORTED)
    try:
        config = volume_config.load(Path(env.get(CONFIG_ENV) or volume_config.DEFAULT_PATH))
        _log_to(config.state_dir)
        if command == "mount":
            request = flexvolume.parse_mount(args)
            log.info("mount %s for pod %s/%s (volume %s)", request.mount_dir,
                     request.pod_namespace, request.pod_name, request.volume_id)  # fmt: skip
            done = node_volumes(config).mount(request)
        else:
            mount_dir = flexvolume.parse_unmount(args)
            log.info("unmount %s", mount_dir)
            done = node_volumes(config).unmount(mount_dir)
    except StackubeError as exc:
        log.warning("%s failed: %s", command, exc)
        return flexvolume.FAILURE, flexvolume.result(flexvolume.FAILURE, str(exc))
    except Exception as exc:  # kubelet must get JSON, whatever went wrong
        log.exception("%s failed unexpectedly", command)
        message = f"{command} failed unexpectedly: {type(exc).__name__}: {exc}"
        return flexvolume.FAILURE, flexvolume.result(flexvolume.FAILURE, message)
    log.info("%s: %s", command, done)
    return flexvolume.SUCCESS, flexvolume.result(flexvolume.SUCCESS, done)


def main(argv: Sequence[str] | None = None) -> int:
    status, line = call(list(sys.argv[1:] if argv is None else argv), os.environ)
    sys.stdout.write(line + "\n")
    return flexvolume.exit_code(status)


if __name__ == "__main__":
    raise SystemExit(main())
