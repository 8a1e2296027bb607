"""The devbox's OpenStack: MariaDB, RabbitMQ, Keystone, Neutron server and its Linux
bridge, DHCP and L3 agents, plus the identities and external network Stackube needs.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pwd
import secrets as pysecrets
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from stackube.devbox import health, openvswitch, podaccess
from stackube.devbox import openstack_config as cfg
from stackube.devbox.ceph import CephDevbox
from stackube.devbox.cinder import CinderDevbox
from stackube.devbox.commands import Markers, StepError, fingerprint, package_version, run
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.process import ProcessSpec, ProcessTable
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.host import netlink, sysctl
from stackube.openstack import cloud, identity, network

log = logging.getLogger(__name__)

RABBIT_NODE = "stackube@localhost"
RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
# Sysctls that Neutron's agents (or we) may change on the host; restored by `down`.
WATCHED_SYSCTLS = (
    "net.ipv4.ip_forward",
    "net.ipv6.conf.all.forwarding",
    "net.bridge.bridge-nf-call-iptables",
    "net.bridge.bridge-nf-call-ip6tables",
    "net.bridge.bridge-nf-call-arptables",
)
STACKUBE_DOMAIN = "stackube"


def load_or_create_secrets(path: Path) -> cfg.Secrets:
    """The devbox's generated passwords; fields added since the file was written (a
    devbox made by an older Stackube) are generated and saved beside the old ones."""
    kept = json.loads(path.read_text()) if path.exists() else {}
    fields = cfg.Secrets.__dataclass_fields__
    values = {name: kept.get(name) or pysecrets.token_urlsafe(18) for name in fields}
    if values != kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".new")
        temporary.unlink(missing_ok=True)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(values, f, indent=2)
        temporary.replace(path)
    return cfg.Secrets(**values)


class OpenStackDevbox:
    """Builds the OpenStack services of the devbox, in dependency order."""

    def __init__(self, settings: DevboxSettings, table: ProcessTable) -> None:
        self.settings = settings
        self.table = table
        self.paths = cfg.OpenStackPaths(settings.openstack_dir)
        self.secrets = load_or_create_secrets(settings.secrets_file)
        self.markers = Markers(settings.state_dir / "markers")
        self._admin: Any = None
        self.ceph = CephDevbox(settings, self.markers)
        self.cinder = CinderDevbox(
            settings,
            secrets=self.secrets,
            markers=self.markers,
            ceph=self.ceph,
            admin=self.admin_credentials(),
            table=table,
        )

    # ---- connections ------------------------------------------------------------------
    def admin_credentials(self) -> cloud.Credentials:
        return cloud.Credentials(
            auth_url=self.settings.keystone_url,
            username="admin",
            password=self.secrets.keystone_admin,
            project_name="admin",
            region=self.settings.region,
        )

    def admin(self) -> Any:
        if self._admin is None:
            self._admin = cloud.connect(self.admin_credentials())
        return self._admin

    # ---- MariaDB ------------------------------------------------------------------------
    @property
    def _mysql_data(self) -> Path:
        return self.settings.state_dir / "mysql"

    @property
    def _mysql_run(self) -> Path:
        return self.settings.state_dir / "mysql-run"

    @property
    def mysql_socket(self) -> Path:
        return self._mysql_run / "mysqld.sock"

    def _mariadb_prepare(self) -> None:
        mysql = pwd.getpwnam("mysql")
        for directory in (self._mysql_data, self._mysql_run):
            directory.mkdir(parents=True, exist_ok=True)
            os.chown(directory, mysql.pw_uid, mysql.pw_gid)
        if not (self._mysql_data / "mysql").is_dir():
            run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    "--user=mysql",
                    f"--datadir={self._mysql_data}",
                    "--auth-root-authentication-method=socket",
                    "--skip-test-db",
                ]
            )

    def _mariadb_process(self) -> ProcessSpec:
        return ProcessSpec(
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                "--user=mysql",
                f"--datadir={self._mysql_data}",
                f"--socket={self.mysql_socket}",
                f"--pid-file={self._mysql_run / 'mariadbd.pid'}",
                f"--bind-address={self.settings.host}",
                f"--port={self.settings.ports.mariadb}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--max-connections=500",
                "--character-set-server=utf8mb4",
                "--collation-server=utf8mb4_general_ci",
            ],
        )

    def _mariadb_after_start(self) -> None:
        sql = cfg.databases_sql(self.settings, self.secrets)
        self.markers.once(
            "mariadb-databases",
            fingerprint(sql),
            lambda: run(["mariadb", f"--socket={self.mysql_socket}", "-uroot"], input_text=sql),
        )

    # ---- RabbitMQ -----------------------------------------------------------------------
    def rabbit_env(self) -> dict[str, str]:
        base = self.settings.state_dir / "rabbitmq"
        return {
            "HOME": str(base),
            "RABBITMQ_NODENAME": RABBIT_NODE,
            "RABBITMQ_NODE_IP_ADDRESS": self.settings.host,
            "RABBITMQ_NODE_PORT": str(self.settings.ports.rabbitmq),
            "ERL_EPMD_ADDRESS": self.settings.host,
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            "RABBITMQ_LOGS": "-",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq"),
            # Erlang distribution listens on loopback only.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "RABBITMQ_CTL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def rabbitmqctl(self, *args: str, check: bool = True) -> str:
        return run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", RABBIT_NODE, *args],
            env=self.rabbit_env(),
            timeout=120,
            check=check,
        ).stdout

    def _rabbit_prepare(self) -> None:
        base = self.settings.state_dir / "rabbitmq"
        (base / "mnesia").mkdir(parents=True, exist_ok=True)
        (base / "log").mkdir(parents=True, exist_ok=True)
        write_atomic(base / "enabled_plugins", "[].\n")
        write_atomic(base / "rabbitmq.conf", "loopback_users.guest = true\nlog.console = true\n")

    def _rabbit_after_start(self) -> None:
        def configure() -> None:
            self.rabbitmqctl("await_startup")
            users = self.rabbitmqctl("list_users", "--quiet")
            if "stackube" not in users.split():
                self.rabbitmqctl("add_user", "stackube", self.secrets.rabbitmq)
            else:
                self.rabbitmqctl("change_password", "stackube", self.secrets.rabbitmq)
            self.rabbitmqctl("set_permissions", "-p", "/", "stackube", ".*", ".*", ".*")
            if "guest" in users.split():
                self.rabbitmqctl("delete_user", "guest")

        # The user database lives in mnesia, so a fresh mnesia directory means "again".
        mnesia = self.settings.state_dir / "rabbitmq" / "mnesia"
        self.markers.once(
            "rabbitmq-users",
            fingerprint(self.secrets.rabbitmq, str(mnesia.stat().st_ino)),
            configure,
        )

    def _rabbit_stop(self, table: ProcessTable) -> None:
        if table.pid("rabbitmq") is not None:
            self.rabbitmqctl("shutdown", check=False)
        run(["epmd", "-kill"], env=self.rabbit_env(), check=False)

    def rabbit_queues(self) -> set[str]:
        out = self.rabbitmqctl("list_queues", "name", "--quiet", "--no-table-headers")
        return set(out.split())

    # ---- Keystone -----------------------------------------------------------------------
    def _keystone_prepare(self) -> None:
        conf = self.paths.keystone_conf
        write_atomic(conf, cfg.keystone_conf(self.settings, self.paths, self.secrets), 0o600)
        write_atomic(self.paths.keystone_uwsgi, cfg.keystone_uwsgi_ini(self.settings, self.paths))
        manage = ["keystone-manage", "--config-file", str(conf)]
        self.markers.once(
            "keystone-db-sync",
            fingerprint(self.secrets.mariadb_keystone, package_version("keystone")),
            lambda: run([*manage, "db_sync"]),
        )
        for kind in ("fernet", "credential"):
            repo = conf.parent / f"{kind}-keys"
            if not repo.is_dir() or not any(repo.iterdir()):
                run(
                    [
                        *manage,
                        f"{kind}_setup",
                        "--keystone-user",
                        "root",
                        "--keystone-group",
                        "root",
                    ]
                )
        url = self.settings.keystone_url
        self.markers.once(
            "keystone-bootstrap",
            fingerprint(self.secrets.keystone_admin, url),
            lambda: run(
                [
                    *manage,
                    "bootstrap",
                    "--bootstrap-admin-url",
                    url,
                    "--bootstrap-internal-url",
                    url,
                    "--bootstrap-public-url",
                    url,
                    "--bootstrap-region-id",
                    self.settings.region,
                ],
                # From the environment, not argv: command lines are world-readable.
                env={"OS_BOOTSTRAP_PASSWORD": self.secrets.keystone_admin},
            ),
        )

    def _keystone_after_start(self) -> None:
        inputs = fingerprint(
            self.secrets.neutron_service,
            self.secrets.stackube_service,
            self.settings.neutron_url,
            "member-inherited, service",  # added since: run again on older devboxes
        )
        self.markers.once("keystone-identities", inputs, self._bootstrap_identities)

    def _bootstrap_identities(self) -> None:
        """Neutron's service user, and Stackube's own service account.

        Stackube gets the admin role on its own Keystone domain (where tenant projects
        and users live), not on the cloud, plus what Neutron requires to create networks
        owned by tenant projects (see docs/decisions/0002-service-account.md)."""
        conn = self.admin()
        default = identity.ensure_domain(conn, "Default")
        service = identity.ensure_project(conn, "service", default, "OpenStack service users")
        admin_role = identity.ensure_role(conn, "admin")
        member_role = identity.ensure_role(conn, "member")
        neutron_user = identity.ensure_user(conn, "neutron", self.secrets.neutron_service, default)
        identity.grant_project_role(conn, neutron_user, service, admin_role)
        identity.ensure_endpoints(
            conn, "network", "neutron", self.settings.neutron_url, self.settings.region
        )

        tenants = identity.ensure_domain(
            conn, STACKUBE_DOMAIN, "Projects and users of Stackube tenants"
        )
        stackube_user = identity.ensure_user(
            conn, "stackube", self.secrets.stackube_service, default, service
        )
        identity.grant_domain_role(conn, stackube_user, tenants, admin_role)
        # The CSI controller makes a PVC's Cinder volume in its tenant's project (whose
        # quotas then apply), with a token scoped to that project.
        identity.grant_domain_role(conn, stackube_user, tenants, member_role, inherited=True)
        # Cinder deletes the attachments Stackube makes for pods and nodes only at a
        # service's request (the service token Stackube sends: openstack.cloud).
        service_role = identity.ensure_role(conn, "service")
        identity.grant_project_role(conn, stackube_user, service, service_role)
        identity.grant_project_role(conn, stackube_user, service, admin_role)
        # The admin token's catalog predates the network endpoint: reconnect.
        self._admin = None

    # ---- Neutron ------------------------------------------------------------------------
    def _neutron_files(self) -> None:
        s, p = self.settings, self.paths
        write_atomic(p.neutron_conf, cfg.neutron_conf(s, p, self.secrets), 0o600)
        write_atomic(p.ml2_conf, cfg.ml2_conf(s))
        if s.openvswitch:
            write_atomic(p.openvswitch_conf, cfg.openvswitch_agent_conf(s))
        else:
            write_atomic(p.linuxbridge_conf, cfg.linuxbridge_agent_conf(s))
        write_atomic(p.l3_conf, cfg.l3_agent_conf(s))
        write_atomic(p.dhcp_conf, cfg.dhcp_agent_conf(s))
        (p.neutron_state / "lock").mkdir(parents=True, exist_ok=True)

    def _neutron_prepare(self) -> None:
        self._neutron_files()
        self.markers.once(
            "neutron-db-upgrade",
            fingerprint(self.secrets.mariadb_neutron, package_version("neutron-common")),
            lambda: run(
                [
                    "neutron-db-manage",
                    "--config-file",
                    str(self.paths.neutron_conf),
                    "--config-file",
                    str(self.paths.ml2_conf),
                    "upgrade",
                    "heads",
                ],
                timeout=900,
            ),
        )

    def _neutron_after_start(self) -> None:
        # Agents started before neutron-server has declared its RPC queues lose their
        # first report and sit out a 60 s timeout: wait for the queues first.
        wanted = {"q-plugin", "q-reports-plugin"}
        deadline = time.monotonic() + 90
        while not wanted <= self.rabbit_queues():
            if time.monotonic() > deadline:
                raise StepError("neutron-server did not declare its RPC queues within 90s")
            time.sleep(1)
        ext = network.ensure_external_network(
            self.admin(),
            self.settings.external_network_name,
            self.settings.external_physnet,
            self.settings.external_cidr,
            self.settings.external_allocation_pools,
        )
        write_atomic(
            self.settings.openstack_dir / "external-network-id", ext.network_id + "\n", 0o644
        )

    def prepare_host_network(self) -> None:
        """What the agents need on the host: our wrappers on their PATH, the external
        segment (a veth pair: no dummy links here), and a record of sysctls to restore."""
        snapshot = self.settings.state_dir / "sysctl-snapshot.json"
        if not snapshot.exists():
            write_atomic(
                snapshot, json.dumps({k: sysctl.read(k) for k in WATCHED_SYSCTLS}, indent=2)
            )
        wrapper = resources.files("stackube.devbox").joinpath("files/ebtables-wrapper.py")
        write_atomic(self.paths.bin_dir / "ebtables", wrapper.read_text(), 0o755)
        netlink.ensure_veth_pair(
            self.settings.external_host_veth, self.settings.external_agent_veth
        )
        if self.settings.openvswitch:
            openvswitch.ensure_bridges(self.settings.external_agent_veth)

    def _agent(self, binary: str, conf: Path, prepare: Callable[[], None] | None = None) -> Service:
        def process() -> ProcessSpec:
            return ProcessSpec(
                binary,
                [binary, "--config-file", str(self.paths.neutron_conf), "--config-file", str(conf)],
                env={"PATH": cfg.agent_path(self.paths)},
            )

        def prepare_agent() -> None:
            self._neutron_files()
            if prepare is not None:
                prepare()

        return Service(
            name=binary,
            process=process,
            probe=self._agent_alive_probe(binary),
            start_timeout=60,
            prepare=prepare_agent,
        )

    def _agent_alive_probe(self, binary: str) -> health.Probe:
        """Alive in Neutron's view, with a heartbeat newer than our process."""

        def probe() -> bool:
            pid_file = self.table.pid_file(binary)
            try:
                started = datetime.datetime.fromtimestamp(pid_file.stat().st_mtime, datetime.UTC)
                agents = [a for a in self.admin().network.agents(binary=binary) if a.is_alive]
            except Exception:  # noqa: BLE001 - any failure (API down, no pid) means unhealthy
                return False
            for agent in agents:
                beat = datetime.datetime.fromisoformat(str(agent.last_heartbeat_at))
                if beat.tzinfo is None:
                    beat = beat.replace(tzinfo=datetime.UTC)
                if beat >= started - datetime.timedelta(seconds=1):
                    return True
            return False

        return probe

    # ---- the list ----------------------------------------------------------------------
    def services(self) -> list[Service]:
        s = self.settings
        host, ports = s.host, s.ports
        return [
            Service(
                name="mariadb",
                process=self._mariadb_process,
                probe=health.tcp_open(host, ports.mariadb),
                start_timeout=60,
                prepare=self._mariadb_prepare,
                after_start=self._mariadb_after_start,
            ),
            Service(
                name="rabbitmq",
                process=lambda: ProcessSpec(
                    "rabbitmq", [str(RABBIT_BIN / "rabbitmq-server")], env=self.rabbit_env()
                ),
                probe=health.tcp_open(host, ports.rabbitmq),
                start_timeout=90,
                prepare=self._rabbit_prepare,
                after_start=self._rabbit_after_start,
                stop=self._rabbit_stop,
            ),
            Service(
                name="keystone",
                process=lambda: ProcessSpec(
                    "keystone", ["uwsgi_python3", "--ini", str(self.paths.keystone_uwsgi)]
                ),
                probe=health.http_ok(s.keystone_url),
                start_timeout=60,
                prepare=self._keystone_prepare,
                after_start=self._keystone_after_start,
            ),
            Service(
                name="neutron-server",
                process=lambda: ProcessSpec(
                    "neutron-server",
                    [
                        "neutron-server",
                        "--config-file",
                        str(self.paths.neutron_conf),
                        "--config-file",
                        str(self.paths.ml2_conf),
                    ],
                ),
                probe=health.http_ok(f"{s.neutron_url}/"),
                start_timeout=120,
                prepare=self._neutron_prepare,
                after_start=self._neutron_after_start,
            ),
            *self._l2_services(),
            self._agent("neutron-dhcp-agent", self.paths.dhcp_conf),
            self._agent("neutron-l3-agent", self.paths.l3_conf),
            podaccess.service(s),
            # Block storage: Ceph, then Cinder on it (Keystone, MariaDB, RabbitMQ above).
            *self.ceph.services(),
            *self.cinder.services(),
        ]

    def _l2_services(self) -> list[Service]:
        """The L2 agent of the chosen backend (with Open vSwitch itself before it)."""
        if not self.settings.openvswitch:
            return [
                self._agent(
                    "neutron-linuxbridge-agent",
                    self.paths.linuxbridge_conf,
                    self.prepare_host_network,
                )
            ]
        return [
            openvswitch.ovsdb_service(self.settings),
            openvswitch.vswitchd_service(),
            self._agent(
                "neutron-openvswitch-agent", self.paths.openvswitch_conf, self.prepare_host_network
            ),
        ]

    def write_client_files(self) -> None:
        clouds = cfg.clouds_yaml(self.settings, self.secrets)
        write_atomic(self.settings.clouds_yaml, yaml.safe_dump(clouds, sort_keys=False), 0o600)
        write_atomic(
            self.settings.openstack_dir / "admin-openrc.sh",
            cfg.openrc(self.settings, self.secrets),
            0o600,
        )

    def restore_sysctls(self) -> dict[str, str]:
        """Put back the sysctl values recorded before the first `up`; returns what changed."""
        snapshot = self.settings.state_dir / "sysctl-snapshot.json"
        if not snapshot.exists():
            return {}
        restored = {}
        for key, value in json.loads(snapshot.read_text()).items():
            current = sysctl.read(key)
            if value is not None and current is not None and current != value:
                sysctl.write(key, value)
                restored[key] = value
        snapshot.unlink()
        return restored
