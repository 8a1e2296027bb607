"""Configuration files of the devbox's OpenStack services, rendered as text (pure).

Debian 12 ships OpenStack Zed. The gotchas found on these machines are handled here:
Zed's neutron-server refuses Linux bridge without `[experimental] linuxbridge`,
uwsgi's http-socket needs `Connection: close`, and the agents run as root through
`env PATH=...` instead of sudo/rootwrap, so that our ebtables wrapper comes first.
"""

from __future__ import annotations

import configparser
import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stackube.devbox.settings import DevboxSettings

Sections = Mapping[str, Mapping[str, str]]


def render_ini(sections: Sections) -> str:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep option case
    for section, options in sections.items():
        if section != "DEFAULT":
            parser.add_section(section)
        for key, value in options.items():
            parser.set(section, key, value)
    out = io.StringIO()
    parser.write(out)
    return out.getvalue()


@dataclass(frozen=True)
class Secrets:
    """Generated once per devbox and kept 0600 in the state directory."""

    mariadb_keystone: str
    mariadb_neutron: str
    rabbitmq: str
    keystone_admin: str
    neutron_service: str
    stackube_service: str
    mariadb_cinder: str
    cinder_service: str


@dataclass(frozen=True)
class OpenStackPaths:
    root: Path

    @property
    def keystone_conf(self) -> Path:
        return self.root / "keystone" / "keystone.conf"

    @property
    def keystone_uwsgi(self) -> Path:
        return self.root / "keystone" / "uwsgi.ini"

    @property
    def neutron_conf(self) -> Path:
        return self.root / "neutron" / "neutron.conf"

    @property
    def ml2_conf(self) -> Path:
        return self.root / "neutron" / "ml2_conf.ini"

    @property
    def linuxbridge_conf(self) -> Path:
        return self.root / "neutron" / "linuxbridge_agent.ini"

    @property
    def openvswitch_conf(self) -> Path:
        return self.root / "neutron" / "openvswitch_agent.ini"

    @property
    def l3_conf(self) -> Path:
        return self.root / "neutron" / "l3_agent.ini"

    @property
    def dhcp_conf(self) -> Path:
        return self.root / "neutron" / "dhcp_agent.ini"

    @property
    def neutron_state(self) -> Path:
        return self.root / "neutron" / "state"

    @property
    def bin_dir(self) -> Path:
        """Our executables that the agents find first on PATH (the ebtables wrapper)."""
        return self.root / "bin"


def db_url(user: str, password: str, settings: DevboxSettings, database: str) -> str:
    return (
        f"mysql+pymysql://{user}:{password}@{settings.host}:{settings.ports.mariadb}"
        f"/{database}?charset=utf8"
    )


def databases_sql(settings: DevboxSettings, secrets: Secrets) -> str:
    """The databases and users of Keystone and Neutron; safe to run again (it also
    resets the passwords to ours)."""
    statements = []
    for database, password in (
        ("keystone", secrets.mariadb_keystone),
        ("neutron", secrets.mariadb_neutron),
        ("cinder", secrets.mariadb_cinder),
    ):
        user = f"'{database}'@'{settings.host}'"
        statements += [
            f"CREATE DATABASE IF NOT EXISTS {database};",
            f"CREATE USER IF NOT EXISTS {user} IDENTIFIED BY '{password}';",
            f"ALTER USER {user} IDENTIFIED BY '{password}';",
            f"GRANT ALL PRIVILEGES ON {database}.* TO {user};",
        ]
    return "\n".join(statements)


def keystone_conf(settings: DevboxSettings, paths: OpenStackPaths, secrets: Secrets) -> str:
    keystone_dir = paths.keystone_conf.parent
    return render_ini(
        {
            "DEFAULT": {"use_stderr": "true"},
            "database": {
                "connection": db_url("keystone", secrets.mariadb_keystone, settings, "keystone")
            },
            "token": {"provider": "fernet", "expiration": "3600"},
            "fernet_tokens": {"key_repository": str(keystone_dir / "fernet-keys")},
            "credential": {"key_repository": str(keystone_dir / "credential-keys")},
        }
    )


def keystone_uwsgi_ini(settings: DevboxSettings, paths: OpenStackPaths) -> str:
    return render_ini(
        {
            "uwsgi": {
                "plugins": "python3",
                "http-socket": f"{settings.host}:{settings.ports.keystone}",
                "wsgi-file": "/usr/bin/keystone-wsgi-public",
                "master": "true",
                "processes": "2",
                "threads": "4",
                "lazy-apps": "true",
                "die-on-term": "true",
                "buffer-size": "65535",
                # Without it, clients reusing keep-alive connections get resets.
                "add-header": "Connection: close",
                "env": f"OS_KEYSTONE_CONFIG_FILES={paths.keystone_conf}",
            }
        }
    )


def authtoken(
    settings: DevboxSettings, username: str = "neutron", password: str | None = None
) -> dict[str, str]:
    base = f"http://{settings.host}:{settings.ports.keystone}"
    return {
        "www_authenticate_uri": base,
        "auth_url": base,
        "auth_type": "password",
        "project_domain_name": "Default",
        "user_domain_name": "Default",
        "project_name": "service",
        "username": username,
        "password": password or "",
        "region_name": settings.region,
    }


def agent_path(paths: OpenStackPaths) -> str:
    """The agents' PATH: our wrappers first."""
    return f"{paths.bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def agent_root_helper(paths: OpenStackPaths) -> str:
    """We run as root already: no sudo or rootwrap, only our PATH with our wrappers first."""
    return f"env PATH={agent_path(paths)}"


def neutron_conf(settings: DevboxSettings, paths: OpenStackPaths, secrets: Secrets) -> str:
    return render_ini(
        {
            "DEFAULT": {
                "core_plugin": "ml2",
                "service_plugins": "router",
                "auth_strategy": "keystone",
                "bind_host": settings.host,
                "bind_port": str(settings.ports.neutron),
                "api_workers": str(settings.neutron_api_workers),
                "rpc_workers": "1",
                "rpc_state_report_workers": "1",
                "state_path": str(paths.neutron_state),
                "transport_url": (
                    f"rabbit://stackube:{secrets.rabbitmq}@{settings.host}:{settings.ports.rabbitmq}/"
                ),
                "notify_nova_on_port_status_changes": "false",
                "notify_nova_on_port_data_changes": "false",
                "interface_driver": settings.neutron_backend,
                "use_stderr": "true",
                "debug": "false",
            },
            "database": {
                "connection": db_url("neutron", secrets.mariadb_neutron, settings, "neutron")
            },
            "keystone_authtoken": authtoken(settings, "neutron", secrets.neutron_service),
            "oslo_concurrency": {"lock_path": str(paths.neutron_state / "lock")},
            "agent": {"root_helper": agent_root_helper(paths), "report_interval": "10"},
            # Zed's neutron-server exits without this when Linux bridge is configured.
            **({} if settings.openvswitch else {"experimental": {"linuxbridge": "true"}}),
        }
    )


def ml2_conf(settings: DevboxSettings) -> str:
    return render_ini(
        {
            "ml2": {
                "type_drivers": "flat,vxlan",
                "tenant_network_types": "vxlan",
                "mechanism_drivers": f"{settings.neutron_backend},l2population",
                "extension_drivers": "port_security",
            },
            "ml2_type_flat": {"flat_networks": settings.external_physnet},
            "ml2_type_vxlan": {"vni_ranges": "1:4000"},
            "securitygroup": {"enable_ipset": "true"},
        }
    )


def linuxbridge_agent_conf(settings: DevboxSettings) -> str:
    return render_ini(
        {
            "linux_bridge": {
                "physical_interface_mappings": (
                    f"{settings.external_physnet}:{settings.external_agent_veth}"
                )
            },
            "vxlan": {"enable_vxlan": "true", "local_ip": "127.0.0.1", "l2_population": "true"},
            "securitygroup": {"enable_security_group": "true", "firewall_driver": "iptables"},
            "agent": {"polling_interval": "1"},
        }
    )


def openvswitch_agent_conf(settings: DevboxSettings) -> str:
    """ML2/OVS on the userspace (netdev) datapath: there is no openvswitch kernel module."""
    return render_ini(
        {
            "ovs": {
                "integration_bridge": "br-int",
                "tunnel_bridge": "br-tun",
                "datapath_type": "netdev",
                "local_ip": "127.0.0.1",
                "bridge_mappings": f"{settings.external_physnet}:br-ex",
            },
            "agent": {"tunnel_types": "vxlan", "l2_population": "true", "polling_interval": "2"},
            "securitygroup": {"enable_security_group": "true", "firewall_driver": "openvswitch"},
        }
    )


def _l3_dhcp_interface(settings: DevboxSettings) -> tuple[dict[str, str], Sections]:
    """With OVS, routers' and DHCP's ports are veths (a vswitchd restart would leave
    internal ports dead for good) on the netdev datapath."""
    if not settings.openvswitch:
        return {"interface_driver": "linuxbridge"}, {}
    return (
        {"interface_driver": "openvswitch", "ovs_use_veth": "true"},
        {"ovs": {"datapath_type": "netdev", "integration_bridge": "br-int"}},
    )


def l3_agent_conf(settings: DevboxSettings) -> str:
    interface, extra = _l3_dhcp_interface(settings)
    return render_ini({"DEFAULT": {**interface, "enable_metadata_proxy": "false"}, **extra})


def dhcp_agent_conf(settings: DevboxSettings) -> str:
    interface, extra = _l3_dhcp_interface(settings)
    return render_ini(
        {
            "DEFAULT": {
                **interface,
                "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
                "enable_isolated_metadata": "false",
                "force_metadata": "false",
            },
            **extra,
        }
    )


def clouds_yaml(settings: DevboxSettings, secrets: Secrets) -> dict[str, object]:
    """clouds.yaml with `devbox-admin` (cloud admin) and `devbox-stackube` (our service user)."""

    def cloud(user: str, password: str, project: str) -> dict[str, object]:
        return {
            "auth": {
                "auth_url": settings.keystone_url,
                "username": user,
                "password": password,
                "project_name": project,
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": settings.region,
            "interface": "public",
            "identity_api_version": 3,
        }

    return {
        "clouds": {
            "devbox-admin": cloud("admin", secrets.keystone_admin, "admin"),
            "devbox-stackube": cloud("stackube", secrets.stackube_service, "service"),
        }
    }


def openrc(settings: DevboxSettings, secrets: Secrets) -> str:
    return "".join(
        f"export {key}={value}\n"
        for key, value in {
            "OS_AUTH_URL": settings.keystone_url,
            "OS_USERNAME": "admin",
            "OS_PASSWORD": secrets.keystone_admin,
            "OS_PROJECT_NAME": "admin",
            "OS_USER_DOMAIN_NAME": "Default",
            "OS_PROJECT_DOMAIN_NAME": "Default",
            "OS_REGION_NAME": settings.region,
            "OS_IDENTITY_API_VERSION": "3",
        }.items()
    )
