"""Stackube itself on the devbox: its CRDs and RBAC in the apiserver, and
stackube-controller running as a supervised host process with the identity of its
ServiceAccount (a client certificate for `system:serviceaccount:kube-system:...`, so
the least-privilege RBAC of the manifests is what it runs with)."""

from __future__ import annotations

import sys
from pathlib import Path

from stackube.api.crds import all_crds
from stackube.api.manifests import controller_rbac
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


def controller_cert() -> CertSpec:
    return CertSpec(
        "stackube-controller",
        CONTROLLER_SA,
        organizations=["system:serviceaccounts", "system:serviceaccounts:kube-system"],
        client=True,
    )


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

    def config_values(self) -> dict[str, str]:
        ext = (self.settings.openstack_dir / "external-network-id").read_text().strip()
        return {
            "auth-url": self.settings.keystone_url,
            "username": "stackube",
            "tenant-name": "service",
            "region": self.settings.region,
            "ext-net-id": ext,
            "user-cidr": "10.244.0.0/16",
            "user-gateway": "10.244.0.1",
            "tenant-domain-name": STACKUBE_DOMAIN,
        }

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
        for key, value in self.config_values().items():
            write_atomic(self.root / "config" / key, value)
        write_atomic(
            self.root / "secret" / "password", self.openstack.secrets.stackube_service, 0o600
        )
        with session(self.settings.admin_kubeconfig) as api:
            apply.apply_crds(api, all_crds())
            apply.create_missing(api, controller_rbac())

    def services(self) -> list[Service]:
        host = self.settings.host
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
            )
        ]
