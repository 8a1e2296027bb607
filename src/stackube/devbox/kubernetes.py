"""The Kubernetes control plane of the devbox: PKI, kubeconfigs, etcd, kube-apiserver,
kube-controller-manager and kube-scheduler, all bound to 127.0.0.1.

Command lines are rendered by pure functions from the settings and an
`ApiserverOptions`, which later features extend (token webhook, admission webhooks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from stackube.devbox import health
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.kubeconfig import render_kubeconfig
from stackube.devbox.pki import CertPaths, CertSpec, PkiStore
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings


@dataclass(frozen=True)
class ApiserverOptions:
    """Flags later features add to kube-apiserver, e.g.
    `{"authentication-token-webhook-config-file": "..."}`. They override defaults."""

    extra_flags: Mapping[str, str] = field(default_factory=dict)


# The apiserver's identity towards kubelets (RBAC on the kubelet API names it).
APISERVER_KUBELET_CLIENT = "kube-apiserver-kubelet-client"


def cert_specs(settings: DevboxSettings) -> list[CertSpec]:
    host = settings.host
    apiserver_names = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{settings.cluster_domain}",
        "localhost",
    ]
    return [
        CertSpec(
            "etcd-server", "etcd-server", dns_names=["localhost"], ip_addresses=[host], server=True
        ),
        CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", client=True),
        CertSpec(
            "kube-apiserver",
            "kube-apiserver",
            dns_names=apiserver_names,
            ip_addresses=[host, settings.kubernetes_service_ip, settings.pod_apiserver_host],
            server=True,
        ),
        CertSpec(
            "apiserver-kubelet-client",
            APISERVER_KUBELET_CLIENT,
            organizations=["kubeadm:cluster-admins"],
            client=True,
        ),
        CertSpec("admin", "kubernetes-admin", organizations=["system:masters"], client=True),
        CertSpec("kube-controller-manager", "system:kube-controller-manager", client=True),
        CertSpec("kube-scheduler", "system:kube-scheduler", client=True),
        CertSpec(
            "kube-controller-manager-serving",
            "kube-controller-manager",
            dns_names=["localhost"],
            ip_addresses=[host],
            server=True,
        ),
        CertSpec(
            "kube-scheduler-serving",
            "kube-scheduler",
            dns_names=["localhost"],
            ip_addresses=[host],
            server=True,
        ),
    ]


# Client identities that get a kubeconfig: file stem -> certificate name.
KUBECONFIG_USERS = {
    "admin": "admin",
    "kube-controller-manager": "kube-controller-manager",
    "kube-scheduler": "kube-scheduler",
}


def ensure_pki_and_kubeconfigs(settings: DevboxSettings) -> None:
    """Create (or keep) every certificate and kubeconfig; cheap when all exist."""
    store = PkiStore(settings.pki_dir)
    ca = store.ensure_ca()
    for spec in cert_specs(settings):
        store.ensure_leaf(spec)
    store.ensure_keypair("service-account")
    settings.kube_dir.mkdir(parents=True, exist_ok=True)
    for stem, cert_name in KUBECONFIG_USERS.items():
        paths = store.paths(cert_name)
        text = render_kubeconfig(
            settings.apiserver_url,
            ca.cert_pem,
            user=cert_name,
            cert_pem=paths.cert.read_bytes(),
            key_pem=paths.key.read_bytes(),
        )
        write_atomic(settings.kube_dir / f"{stem}.kubeconfig", text, 0o600)


def _flags(flags: Mapping[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in flags.items()]


def _paths(settings: DevboxSettings, name: str) -> CertPaths:
    return PkiStore(settings.pki_dir).paths(name)


def etcd_argv(settings: DevboxSettings) -> list[str]:
    host, ports = settings.host, settings.ports
    server = _paths(settings, "etcd-server")
    flags = {
        "name": "devbox",
        "data-dir": str(settings.state_dir / "etcd"),
        "listen-client-urls": f"https://{host}:{ports.etcd_client}",
        "advertise-client-urls": f"https://{host}:{ports.etcd_client}",
        "listen-peer-urls": f"http://{host}:{ports.etcd_peer}",
        "initial-advertise-peer-urls": f"http://{host}:{ports.etcd_peer}",
        "initial-cluster": f"devbox=http://{host}:{ports.etcd_peer}",
        "listen-metrics-urls": f"http://{host}:{ports.etcd_peer + 1}",
        "cert-file": str(server.cert),
        "key-file": str(server.key),
        "trusted-ca-file": str(_paths(settings, "ca").cert),
        "client-cert-auth": "true",
        "snapshot-count": "10000",
        "log-level": "warn",
    }
    return [str(settings.etcd_bin_dir / "etcd"), *_flags(flags)]


def apiserver_argv(settings: DevboxSettings, options: ApiserverOptions) -> list[str]:
    host, ports = settings.host, settings.ports
    ca = _paths(settings, "ca")
    serving = _paths(settings, "kube-apiserver")
    etcd_client = _paths(settings, "apiserver-etcd-client")
    kubelet_client = _paths(settings, "apiserver-kubelet-client")
    sa = settings.pki_dir
    flags = {
        "advertise-address": host,
        "bind-address": host,
        "secure-port": str(ports.kube_apiserver),
        "etcd-servers": f"https://{host}:{ports.etcd_client}",
        "etcd-cafile": str(ca.cert),
        "etcd-certfile": str(etcd_client.cert),
        "etcd-keyfile": str(etcd_client.key),
        "client-ca-file": str(ca.cert),
        "tls-cert-file": str(serving.cert),
        "tls-private-key-file": str(serving.key),
        # The node's name resolves to loopback here; its InternalIP is where kubelet listens.
        "kubelet-preferred-address-types": "InternalIP",
        "kubelet-client-certificate": str(kubelet_client.cert),
        "kubelet-client-key": str(kubelet_client.key),
        "service-cluster-ip-range": settings.service_cidr,
        "service-account-issuer": settings.service_account_issuer,
        "service-account-key-file": str(sa / "service-account.pub"),
        "service-account-signing-key-file": str(sa / "service-account.key"),
        "authorization-mode": "Node,RBAC",
        "enable-admission-plugins": "NodeRestriction",
        "allow-privileged": "true",
        "profiling": "false",
        # The only address is loopback, which Endpoints may not hold: the devbox does not
        # publish the apiserver through the `kubernetes` Service's endpoints.
        "endpoint-reconciler-type": "none",
        # Webhooks, aggregated APIs and the service proxy go to an endpoint's pod address
        # (the host reaches system pods through the node link), not to the ClusterIP,
        # which only the system network's router serves.
        "enable-aggregator-routing": "true",
        "v": "1",
    }
    flags.update(options.extra_flags)
    return [str(settings.kube_bin_dir / "kube-apiserver"), *_flags(flags)]


def controller_manager_argv(settings: DevboxSettings) -> list[str]:
    kubeconfig = str(settings.kube_dir / "kube-controller-manager.kubeconfig")
    ca = _paths(settings, "ca")
    serving = _paths(settings, "kube-controller-manager-serving")
    flags = {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": settings.host,
        "secure-port": str(settings.ports.kube_controller_manager),
        "tls-cert-file": str(serving.cert),
        "tls-private-key-file": str(serving.key),
        "client-ca-file": str(ca.cert),
        "root-ca-file": str(ca.cert),
        "service-account-private-key-file": str(settings.pki_dir / "service-account.key"),
        "cluster-signing-cert-file": str(ca.cert),
        "cluster-signing-key-file": str(ca.key),
        "use-service-account-credentials": "true",
        "service-cluster-ip-range": settings.service_cidr,
        "controllers": "*,bootstrapsigner,tokencleaner",
        "leader-elect": "false",
        "v": "1",
    }
    return [str(settings.kube_bin_dir / "kube-controller-manager"), *_flags(flags)]


def scheduler_argv(settings: DevboxSettings) -> list[str]:
    kubeconfig = str(settings.kube_dir / "kube-scheduler.kubeconfig")
    serving = _paths(settings, "kube-scheduler-serving")
    flags = {
        "kubeconfig": kubeconfig,
        "authentication-kubeconfig": kubeconfig,
        "authorization-kubeconfig": kubeconfig,
        "bind-address": settings.host,
        "secure-port": str(settings.ports.kube_scheduler),
        "tls-cert-file": str(serving.cert),
        "tls-private-key-file": str(serving.key),
        "leader-elect": "false",
        "v": "1",
    }
    return [str(settings.kube_bin_dir / "kube-scheduler"), *_flags(flags)]


def kubernetes_services(
    settings: DevboxSettings, options: ApiserverOptions | None = None
) -> list[Service]:
    options = options or ApiserverOptions()
    ca = _paths(settings, "ca").cert
    host, ports = settings.host, settings.ports

    def probe(url: str, client: str | None = None) -> health.Probe:
        def run() -> bool:
            paths = _paths(settings, client) if client else None
            ctx = health.tls_context(
                ca, paths.cert if paths else None, paths.key if paths else None
            )
            return health.http_ok(url, context=ctx)()

        return run

    def spec(name: str, argv: list[str]) -> ProcessSpec:
        return ProcessSpec(name=name, argv=argv, cwd=settings.state_dir)

    return [
        Service(
            name="etcd",
            process=lambda: spec("etcd", etcd_argv(settings)),
            probe=health.http_ok(f"http://{host}:{ports.etcd_peer + 1}/health"),
            start_timeout=30,
        ),
        Service(
            name="kube-apiserver",
            process=lambda: spec("kube-apiserver", apiserver_argv(settings, options)),
            probe=probe(f"https://{host}:{ports.kube_apiserver}/readyz", "admin"),
            start_timeout=90,
        ),
        Service(
            name="kube-controller-manager",
            process=lambda: spec("kube-controller-manager", controller_manager_argv(settings)),
            probe=probe(f"https://{host}:{ports.kube_controller_manager}/healthz"),
            start_timeout=60,
        ),
        Service(
            name="kube-scheduler",
            process=lambda: spec("kube-scheduler", scheduler_argv(settings)),
            probe=probe(f"https://{host}:{ports.kube_scheduler}/healthz"),
            start_timeout=60,
        ),
    ]
