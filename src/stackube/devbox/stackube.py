"""Stackube itself on the devbox: its CRDs and RBAC in the apiserver, and
stackube-controller running as a supervised host process with the identity of its
ServiceAccount (a client certificate for `system:serviceaccount:kube-system:...`, so
the least-privilege RBAC of the manifests is what it runs with)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from stackube.api.crds import all_crds
from stackube.api.manifests import admission_policies, controller_rbac
from stackube.devbox import health
from stackube.devbox.fsutil import write_atomic
from stackube.devbox.kubeconfig import render_kubeconfig
from stackube.devbox.openstack import STACKUBE_DOMAIN, OpenStackDevbox
from stackube.devbox.pki import CertSpec, PkiStore
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings
from stackube.kube import apply
from stackube.kube.client import session

CONTROLLER_SA = "system:serviceaccount:kube-system:stackube-controller"
CONTROLLER_HEALTH_PORT = 8081
CONTROLLER_METRICS_PORT = 9091
AUTH_PORT = 8443
# The apiserver caches webhook answers too: a revoked token stops working within the
# webhook's cache TTL plus this.
APISERVER_WEBHOOK_CACHE = "10s"


def controller_cert() -> CertSpec:
    return CertSpec(
        "stackube-controller",
        CONTROLLER_SA,
        organizations=["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        client=True,
    )


def auth_certs(settings: DevboxSettings) -> list[CertSpec]:
    return [
        CertSpec(
            "stackube-auth",
            "stackube-auth",
            dns_names=["localhost"],
            ip_addresses=[settings.host],
            server=True,
        ),
        # Only the apiserver (holding this) may ask the webhook.
        CertSpec("apiserver-webhook-client", "kube-apiserver", client=True),
    ]


def webhook_kubeconfig(settings: DevboxSettings) -> Path:
    return settings.kube_dir / "authn-webhook.kubeconfig"


def apiserver_auth_flags(settings: DevboxSettings) -> dict[str, str]:
    """kube-apiserver flags that send bearer tokens it does not know to stackube-auth."""
    return {
        "authentication-token-webhook-config-file": str(webhook_kubeconfig(settings)),
        "authentication-token-webhook-cache-ttl": APISERVER_WEBHOOK_CACHE,
        "authentication-token-webhook-version": "v1",
    }


def ensure_auth_pki(settings: DevboxSettings) -> None:
    """The webhook's serving certificate, the apiserver's client certificate for it, and
    the webhook kubeconfig the apiserver reads (it must exist before the apiserver starts)."""
    store = PkiStore(settings.pki_dir)
    store.ensure_ca()
    for spec in auth_certs(settings):
        store.ensure_leaf(spec)
    client = store.paths("apiserver-webhook-client")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stackube-auth",
                "cluster": {
                    "server": f"https://{settings.host}:{AUTH_PORT}/authenticate",
                    "certificate-authority": str(store.ca_paths.cert),
                },
            }
        ],
        "users": [
            {
                "name": "kube-apiserver",
                "user": {
                    "client-certificate": str(client.cert),
                    "client-key": str(client.key),
                },
            }
        ],
        "contexts": [
            {"name": "webhook", "context": {"cluster": "stackube-auth", "user": "kube-apiserver"}}
        ],
        "current-context": "webhook",
    }
    write_atomic(webhook_kubeconfig(settings), yaml.safe_dump(doc, sort_keys=False), 0o600)


def controller_config_values(settings: DevboxSettings) -> dict[str, str]:
    """The controller's (and CNI daemon's) configuration keys on this devbox."""
    ext = (settings.openstack_dir / "external-network-id").read_text().strip()
    return {
        "auth-url": settings.keystone_url,
        "username": "stackube",
        "tenant-name": "service",
        "region": settings.region,
        "ext-net-id": ext,
        "user-cidr": settings.user_cidr,
        "user-gateway": settings.user_gateway,
        "tenant-cidr": settings.tenant_cidr,
        "tenant-gateway": settings.tenant_gateway,
        "tenant-domain-name": STACKUBE_DOMAIN,
        "plugin-name": settings.neutron_backend,
        # Pods reach the API server at the host's address on the external segment.
        "kubernetes-host": settings.pod_apiserver_host,
        "kubernetes-port": str(settings.ports.kube_apiserver),
        "cluster-domain": settings.cluster_domain,
        "dns-image": settings.coredns_image,  # our build, from the devbox's registry
    }


class StackubeDevbox:
    def __init__(self, settings: DevboxSettings, openstack: OpenStackDevbox) -> None:
        self.settings = settings
        self.openstack = openstack

    @property
    def root(self) -> Path:
        return self.settings.state_dir / "stackube"

    @property
    def controller_kubeconfig(self) -> Path:
        return self.settings.kube_dir / "stackube-controller.kubeconfig"

    def prepare(self) -> None:
        store = PkiStore(self.settings.pki_dir)
        ca = store.ensure_ca()
        paths = store.ensure_leaf(controller_cert())
        write_atomic(
            self.controller_kubeconfig,
            render_kubeconfig(
                self.settings.apiserver_url,
                ca.cert_pem,
                user="stackube-controller",
                cert_pem=paths.cert.read_bytes(),
                key_pem=paths.key.read_bytes(),
            ),
            0o600,
        )
        for key, value in controller_config_values(self.settings).items():
            write_atomic(self.root / "config" / key, value)
        write_atomic(
            self.root / "secret" / "password", self.openstack.secrets.stackube_service, 0o600
        )
        # The CSI driver's pods attach RBD images as client.cinder (docs/volumes.md).
        write_atomic(self.root / "secret" / "keyring", self.openstack.ceph.cinder_key(), 0o600)
        with session(self.settings.admin_kubeconfig) as api:
            apply.apply_crds(api, all_crds())
            apply.server_side_apply(api, controller_rbac(), "stackube-devbox")
            apply.server_side_apply(api, admission_policies(), "stackube-devbox")

    def services(self) -> list[Service]:
        host = self.settings.host
        pki = PkiStore(self.settings.pki_dir)
        serving, client = pki.paths("stackube-auth"), pki.paths("apiserver-webhook-client")

        def auth_probe() -> bool:
            context = health.tls_context(pki.ca_paths.cert, client.cert, client.key)
            return health.http_ok(f"https://{host}:{AUTH_PORT}/healthz", context=context)()

        return [
            Service(
                name="stackube-controller",
                process=lambda: ProcessSpec(
                    "stackube-controller",
                    [
                        sys.executable,
                        "-m",
                        "stackube",
                        "controller",
                        f"--kubeconfig={self.controller_kubeconfig}",
                        f"--config-dir={self.root / 'config'}",
                        f"--secret-dir={self.root / 'secret'}",
                        f"--bind-address={host}",
                        f"--health-port={CONTROLLER_HEALTH_PORT}",
                        f"--metrics-port={CONTROLLER_METRICS_PORT}",
                    ],
                ),
                probe=health.http_ok(f"http://{host}:{CONTROLLER_HEALTH_PORT}/healthz"),
                start_timeout=60,
                prepare=self.prepare,
            ),
            Service(
                name="stackube-auth",
                process=lambda: ProcessSpec(
                    "stackube-auth",
                    [
                        sys.executable,
                        "-m",
                        "stackube",
                        "auth-webhook",
                        f"--config-dir={self.root / 'config'}",
                        f"--secret-dir={self.root / 'secret'}",
                        f"--tls-cert={serving.cert}",
                        f"--tls-key={serving.key}",
                        f"--client-ca={pki.ca_paths.cert}",
                        f"--bind-address={host}",
                        f"--port={AUTH_PORT}",
                        # The apiserver's own audience (its service-account issuer,
                        # the default): the only one a Keystone token is good for.
                        f"--audiences={self.settings.service_account_issuer}",
                    ],
                ),
                probe=auth_probe,
                start_timeout=30,
                prepare=lambda: ensure_auth_pki(self.settings),
            ),
        ]
