"""The devbox's Cinder (Debian 12: Zed 21.3): cinder-api under uwsgi, cinder-scheduler and
cinder-volume with the RBD driver on the devbox's Ceph, sharing MariaDB, RabbitMQ and
Keystone with Neutron. Registered in Keystone as `block-storage` and `volumev3`.

The node side (the FlexVolume driver, docs/volumes.md) reaches volumes through Cinder's
attachments API (microversion 3.27+, completed with 3.44): no Nova.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackube.devbox import health
from stackube.devbox import openstack_config as cfg
from stackube.devbox.ceph import CINDER_CLIENT, VOLUMES_POOL, CephDevbox
from stackube.devbox.commands import Markers, fingerprint, package_version, run
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.process import ProcessSpec, ProcessTable
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.openstack import cloud, identity

log = logging.getLogger(__name__)

# Cinder's name for this backend host: stable, so volumes keep their host when the
# machine's hostname changes (`<host>@<backend>#<pool>`).
CINDER_HOST = "stackube-devbox"
BACKEND = "ceph"
CINDER_WSGI = Path("/usr/bin/cinder-wsgi")


@dataclass(frozen=True)
class CinderPaths:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "cinder.conf"

    @property
    def uwsgi(self) -> Path:
        return self.root / "uwsgi.ini"

    @property
    def state(self) -> Path:
        return self.root / "state"


def cinder_conf(
    settings: DevboxSettings,
    paths: CinderPaths,
    secrets: cfg.Secrets,
    ceph_conf: Path,
    ceph_fsid: str,
) -> str:
    """cinder.conf: one RBD backend on the `volumes` pool as `client.cinder` (pure)."""
    host = settings.host
    return cfg.render_ini(
        {
            "DEFAULT": {
                "transport_url": (
                    f"rabbit://stackube:{secrets.rabbitmq}@{host}:{settings.ports.rabbitmq}/"
                ),
                "auth_strategy": "keystone",
                "enabled_backends": BACKEND,
                "host": CINDER_HOST,
                "my_ip": host,
                "state_path": str(paths.state),
                "osapi_volume_listen": host,
                "osapi_volume_listen_port": str(settings.ports.cinder),
                "osapi_volume_workers": "1",
                "api_paste_config": "/etc/cinder/api-paste.ini",
                "use_stderr": "true",
                "debug": "false",
                # Ceph reports the pool's capacity; thin provisioning as RBD images are.
                "allow_availability_zone_fallback": "true",
            },
            "database": {
                "connection": cfg.db_url("cinder", secrets.mariadb_cinder, settings, "cinder")
            },
            "keystone_authtoken": cfg.authtoken(settings, "cinder", secrets.cinder_service),
            "oslo_concurrency": {"lock_path": str(paths.state / "lock")},
            BACKEND: {
                "volume_driver": "cinder.volume.drivers.rbd.RBDDriver",
                "volume_backend_name": BACKEND,
                "rbd_pool": VOLUMES_POOL,
                "rbd_ceph_conf": str(ceph_conf),
                "rbd_user": CINDER_CLIENT.removeprefix("client."),
                "rbd_secret_uuid": ceph_fsid,
                "rbd_flatten_volume_from_snapshot": "false",
                "rbd_exclusive_cinder_pool": "true",
                "report_discard_supported": "true",
            },
        }
    )


def cinder_uwsgi_ini(settings: DevboxSettings, paths: CinderPaths) -> str:
    """cinder-api as Cinder's own WSGI script under uwsgi (as devstack runs it)."""
    return cfg.render_ini(
        {
            "uwsgi": {
                "plugins": "python3",
                "http-socket": f"{settings.host}:{settings.ports.cinder}",
                "wsgi-file": str(CINDER_WSGI),
                # cinder-wsgi parses sys.argv as its command line.
                "pyargv": f"--config-file {paths.conf}",
                "master": "true",
                "processes": "1",
                "threads": "4",
                "lazy-apps": "true",
                "die-on-term": "true",
                "buffer-size": "65535",
                "add-header": "Connection: close",
            }
        }
    )


class CinderDevbox:
    def __init__(
        self,
        settings: DevboxSettings,
        *,
        secrets: cfg.Secrets,
        markers: Markers,
        ceph: CephDevbox,
        admin: cloud.Credentials,
        table: ProcessTable,
    ) -> None:
        """`admin`: the devbox's cloud admin."""
        self.settings = settings
        self.secrets = secrets
        self.markers = markers
        self.ceph = ceph
        self.credentials = admin
        self._admin: Any = None
        self.table = table
        self.paths = CinderPaths(settings.openstack_dir / "cinder")

    def admin(self) -> Any:
        """An admin connection (made again after the catalog gains Cinder's endpoints)."""
        if self._admin is None:
            self._admin = cloud.connect(self.credentials)
        return self._admin

    def _files(self) -> None:
        (self.paths.state / "lock").mkdir(parents=True, exist_ok=True)
        conf = cinder_conf(
            self.settings, self.paths, self.secrets, self.ceph.paths.conf, self.ceph.fsid()
        )
        write_atomic(self.paths.conf, conf, 0o600)
        write_atomic(self.paths.uwsgi, cinder_uwsgi_ini(self.settings, self.paths))

    def _api_prepare(self) -> None:
        self._files()
        self.markers.once(
            "cinder-db-sync",
            fingerprint(self.secrets.mariadb_cinder, package_version("cinder-common")),
            lambda: run(["cinder-manage", "--config-file", str(self.paths.conf), "db", "sync"],
                        timeout=900),
        )  # fmt: skip
        self.markers.once(
            "cinder-identities",
            fingerprint(self.secrets.cinder_service, self.settings.cinder_url),
            self._identities,
        )

    def _identities(self) -> None:
        conn = self.admin()
        default = identity.ensure_domain(conn, "Default")
        service = identity.ensure_project(conn, "service", default, "OpenStack service users")
        admin_role = identity.ensure_role(conn, "admin")
        user = identity.ensure_user(conn, "cinder", self.secrets.cinder_service, default)
        identity.grant_project_role(conn, user, service, admin_role)
        for service_type, name in (("block-storage", "cinder"), ("volumev3", "cinderv3")):
            identity.ensure_endpoints(
                conn, service_type, name, self.settings.cinder_url, self.settings.region
            )
        # This token's catalog predates the endpoints: connect again.
        self._admin = None

    def _service_up_probe(self, binary: str) -> health.Probe:
        """Up in Cinder's view, with a heartbeat newer than our process."""

        def probe() -> bool:
            try:
                started = datetime.datetime.fromtimestamp(
                    self.table.pid_file(binary).stat().st_mtime, datetime.UTC
                )
                services = list(self.admin().block_storage.services(binary=binary))
            except Exception:  # noqa: BLE001 - any failure (API down, no pid) means unhealthy
                return False
            for service in services:
                if service.state != "up" or not service.updated_at:
                    continue
                beat = datetime.datetime.fromisoformat(str(service.updated_at))
                if beat.tzinfo is None:
                    beat = beat.replace(tzinfo=datetime.UTC)
                if beat >= started - datetime.timedelta(seconds=1):
                    return True
            return False

        return probe

    def _daemon(self, binary: str) -> Service:
        return Service(
            name=binary,
            process=lambda: ProcessSpec(
                binary, [binary, "--config-file", str(self.paths.conf)], inputs=(self.paths.conf,)
            ),
            probe=self._service_up_probe(binary),
            start_timeout=90,
            prepare=self._files,
        )

    def services(self) -> list[Service]:
        s = self.settings
        return [
            Service(
                name="cinder-api",
                process=lambda: ProcessSpec(
                    "cinder-api",
                    ["uwsgi_python3", "--ini", str(self.paths.uwsgi)],
                    inputs=(self.paths.conf,),
                ),
                probe=health.http_ok(
                    f"http://{s.host}:{s.ports.cinder}/", expect=lambda status, _: status < 500
                ),
                start_timeout=90,
                prepare=self._api_prepare,
            ),
            self._daemon("cinder-scheduler"),
            self._daemon("cinder-volume"),
        ]
