"""Installing kubestack on a node: the plugin as one self-contained executable (a
zipapp of the standard-library-only client, run by the node's python3) and the CNI
network configuration list, both written atomically so a runtime never sees half a
file."""

from __future__ import annotations

import io
import json
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

PLUGIN_MODULES = ("__init__.py", "plugin.py", "spec.py")
# Isolated (-I) and without site (-S): the plugin needs only the standard library, and
# skipping site-packages saves ~7 ms on every call.
SHEBANG = b"#!/usr/bin/env -S python3 -I -S\n"
CONFLIST_NAME = "10-stackube.conflist"


# CNI 1.1 (spec: "cniVersions"): a runtime that knows 1.1 picks it from this list and
# may then call GC with the valid attachments and STATUS; an older one (containerd 1.6's
# libcni) reads "cniVersion" and ignores the list.
CNI_VERSIONS = ("1.0.0", "1.1.0")


def conflist(socket_path: str, cni_version: str = "1.0.0") -> dict[str, Any]:
    return {
        "cniVersion": cni_version,
        "cniVersions": list(CNI_VERSIONS),
        "name": "stackube",
        # portMappings: the runtime passes pods' hostPorts (served on the system network).
        "plugins": [
            {"type": "kubestack", "socket": socket_path, "capabilities": {"portMappings": True}}
        ],
    }


def plugin_zipapp() -> bytes:
    """`kubestack` as a zipapp: stackube/cni/{plugin,spec}.py and a __main__."""
    package = resources.files("stackube.cni")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("stackube/__init__.py", "")
        for name in PLUGIN_MODULES:
            zf.writestr(f"stackube/cni/{name}", package.joinpath(name).read_text())
        zf.writestr(
            "__main__.py",
            "import sys\nfrom stackube.cni.plugin import main\nsys.exit(main())\n",
        )
    return SHEBANG + buffer.getvalue()


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.chmod(mode)
    tmp.replace(path)


def install(bin_dir: Path, conf_dir: Path, socket_path: str) -> list[Path]:
    plugin, conf = bin_dir / "kubestack", conf_dir / CONFLIST_NAME
    _write(plugin, plugin_zipapp(), 0o755)
    _write(conf, (json.dumps(conflist(socket_path), indent=2) + "\n").encode(), 0o644)
    return [plugin, conf]
