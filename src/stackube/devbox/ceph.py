"""The devbox's Ceph: one monitor, one manager and one OSD whose BlueStore lives in a
sparse file, as Ceph's own vstart.sh does (this kernel has no rbd, nbd or device-mapper
module, so no `ceph-volume lvm`), a `volumes` pool of size 1 for Cinder, and cephx keys
in 0600 files.

Everything binds to loopback and lives under `<state>/ceph`; the daemons run in the
foreground under the devbox's process table. `ceph.conf` follows the layout of
https://docs.ceph.com/en/pacific/install/manual-deployment/ (Ceph 16, Debian 12).
"""

from __future__ import annotations

import json
import logging
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from stackube.devbox import health
from stackube.devbox.commands import Markers, StepError, fingerprint, run
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.openstack_config import render_ini
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings

log = logging.getLogger(__name__)

MON_ID = "a"
MGR_ID = "x"
OSD_ID = 0
VOLUMES_POOL = "volumes"
# The Ceph user Cinder's RBD driver and the nodes' volume drivers act as (as Nova's
# compute nodes do with Cinder's key): rbd on the volumes pool, nothing else.
CINDER_CLIENT = "client.cinder"
# Sparse: only what is written takes disk space.
OSD_BLOCK_BYTES = 20 * 1024**3
OSD_MEMORY_TARGET = 1024**3
CEPH_TIMEOUT = 60.0


@dataclass(frozen=True)
class CephPaths:
    root: Path

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def fsid_file(self) -> Path:
        return self.root / "fsid"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def mon_data(self) -> Path:
        return self.root / "mon" / f"ceph-{MON_ID}"

    @property
    def mgr_data(self) -> Path:
        return self.root / "mgr" / f"ceph-{MGR_ID}"

    @property
    def osd_data(self) -> Path:
        return self.root / "osd" / f"ceph-{OSD_ID}"

    def keyring(self, entity: str) -> Path:
        """`<root>/ceph.<entity>.keyring`, Ceph's default name for an entity's keyring."""
        return self.root / f"ceph.{entity}.keyring"


def mon_addresses(settings: DevboxSettings) -> str:
    """The monitor's msgr2 and legacy addresses, in Ceph's `[v2:...,v1:...]` form."""
    host, ports = settings.host, settings.ports
    return f"[v2:{host}:{ports.ceph_mon_v2},v1:{host}:{ports.ceph_mon}]"


def ceph_conf(settings: DevboxSettings, paths: CephPaths, fsid: str) -> str:
    """ceph.conf for a one-node cluster on loopback (pure)."""
    host = settings.host
    return render_ini(
        {
            "global": {
                "fsid": fsid,
                "mon_initial_members": MON_ID,
                "mon_host": mon_addresses(settings),
                "public_network": f"{host}/32",
                "auth_cluster_required": "cephx",
                "auth_service_required": "cephx",
                "auth_client_required": "cephx",
                "auth_allow_insecure_global_id_reclaim": "false",
                "keyring": str(paths.root / "ceph.$name.keyring"),
                "run_dir": str(paths.run_dir),
                "admin_socket": str(paths.run_dir / "$cluster-$name.$pid.asok"),
                "log_to_file": "false",
                "log_to_stderr": "true",
                "err_to_stderr": "true",
                "osd_pool_default_size": "1",
                "osd_pool_default_min_size": "1",
                "osd_pool_default_pg_num": "8",
                "osd_pool_default_pg_autoscale_mode": "off",
                "mon_allow_pool_size_one": "true",
                "mon_warn_on_pool_no_redundancy": "false",
                "osd_crush_chooseleaf_type": "0",
                "ms_bind_ipv6": "false",
            },
            "mon": {
                "mon_data": str(paths.root / "mon" / "$cluster-$id"),
                "keyring": str(paths.root / "mon" / "$cluster-$id" / "keyring"),
                "mon_allow_pool_delete": "true",
                "mon_data_avail_warn": "2",
                "mon_data_avail_crit": "1",
            },
            "mgr": {
                "mgr_data": str(paths.root / "mgr" / "$cluster-$id"),
                "keyring": str(paths.root / "mgr" / "$cluster-$id" / "keyring"),
            },
            "osd": {
                "osd_data": str(paths.root / "osd" / "$cluster-$id"),
                "keyring": str(paths.root / "osd" / "$cluster-$id" / "keyring"),
                "osd_objectstore": "bluestore",
                # Beside the data directory: BlueStore links `<data>/block` to it.
                "bluestore_block_path": str(paths.root / "osd" / "$cluster-$id.block"),
                "bluestore_block_create": "true",
                "bluestore_block_size": str(OSD_BLOCK_BYTES),
                "osd_memory_target": str(OSD_MEMORY_TARGET),
                "osd_max_object_name_len": "460",
                "osd_max_object_namespace_len": "64",
            },
        }
    )


class CephDevbox:
    """Builds and starts the devbox's Ceph cluster, idempotently."""

    def __init__(self, settings: DevboxSettings, markers: Markers) -> None:
        self.settings = settings
        self.paths = CephPaths(settings.state_dir / "ceph")
        self.markers = markers

    # ---- the ceph CLI -------------------------------------------------------------------
    def ceph(self, *args: str, timeout: float = CEPH_TIMEOUT) -> str:
        """`ceph <args>` as client.admin; stdout. Raises StepError on failure."""
        return run(
            ["ceph", "-c", str(self.paths.conf), "--connect-timeout", "20", *args],
            timeout=timeout,
        ).stdout

    def _up(self, kind: str) -> bool:
        """Whether the cluster map lists a running `kind` ("mgr": an active manager,
        "osd": an OSD up), from `ceph <kind> stat --format json`."""
        try:
            out = run(
                ["ceph", "-c", str(self.paths.conf), "--connect-timeout", "5", kind, "stat",
                 "--format", "json"],
                timeout=15,
                check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False
        if out.returncode != 0:
            return False
        stat = json.loads(out.stdout)
        if kind == "osd":
            return int(stat.get("num_up_osds", 0)) > 0
        return bool(stat.get("available"))

    # ---- files and keys -----------------------------------------------------------------
    def fsid(self) -> str:
        if not self.paths.fsid_file.exists():
            write_atomic(self.paths.fsid_file, str(uuid.uuid4()) + "\n")
        return self.paths.fsid_file.read_text().strip()

    def _write_conf(self) -> None:
        for directory in (self.paths.run_dir, self.paths.mon_data.parent):
            directory.mkdir(parents=True, exist_ok=True)
        write_atomic(self.paths.conf, ceph_conf(self.settings, self.paths, self.fsid()), 0o644)

    def _authtool(self, keyring: Path, *args: str) -> None:
        run(["ceph-authtool", str(keyring), *args])
        keyring.chmod(0o600)

    def _mon_prepare(self) -> None:
        self._write_conf()
        if (self.paths.mon_data / "done").exists():
            return
        p = self.paths
        mon_keyring = p.root / "mon.bootstrap.keyring"
        admin = p.keyring("client.admin")
        if not admin.exists():
            self._authtool(admin, "--create-keyring", "--gen-key", "-n", "client.admin",
                           "--cap", "mon", "allow *", "--cap", "osd", "allow *",
                           "--cap", "mds", "allow *", "--cap", "mgr", "allow *")  # fmt: skip
        mon_keyring.unlink(missing_ok=True)
        self._authtool(mon_keyring, "--create-keyring", "--gen-key", "-n", "mon.",
                       "--cap", "mon", "allow *")  # fmt: skip
        self._authtool(mon_keyring, "--import-keyring", str(admin))
        monmap = p.root / "monmap"
        run(["monmaptool", "--create", "--clobber", "--fsid", self.fsid(), "--addv", MON_ID,
             mon_addresses(self.settings), str(monmap)])  # fmt: skip
        p.mon_data.mkdir(parents=True, exist_ok=True)
        run(["ceph-mon", "-c", str(p.conf), "--mkfs", "-i", MON_ID, "--monmap", str(monmap),
             "--keyring", str(mon_keyring)])  # fmt: skip
        (p.mon_data / "done").write_text("")
        mon_keyring.unlink()
        monmap.unlink()

    def _mgr_prepare(self) -> None:
        keyring = self.paths.mgr_data / "keyring"
        if keyring.exists():
            return
        self.paths.mgr_data.mkdir(parents=True, exist_ok=True)
        self.ceph("auth", "get-or-create", f"mgr.{MGR_ID}", "mon", "allow profile mgr",
                  "osd", "allow *", "mds", "allow *", "-o", str(keyring))  # fmt: skip
        keyring.chmod(0o600)

    def _osd_prepare(self) -> None:
        data = self.paths.osd_data
        if (data / "ready").exists():
            return
        data.mkdir(parents=True, exist_ok=True)
        osd_uuid_file = data.parent / "osd-uuid"
        if not osd_uuid_file.exists():
            write_atomic(osd_uuid_file, str(uuid.uuid4()) + "\n")
        osd_uuid = osd_uuid_file.read_text().strip()
        made = self.ceph("osd", "new", osd_uuid).strip()
        if made != str(OSD_ID):
            raise StepError(f"ceph osd new gave id {made}, expected {OSD_ID}: purge the devbox")
        keyring = data / "keyring"
        self.ceph("auth", "get-or-create", f"osd.{OSD_ID}", "mon", "allow profile osd",
                  "mgr", "allow profile osd", "osd", "allow *", "-o", str(keyring))  # fmt: skip
        keyring.chmod(0o600)
        run(["ceph-osd", "-c", str(self.paths.conf), "-i", str(OSD_ID), "--mkfs",
             "--osd-uuid", osd_uuid], timeout=300)  # fmt: skip

    def _osd_after_start(self) -> None:
        def pools() -> None:
            existing = set(self.ceph("osd", "pool", "ls").split())
            if VOLUMES_POOL not in existing:
                self.ceph("osd", "pool", "create", VOLUMES_POOL, "8", "8")
                self.ceph("osd", "pool", "set", VOLUMES_POOL, "size", "1", "--yes-i-really-mean-it")
                self.ceph("osd", "pool", "application", "enable", VOLUMES_POOL, "rbd")
                run(["rbd", "-c", str(self.paths.conf), "pool", "init", VOLUMES_POOL], timeout=120)
            keyring = self.paths.keyring(CINDER_CLIENT)
            self.ceph("auth", "get-or-create", CINDER_CLIENT, "mon", "profile rbd",
                      "osd", f"profile rbd pool={VOLUMES_POOL}",
                      "mgr", f"profile rbd pool={VOLUMES_POOL}", "-o", str(keyring))  # fmt: skip
            keyring.chmod(0o600)
            (self.paths.osd_data / "ready").write_text("")

        self.markers.once("ceph-pools", fingerprint(self.fsid(), VOLUMES_POOL), pools)

    def cinder_keyring(self) -> Path:
        return self.paths.keyring(CINDER_CLIENT)

    def cinder_key(self) -> str:
        """The bare cephx key of client.cinder (the `keyring` of stackube-credentials).
        Raises StepError when its keyring has none."""
        return keyring_key(self.cinder_keyring().read_text())

    # ---- the services --------------------------------------------------------------------
    def _daemon(self, program: str, ident: str) -> ProcessSpec:
        return ProcessSpec(
            program,
            [program, "-f", "-c", str(self.paths.conf), "-i", ident],
            inputs=(self.paths.conf,),
        )

    def services(self) -> list[Service]:
        return [
            Service(
                name="ceph-mon",
                process=lambda: self._daemon("ceph-mon", MON_ID),
                probe=health.tcp_open(self.settings.host, self.settings.ports.ceph_mon),
                start_timeout=60,
                prepare=self._mon_prepare,
            ),
            Service(
                name="ceph-mgr",
                process=lambda: self._daemon("ceph-mgr", MGR_ID),
                probe=lambda: self._up("mgr"),
                start_timeout=90,
                prepare=self._mgr_prepare,
            ),
            Service(
                name="ceph-osd",
                process=lambda: self._daemon("ceph-osd", str(OSD_ID)),
                probe=lambda: self._up("osd"),
                start_timeout=120,
                prepare=self._osd_prepare,
                after_start=self._osd_after_start,
            ),
        ]


def keyring_key(text: str) -> str:
    """The `key = ...` of a one-entity Ceph keyring (pure). Raises StepError without one."""
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == "key" and value.strip():
            return value.strip()
    raise StepError("the Ceph keyring holds no key")
