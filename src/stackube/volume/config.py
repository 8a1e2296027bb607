"""The node's `/etc/kubernetes/cinder.conf`, in the seed's format (pure parsing).

The seed's keys (docs, volume.rst)::

    [Global]
    auth-url = ...
    username = ...
    password = ...
    tenant-name = ...
    region = ...
    [RBD]
    keyring = ...

plus, as cloud-provider-openstack's cloud.conf spells them, `user-domain-name`,
`tenant-domain-name` (or `project-domain-name`, or `domain-name` for both) and
`ca-file`; `keyring` is a Ceph keyring file's path or the bare cephx key. Stackube's
own section says where the node keeps its records and how it reads namespaces::

    [Stackube]
    kubeconfig = /etc/stackube/volume.kubeconfig
    node-name = <this node's Kubernetes name>
    state-dir = /var/lib/stackube/volumes

The file holds a password and a Ceph key: only root may read it (checked).
"""

from __future__ import annotations

import configparser
import socket
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stackube.config import ConfigError, parse_config
from stackube.errors import StackubeError

DEFAULT_PATH = Path("/etc/kubernetes/cinder.conf")
DEFAULT_STATE_DIR = Path("/var/lib/stackube/volumes")
DEFAULT_KUBECONFIG = Path("/etc/stackube/volume.kubeconfig")
CEPH_CLIENT = "cinder"


class VolumeConfigError(StackubeError, ValueError):
    """cinder.conf cannot be used; the message names the section and key."""


@dataclass(frozen=True)
class VolumeConfig:
    auth_url: str
    username: str
    password: str = field(repr=False)
    project_name: str
    region: str = "RegionOne"
    user_domain: str = "Default"
    project_domain: str = "Default"
    ca_file: str | None = None
    keyring: str = field(default="", repr=False)
    kubeconfig: Path | None = DEFAULT_KUBECONFIG  # None: the pod's service account
    node_name: str = ""
    state_dir: Path = DEFAULT_STATE_DIR


def parse(text: str, hostname: str | None = None) -> VolumeConfig:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise VolumeConfigError(f"cinder.conf is not an INI file: {exc}") from exc
    if not parser.has_section("Global"):
        raise VolumeConfigError("cinder.conf has no [Global] section")
    g = parser["Global"]

    def required(key: str) -> str:
        value = (g.get(key) or "").strip()
        if not value:
            raise VolumeConfigError(f"cinder.conf: [Global] {key} is required")
        return value

    domain = (g.get("domain-name") or "").strip()
    project_domain = g.get("tenant-domain-name") or g.get("project-domain-name") or domain
    rbd = parser["RBD"] if parser.has_section("RBD") else {}
    own = parser["Stackube"] if parser.has_section("Stackube") else {}
    return VolumeConfig(
        auth_url=required("auth-url"),
        username=required("username"),
        password=required("password"),
        project_name=(g.get("tenant-name") or g.get("project-name") or "").strip()
        or required("tenant-name"),
        region=(g.get("region") or "RegionOne").strip(),
        user_domain=(g.get("user-domain-name") or domain or "Default").strip(),
        project_domain=(project_domain or "Default").strip(),
        ca_file=(g.get("ca-file") or "").strip() or None,
        keyring=(rbd.get("keyring") or "").strip(),
        kubeconfig=Path(own.get("kubeconfig") or DEFAULT_KUBECONFIG),
        node_name=(own.get("node-name") or hostname or socket.gethostname()).strip(),
        state_dir=Path(own.get("state-dir") or DEFAULT_STATE_DIR),
    )


def from_seed(
    data: Mapping[str, str], secret: Mapping[str, str], node_name: str, state_dir: Path
) -> VolumeConfig:
    """The configuration of a driver in a pod: the seed's `stackube-config` keys and the
    `stackube-credentials` Secret (`password`, `keyring`) every component reads
    (stackube.config.parse_config validates them), the node's name (a node plugin's),
    the node's state directory; Kubernetes through the pod's service account. Raises
    VolumeConfigError naming the key."""
    try:
        seed = parse_config(data, secret)
    except ConfigError as exc:
        raise VolumeConfigError(str(exc)) from exc
    return VolumeConfig(
        auth_url=seed.auth_url,
        username=seed.username,
        password=seed.password,
        project_name=seed.tenant_name,
        region=seed.region,
        user_domain=seed.user_domain_name,
        project_domain=seed.project_domain_name,
        keyring=seed.keyring or "",
        kubeconfig=None,
        node_name=node_name.strip(),
        state_dir=state_dir,
    )


def load(path: Path = DEFAULT_PATH) -> VolumeConfig:
    """Read and parse cinder.conf, refusing a file others may read."""
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise VolumeConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VolumeConfigError(
            f"{path} holds credentials but others may read it (mode"
            f" {stat.S_IMODE(info.st_mode):o}): chmod 600 it"
        )
    return parse(text)


def keyring_text(config: VolumeConfig, client: str = CEPH_CLIENT) -> str:
    """A Ceph keyring for `client.<client>`: the configured file's text, or one made from
    a bare key. Raises VolumeConfigError when none is configured or readable."""
    value = config.keyring
    if not value:
        raise VolumeConfigError("cinder.conf: [RBD] keyring is required (a path or a cephx key)")
    if value.startswith("/"):
        try:
            return Path(value).read_text()
        except OSError as exc:
            raise VolumeConfigError(f"cannot read the keyring {value}: {exc.strerror}") from exc
    return f"[client.{client}]\n\tkey = {value}\n"
