"""Installing the FlexVolume driver on a node: `cinder~flexvolume_driver/flexvolume_driver`
in kubelet's volume plugin directory (the seed's
/usr/libexec/kubernetes/kubelet-plugins/volume/exec/), written atomically (kubelet's
prober watches the directory and runs whatever appears there).
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from stackube.volume.flexvolume import DRIVER_NAME

DEFAULT_PLUGIN_DIR = Path("/usr/libexec/kubernetes/kubelet-plugins/volume/exec")
# kubelet maps the driver name vendor/driver to the directory vendor~driver.
DRIVER_DIR = DRIVER_NAME.replace("/", "~")
DRIVER_FILE = DRIVER_NAME.split("/", 1)[1]
MARK = "# stackube: the seed's cinder/flexvolume_driver"


def driver_path(plugin_dir: Path = DEFAULT_PLUGIN_DIR) -> Path:
    return plugin_dir / DRIVER_DIR / DRIVER_FILE


def driver_script(python: str, config: Path | None) -> str:
    """The executable: this Python running stackube.volume.main (pure)."""
    env = f"STACKUBE_CINDER_CONF={shlex.quote(str(config))} " if config else ""
    return (
        "#!/bin/sh\n"
        f"{MARK} (FlexVolume; docs/volumes.md)\n"
        f'exec env {env}{shlex.quote(python)} -m stackube.volume.main "$@"\n'
    )


def install(
    plugin_dir: Path = DEFAULT_PLUGIN_DIR, python: str = sys.executable, config: Path | None = None
) -> Path:
    """Write the driver (0755, atomically); `config` overrides /etc/kubernetes/cinder.conf."""
    path = driver_path(plugin_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o755)
    with os.fdopen(fd, "w") as f:
        f.write(driver_script(python, config))
    tmp.replace(path)
    return path
