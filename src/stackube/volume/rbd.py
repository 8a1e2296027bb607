"""What Cinder's RBD driver says about reaching a volume, and the client files made from
it (pure).

Cinder's attachment carries `connection_info = {"driver_volume_type": "rbd", "data":
{"name": "<pool>/<image>", "hosts": [...], "ports": [...], "auth_enabled": bool,
"auth_username": "<ceph user>", ...}}` (cinder/volume/drivers/rbd.py,
initialize_connection); the node adds its own cephx key from cinder.conf.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stackube.errors import StackubeError

# Pool and image names as Cinder's RBD driver makes them; never a path or an option.
RBD_NAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$")


class ConnectionInfoError(StackubeError):
    """Cinder's connection info is not an RBD volume this node can reach."""


@dataclass(frozen=True)
class RbdTarget:
    pool: str
    image: str
    monitors: tuple[str, ...]  # host:port
    user: str
    auth_enabled: bool

    @property
    def name(self) -> str:
        return f"{self.pool}/{self.image}"


def _host_port(host: str, port: str) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def rbd_target(connection_info: Mapping[str, Any]) -> RbdTarget:
    kind = connection_info.get("driver_volume_type")
    if kind != "rbd":
        raise ConnectionInfoError(
            f"Cinder gives a {kind or 'missing'} connection: this driver attaches RBD volumes"
        )
    # The attachments API gives it flat; the older os-initialize_connection nests it.
    data = connection_info.get("data") or connection_info
    pool, _, image = str(data.get("name") or "").partition("/")
    if not pool or not image:
        raise ConnectionInfoError(
            f"Cinder's RBD connection names no pool/image: {data.get('name')!r}"
        )
    hosts, ports = list(data.get("hosts") or []), list(data.get("ports") or [])
    if not hosts or len(hosts) != len(ports):
        raise ConnectionInfoError("Cinder's RBD connection lists no Ceph monitors")
    return checked(
        RbdTarget(
            pool=pool,
            image=image,
            monitors=tuple(_host_port(str(h), str(p)) for h, p in zip(hosts, ports, strict=True)),
            user=str(data.get("auth_username") or "cinder"),
            auth_enabled=bool(data.get("auth_enabled", True)),
        )
    )


def checked(target: RbdTarget) -> RbdTarget:
    """The target, if its pool, image and user are plain RBD names (they become a file
    name and command arguments on the node)."""
    for what, value in (("pool", target.pool), ("image", target.image), ("user", target.user)):
        if not RBD_NAME.match(value) or value in (".", ".."):
            raise ConnectionInfoError(f"RBD {what} {value!r} is not a plain name")
    return target


def client_conf(target: RbdTarget, keyring_path: str) -> str:
    """A ceph.conf for the node's client of this volume."""
    auth = "cephx" if target.auth_enabled else "none"
    return (
        "[global]\n"
        f"mon_host = {','.join(target.monitors)}\n"
        f"keyring = {keyring_path}\n"
        f"auth_client_required = {auth}\n"
        "log_to_stderr = false\n"
        "err_to_stderr = true\n"
    )


def to_json(target: RbdTarget) -> str:
    """The target as CSI's publish context carries it (a string value)."""
    return json.dumps(
        {
            "pool": target.pool,
            "image": target.image,
            "monitors": list(target.monitors),
            "user": target.user,
            "auth": target.auth_enabled,
        },
        sort_keys=True,
    )


def from_json(text: str) -> RbdTarget:
    """Raises ConnectionInfoError when the text is not what to_json wrote."""
    try:
        data = json.loads(text)
        target = RbdTarget(
            pool=str(data["pool"]),
            image=str(data["image"]),
            monitors=tuple(str(m) for m in data["monitors"]),
            user=str(data["user"]),
            auth_enabled=bool(data["auth"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectionInfoError(f"not an RBD connection: {text[:200]!r}") from exc
    return checked(target)
