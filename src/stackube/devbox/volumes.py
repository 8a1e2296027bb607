"""The devbox node's FlexVolume driver: the seed's /etc/kubernetes/cinder.conf (0600) and
`cinder~flexvolume_driver` in kubelet's plugin directory, installed as an operator would
(`stackube flexvolume-install`), and removed by `down --purge` when they are this
devbox's."""

from __future__ import annotations

import sys
from pathlib import Path

from stackube.devbox.commands import run
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.openstack_config import Secrets, render_ini
from stackube.devbox.settings import DevboxSettings

DRIVER_RELATIVE = Path("cinder~flexvolume_driver") / "flexvolume_driver"
KEYSTONE_PROJECT = "service"


def state_dir(settings: DevboxSettings) -> Path:
    """Where the driver keeps its records, locks, rbd-fuse mounts and log."""
    return settings.node_dir / "volumes"


def cinder_conf(settings: DevboxSettings, secrets: Secrets, keyring: Path) -> str:
    """The seed's cinder.conf for this node (pure): Stackube's service account (a Cinder
    admin: it attaches any tenant's volume, after checking the pod's tenant owns it),
    the Ceph key Cinder's RBD driver uses, and the CNI daemon's Kubernetes identity
    (it may read namespaces)."""
    return render_ini(
        {
            "Global": {
                "auth-url": settings.keystone_url,
                "username": "stackube",
                "password": secrets.stackube_service,
                "tenant-name": KEYSTONE_PROJECT,
                "domain-name": "Default",
                "region": settings.region,
            },
            "RBD": {"keyring": str(keyring)},
            "Stackube": {
                "kubeconfig": str(settings.kube_dir / "stackube-cni.kubeconfig"),
                "node-name": settings.node_name,
                "state-dir": str(state_dir(settings)),
            },
        }
    )


def install(settings: DevboxSettings, secrets: Secrets, keyring: Path) -> None:
    write_atomic(settings.cinder_conf, cinder_conf(settings, secrets, keyring), 0o600)
    run([sys.executable, "-m", "stackube", "flexvolume-install",
         f"--plugin-dir={settings.volume_plugin_dir}"])  # fmt: skip


def ours(settings: DevboxSettings) -> bool:
    """Whether the node's cinder.conf is this devbox's (it names our state directory)."""
    try:
        return str(state_dir(settings)) in settings.cinder_conf.read_text()
    except OSError:
        return False


def uninstall(settings: DevboxSettings) -> list[str]:
    """Remove this devbox's cinder.conf and the driver; returns what was removed."""
    removed = []
    if ours(settings):
        settings.cinder_conf.unlink()
        removed.append(str(settings.cinder_conf))
        driver = settings.volume_plugin_dir / DRIVER_RELATIVE
        if driver.exists():
            driver.unlink()
            removed.append(str(driver))
    return removed
