"""Pure rendering of the devbox's configuration: command lines, ini files, kubeconfigs."""

import base64
import configparser
from pathlib import Path

import pytest
import yaml

from stackube.devbox import kubernetes as kube
from stackube.devbox import openstack_config as cfg
from stackube.devbox import podaccess
from stackube.devbox.kubeconfig import render_kubeconfig
from stackube.devbox.process import ProcessSpec
from stackube.devbox.settings import DevboxSettings, allocation_pools_without

pytestmark = pytest.mark.unit

SETTINGS = DevboxSettings(state_dir=Path("/state"), cache_dir=Path("/cache"))
SECRETS = cfg.Secrets(
    mariadb_keystone="k-db",
    mariadb_neutron="n-db",
    rabbitmq="rmq",
    keystone_admin="adm",
    neutron_service="neu",
    stackube_service="stk",
    mariadb_cinder="c-db",
    cinder_service="cin",
)
PATHS = cfg.OpenStackPaths(SETTINGS.openstack_dir)


def flags(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv[1:])


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(text)
    return parser


def test_settings_from_env_moves_state_cache_and_binaries() -> None:
    env = {"STACKUBE_DEVBOX_DIR": "/s", "XDG_CACHE_HOME": "/x", "STACKUBE_KUBE_BIN_DIR": "/k"}
    settings = DevboxSettings.from_env(env)
    assert settings.state_dir == Path("/s")
    assert settings.kube_cache_dir == Path("/x/stackube/kubernetes/v1.37.2")
    assert settings.kube_bin_dir == Path("/k")
    assert settings.etcd_bin_dir == Path("/x/stackube/etcd/v3.6.16/bin")


def test_defaults_use_the_home_cache_and_the_first_service_ip() -> None:
    settings = DevboxSettings.from_env({"HOME": "/home/u"})
    assert settings.cache_dir == Path("/home/u/.cache/stackube")
    assert settings.kubernetes_service_ip == "10.96.0.1"


def test_apiserver_binds_loopback_and_serves_the_service_range() -> None:
    argv = kube.apiserver_argv(SETTINGS, kube.ApiserverOptions())
    f = flags(argv)
    assert argv[0] == "/cache/kubernetes/v1.37.2/bin/kube-apiserver"
    assert f["bind-address"] == "127.0.0.1"
    assert f["service-cluster-ip-range"] == "10.96.0.0/12"
    assert f["etcd-servers"] == "https://127.0.0.1:2379"
    assert f["authorization-mode"] == "Node,RBAC"


def test_apiserver_options_add_and_override_flags() -> None:
    options = kube.ApiserverOptions(
        {
            "authentication-token-webhook-config-file": "/w.yaml",
            "authorization-mode": "Node,RBAC,Webhook",
        }
    )
    f = flags(kube.apiserver_argv(SETTINGS, options))
    assert f["authentication-token-webhook-config-file"] == "/w.yaml"
    assert f["authorization-mode"] == "Node,RBAC,Webhook"


def test_etcd_requires_client_certificates_on_loopback() -> None:
    f = flags(kube.etcd_argv(SETTINGS))
    assert f["listen-client-urls"] == "https://127.0.0.1:2379"
    assert f["client-cert-auth"] == "true"
    assert f["data-dir"] == "/state/etcd"


def test_apiserver_certificate_names_the_kubernetes_service() -> None:
    spec = next(s for s in kube.cert_specs(SETTINGS) if s.name == "kube-apiserver")
    assert "10.96.0.1" in spec.ip_addresses
    assert SETTINGS.pod_apiserver_host in spec.ip_addresses  # pods reach it there
    assert "kubernetes.default.svc.cluster.local" in spec.dns_names
    assert spec.server and not spec.client


def test_kubeconfig_embeds_server_ca_and_client_credentials() -> None:
    doc = yaml.safe_load(
        render_kubeconfig(
            "https://127.0.0.1:6443", b"CA", user="admin", cert_pem=b"CERT", key_pem=b"KEY"
        )
    )
    cluster = doc["clusters"][0]["cluster"]
    user = doc["users"][0]["user"]
    assert cluster["server"] == "https://127.0.0.1:6443"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(user["client-certificate-data"]) == b"CERT"
    assert base64.b64decode(user["client-key-data"]) == b"KEY"
    assert doc["current-context"] == "admin@stackube"


def test_neutron_conf_enables_zed_linuxbridge_and_runs_agents_without_sudo() -> None:
    conf = parse_ini(cfg.neutron_conf(SETTINGS, PATHS, SECRETS))
    assert conf["experimental"]["linuxbridge"] == "true"
    assert conf["DEFAULT"]["bind_host"] == "127.0.0.1"
    assert conf["DEFAULT"]["transport_url"] == "rabbit://stackube:rmq@127.0.0.1:5672/"
    assert conf["agent"]["root_helper"].startswith("env PATH=/state/openstack/bin:")
    assert conf["keystone_authtoken"]["password"] == "neu"
    assert "n-db@127.0.0.1:3306/neutron" in conf["database"]["connection"]


def test_linuxbridge_agent_maps_the_external_physnet_to_the_agent_veth() -> None:
    conf = parse_ini(cfg.linuxbridge_agent_conf(SETTINGS))
    assert conf["linux_bridge"]["physical_interface_mappings"] == "external:stkbext1"
    assert conf["vxlan"]["local_ip"] == "127.0.0.1"


OVS = DevboxSettings(Path("/state"), Path("/cache"), neutron_backend="openvswitch")


def test_the_openvswitch_backend_is_chosen_by_environment() -> None:
    assert DevboxSettings.from_env({"STACKUBE_DEVBOX_NEUTRON": "openvswitch"}).openvswitch
    assert not DevboxSettings.from_env({}).openvswitch
    with pytest.raises(ValueError, match="STACKUBE_DEVBOX_NEUTRON"):
        DevboxSettings.from_env({"STACKUBE_DEVBOX_NEUTRON": "ovn"})


def test_neutron_api_workers_come_from_the_environment_within_bounds() -> None:
    settings = DevboxSettings.from_env({"STACKUBE_DEVBOX_NEUTRON_API_WORKERS": "2"})
    conf = parse_ini(cfg.neutron_conf(settings, PATHS, SECRETS))
    assert conf["DEFAULT"]["api_workers"] == "2"
    default = parse_ini(cfg.neutron_conf(DevboxSettings.from_env({}), PATHS, SECRETS))
    assert default["DEFAULT"]["api_workers"] == str(DevboxSettings.neutron_api_workers)
    for bad in ("0", "9", "two"):
        with pytest.raises(ValueError, match="STACKUBE_DEVBOX_NEUTRON_API_WORKERS"):
            DevboxSettings.from_env({"STACKUBE_DEVBOX_NEUTRON_API_WORKERS": bad})


def test_openvswitch_backend_uses_the_userspace_datapath_everywhere() -> None:
    neutron = parse_ini(cfg.neutron_conf(OVS, PATHS, SECRETS))
    assert neutron["DEFAULT"]["interface_driver"] == "openvswitch"
    assert not neutron.has_section("experimental")
    ml2 = parse_ini(cfg.ml2_conf(OVS))
    assert ml2["ml2"]["mechanism_drivers"] == "openvswitch,l2population"
    agent = parse_ini(cfg.openvswitch_agent_conf(OVS))
    assert agent["ovs"]["datapath_type"] == "netdev"
    assert agent["ovs"]["bridge_mappings"] == "external:br-ex"
    assert agent["securitygroup"]["firewall_driver"] == "openvswitch"
    for text in (cfg.l3_agent_conf(OVS), cfg.dhcp_agent_conf(OVS)):
        conf = parse_ini(text)
        assert conf["DEFAULT"]["interface_driver"] == "openvswitch"
        assert conf["DEFAULT"]["ovs_use_veth"] == "true"  # survives a vswitchd restart
        assert conf["ovs"]["datapath_type"] == "netdev"
    lb = parse_ini(cfg.l3_agent_conf(SETTINGS))
    assert lb["DEFAULT"]["interface_driver"] == "linuxbridge" and not lb.has_section("ovs")


def test_keystone_uwsgi_closes_connections_and_points_at_our_config() -> None:
    conf = parse_ini(cfg.keystone_uwsgi_ini(SETTINGS, PATHS))["uwsgi"]
    assert conf["add-header"] == "Connection: close"
    assert conf["http-socket"] == "127.0.0.1:5000"
    assert conf["env"] == "OS_KEYSTONE_CONFIG_FILES=/state/openstack/keystone/keystone.conf"


def test_clouds_yaml_has_admin_and_the_stackube_service_account() -> None:
    clouds = cfg.clouds_yaml(SETTINGS, SECRETS)["clouds"]
    assert isinstance(clouds, dict)
    assert clouds["devbox-admin"]["auth"]["username"] == "admin"
    assert clouds["devbox-stackube"]["auth"]["password"] == "stk"
    assert clouds["devbox-stackube"]["auth"]["auth_url"] == "http://127.0.0.1:5000/v3"


def test_database_sql_is_repeatable_and_scoped_to_loopback_users() -> None:
    sql = cfg.databases_sql(SETTINGS, SECRETS)
    assert "CREATE DATABASE IF NOT EXISTS keystone;" in sql
    assert "CREATE USER IF NOT EXISTS 'neutron'@'127.0.0.1' IDENTIFIED BY 'n-db';" in sql
    assert "GRANT ALL PRIVILEGES ON keystone.* TO 'keystone'@'127.0.0.1';" in sql


def test_neutron_allocates_every_external_address_but_the_hosts() -> None:
    assert SETTINGS.external_allocation_pools == [("198.51.100.1", "198.51.100.253")]
    assert allocation_pools_without("192.0.2.0/29", "192.0.2.3") == [
        ("192.0.2.1", "192.0.2.2"),
        ("192.0.2.4", "192.0.2.6"),
    ]
    with pytest.raises(ValueError, match="not in"):
        allocation_pools_without("192.0.2.0/29", "192.0.2.9")


def test_pods_reach_the_loopback_apiserver_through_a_relay_on_the_external_address() -> None:
    argv = podaccess.relay_argv(SETTINGS)
    assert argv[0] == "socat"
    assert argv[1].startswith("TCP-LISTEN:6443,bind=198.51.100.254,")
    assert argv[2] == "TCP:127.0.0.1:6443"
    assert podaccess.host_cidr(SETTINGS) == "198.51.100.254/24"


def test_the_external_range_must_not_hold_addresses_the_machine_uses() -> None:
    used = ["10.255.255.53", "203.0.113.80", "198.51.100.7", "not-an-ip"]
    assert podaccess.inside("203.0.113.0/24", used) == ["203.0.113.80"]
    assert podaccess.inside(SETTINGS.external_cidr, ["203.0.113.80", "10.255.255.53"]) == []


def test_pod_and_service_ranges_never_leave_the_machine() -> None:
    assert podaccess.host_routes(SETTINGS) == ["10.244.0.0/16", "10.245.0.0/16", "10.96.0.0/12"]


def test_a_process_without_inputs_is_identified_by_its_command_line() -> None:
    spec = ProcessSpec("x", ["x", "--flag"])
    assert spec.identity == ["x", "--flag"]


def test_from_the_external_segment_only_the_api_relay_and_node_ports_reach_the_host() -> None:
    jump = podaccess.guard_jump(SETTINGS)
    assert jump[jump.index("-i") - 1 : jump.index("-i") + 2] == ["!", "-i", "lo"]
    assert jump[jump.index("-d") + 1] == "198.51.100.254/32"
    rules = podaccess.guard_rules(SETTINGS)
    assert rules[-1] == ["-j", "REJECT"]
    passed = [r for r in rules if r[-1] == "RETURN"]
    assert ["-p", "tcp", "--dport", "6443", "-j", "RETURN"] in passed
    assert not any("10250" in r for r in passed)  # not the kubelet API
    for protocol in ("tcp", "udp"):
        assert ["-p", protocol, "--dport", "30000:32767", "-j", "RETURN"] in passed


def test_ceph_conf_is_one_node_on_loopback() -> None:
    from stackube.devbox.ceph import CephPaths, ceph_conf  # noqa: PLC0415

    conf = parse_ini(ceph_conf(SETTINGS, CephPaths(Path("/state/ceph")), "fsid-1"))
    g = conf["global"]
    assert g["fsid"] == "fsid-1"
    assert g["mon_host"] == "[v2:127.0.0.1:3300,v1:127.0.0.1:6789]"
    assert (g["osd_pool_default_size"], g["mon_allow_pool_size_one"]) == ("1", "true")
    assert g["auth_client_required"] == "cephx"
    assert conf["osd"]["osd_objectstore"] == "bluestore"
    assert conf["osd"]["bluestore_block_path"] == "/state/ceph/osd/$cluster-$id.block"


def test_cinder_conf_uses_rbd_on_the_volumes_pool() -> None:
    from stackube.devbox.cinder import CinderPaths, cinder_conf  # noqa: PLC0415

    conf = parse_ini(
        cinder_conf(SETTINGS, CinderPaths(Path("/c")), SECRETS, Path("/ceph.conf"), "fsid-1")
    )
    assert conf["DEFAULT"]["enabled_backends"] == "ceph"
    assert conf["database"]["connection"].startswith("mysql+pymysql://cinder:c-db@127.0.0.1")
    assert conf["keystone_authtoken"]["username"] == "cinder"
    assert conf["keystone_authtoken"]["password"] == "cin"
    backend = conf["ceph"]
    assert backend["volume_driver"] == "cinder.volume.drivers.rbd.RBDDriver"
    assert (backend["rbd_pool"], backend["rbd_user"]) == ("volumes", "cinder")
    assert backend["rbd_ceph_conf"] == "/ceph.conf"


def test_the_nodes_cinder_conf_is_the_seeds_format() -> None:
    from stackube.devbox.volumes import cinder_conf  # noqa: PLC0415

    conf = parse_ini(cinder_conf(SETTINGS, SECRETS, Path("/k/ceph.client.cinder.keyring")))
    assert set(conf["Global"]) >= {"auth-url", "username", "password", "tenant-name", "region"}
    assert conf["Global"]["password"] == "stk"
    assert conf["RBD"]["keyring"] == "/k/ceph.client.cinder.keyring"
    assert conf["Stackube"]["state-dir"] == "/state/node/volumes"
