"""The controller's configuration: the seed's `stackube-config` keys (pure parsing).

A ConfigMap (and, preferred for secrets, a Secret) mounted as directories of files,
one per key, is the deployed form; the Secret's keys win over the ConfigMap's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stackube.api.types import SpecError, check_cidr_and_gateway, overlapping
from stackube.errors import StackubeError

SEED_KEYS = frozenset(
    {
        "auth-url",
        "username",
        "password",
        "tenant-name",
        "region",
        "ext-net-id",
        "plugin-name",
        "integration-bridge",
        "user-cidr",
        "user-gateway",
        "kubernetes-host",
        "kubernetes-port",
        "keyring",
    }
)
EXTRA_KEYS = frozenset(
    {
        "user-domain-name",
        "project-domain-name",
        "tenant-domain-name",
        "cacert",
        "dns-image",
        "cluster-domain",
        "role-mapping",
        "tenant-cidr",
        "tenant-gateway",
        "system-project",
    }
)
# The tenant DNS servers' image: CoreDNS as its project publishes it.
DEFAULT_DNS_IMAGE = "coredns/coredns:1.14.7"
SECRET_KEYS = frozenset({"password", "keyring"})
REQUIRED_KEYS = ("auth-url", "username", "password", "tenant-name")
# The only ClusterRoles a tenant's Keystone roles may be mapped to: Kubernetes' built-in
# user-facing roles, bound in the tenant's namespace only. Anything else (cluster-admin,
# a custom role) could reach beyond the namespace or grant more than the controller
# itself holds.
BINDABLE_CLUSTER_ROLES = ("view", "edit", "admin")
DEFAULT_ROLE_MAPPING: tuple[tuple[str, str], ...] = (
    ("reader", "view"),
    ("member", "edit"),
    ("admin", "admin"),
)


class ConfigError(StackubeError, ValueError):
    """The configuration cannot be used; the message names the key."""


@dataclass(frozen=True)
class ControllerConfig:
    auth_url: str
    username: str
    password: str = field(repr=False)
    tenant_name: str
    region: str = "RegionOne"
    ext_net_id: str | None = None
    plugin_name: str = "linuxbridge"
    integration_bridge: str = "br-int"
    # The system network (namespaces no Tenant owns; the seed's keys).
    user_cidr: str = "10.244.0.0/16"
    user_gateway: str = "10.244.0.1"
    # A Tenant's default Network: never inside user-cidr, which the nodes route to the
    # system network (docs/decisions/0010).
    tenant_cidr: str = "10.245.0.0/16"
    tenant_gateway: str = "10.245.0.1"
    # The Keystone project (in project-domain-name) that owns the system network.
    system_project: str = "stackube-system"
    kubernetes_host: str | None = None
    kubernetes_port: int = 6443
    keyring: str | None = field(default=None, repr=False)
    user_domain_name: str = "Default"
    project_domain_name: str = "Default"
    tenant_domain_name: str = "stackube"
    dns_image: str = DEFAULT_DNS_IMAGE
    cluster_domain: str = "cluster.local"
    # (Keystone role, ClusterRole) pairs, in the configured order.
    role_mapping: tuple[tuple[str, str], ...] = DEFAULT_ROLE_MAPPING
    warnings: tuple[str, ...] = ()

    @property
    def pod_apiserver_url(self) -> str | None:
        """Where pods reach the API server when `kubernetes-host` says so (the seed's
        key); None: through the `kubernetes` Service, as in-cluster clients do."""
        if not self.kubernetes_host:
            return None
        return f"https://{self.kubernetes_host}:{self.kubernetes_port}"


def _keystone_v3(url: str) -> tuple[str, list[str]]:
    """The seed's configs point at Keystone v2.0, which is long gone: use v3."""
    stripped = url.rstrip("/")
    if stripped.endswith("/v2.0"):
        return stripped[: -len("/v2.0")] + "/v3", [f"auth-url {url} is Keystone v2.0; using v3"]
    if not stripped.endswith("/v3"):
        return stripped + "/v3", []
    return stripped, []


def parse_role_mapping(text: str) -> tuple[tuple[str, str], ...]:
    """`reader=view,member=edit,admin=admin` -> (("reader", "view"), ...), in order.

    Keys are Keystone role names, values one of BINDABLE_CLUSTER_ROLES; blanks around
    names are ignored. Raises ConfigError naming `role-mapping` and the bad entry for an
    empty text or entry, an entry without one `=`, an empty name, a ClusterRole that may
    not be bound, or a Keystone role mapped twice.
    """
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in text.split(","):
        parts = [p.strip() for p in entry.split("=")]
        if len(parts) != 2 or not all(parts):
            raise ConfigError(
                f"role-mapping: entry {entry.strip()!r} is not <keystone role>=<cluster role>"
            )
        role, cluster_role = parts
        if cluster_role not in BINDABLE_CLUSTER_ROLES:
            raise ConfigError(
                f"role-mapping: entry {entry.strip()!r} maps to ClusterRole {cluster_role!r}; "
                f"only {', '.join(BINDABLE_CLUSTER_ROLES)} may be bound"
            )
        if role in seen:
            raise ConfigError(f"role-mapping: Keystone role {role!r} is mapped more than once")
        seen.add(role)
        pairs.append((role, cluster_role))
    return tuple(pairs)


def _range(merged: Mapping[str, str], prefix: str, cidr: str, gateway: str) -> tuple[str, str]:
    """`<prefix>-cidr`/`<prefix>-gateway` (defaults `cidr`/`gateway`), checked."""
    found = merged.get(f"{prefix}-cidr", cidr), merged.get(f"{prefix}-gateway", gateway)
    try:
        check_cidr_and_gateway(*found)
    except SpecError as exc:
        raise ConfigError(f"{prefix}-cidr/{prefix}-gateway: {exc}") from exc
    return found


def parse_config(
    data: Mapping[str, str], secret: Mapping[str, str] | None = None
) -> ControllerConfig:
    secret = secret or {}
    unknown = sorted((set(data) | set(secret)) - SEED_KEYS - EXTRA_KEYS)
    if unknown:
        raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
    warnings = []
    in_configmap = sorted(SECRET_KEYS & set(data) - set(secret))
    if in_configmap:
        warnings.append(
            f"{', '.join(in_configmap)} found in the ConfigMap: put secrets in a Secret"
        )
    merged = {k: v.strip() for k, v in {**data, **secret}.items()}
    missing = [k for k in REQUIRED_KEYS if not merged.get(k)]
    if missing:
        raise ConfigError(f"missing configuration keys: {', '.join(missing)}")
    auth_url, notes = _keystone_v3(merged["auth-url"])
    warnings += notes
    cidr, gateway = _range(
        merged, "user", ControllerConfig.user_cidr, ControllerConfig.user_gateway
    )
    tenant_cidr, tenant_gateway = _range(
        merged, "tenant", ControllerConfig.tenant_cidr, ControllerConfig.tenant_gateway
    )
    if overlapping(tenant_cidr, cidr):
        raise ConfigError(
            f"tenant-cidr {tenant_cidr} overlaps user-cidr {cidr} (the system network, which "
            "the nodes route to): choose ranges that do not overlap"
        )
    # Absent: the default. Present but empty is a mistake, not "grant nothing" or "default".
    role_mapping = (
        parse_role_mapping(merged["role-mapping"])
        if "role-mapping" in merged
        else DEFAULT_ROLE_MAPPING
    )
    port_text = merged.get("kubernetes-port", "6443")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ConfigError(f"kubernetes-port {port_text!r} is not a TCP port")
    return ControllerConfig(
        auth_url=auth_url,
        username=merged["username"],
        password=merged["password"],
        tenant_name=merged["tenant-name"],
        region=merged.get("region") or "RegionOne",
        ext_net_id=merged.get("ext-net-id") or None,
        plugin_name=merged.get("plugin-name") or "linuxbridge",
        integration_bridge=merged.get("integration-bridge") or "br-int",
        user_cidr=cidr,
        user_gateway=gateway,
        tenant_cidr=tenant_cidr,
        tenant_gateway=tenant_gateway,
        system_project=merged.get("system-project") or "stackube-system",
        kubernetes_host=merged.get("kubernetes-host") or None,
        kubernetes_port=int(port_text),
        keyring=merged.get("keyring") or None,
        user_domain_name=merged.get("user-domain-name") or "Default",
        project_domain_name=merged.get("project-domain-name") or "Default",
        tenant_domain_name=merged.get("tenant-domain-name") or "stackube",
        dns_image=merged.get("dns-image") or DEFAULT_DNS_IMAGE,
        cluster_domain=merged.get("cluster-domain") or "cluster.local",
        role_mapping=role_mapping,
        warnings=tuple(warnings),
    )


def read_key_files(directory: Path | None) -> dict[str, str]:
    """A mounted ConfigMap/Secret: one file per key (dot-files are the kubelet's).
    Raises ConfigError naming the directory when it cannot be read."""
    if directory is None:
        return {}
    try:
        return {
            p.name: p.read_text()
            for p in sorted(directory.iterdir())
            if p.is_file() and not p.name.startswith(".")
        }
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration directory {directory}: {exc.strerror or exc}"
        ) from exc
