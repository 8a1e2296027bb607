"""Clients the devbox, its tests and its benchmarks make reach the devbox, whatever the
shell around them points at (an operator's shell often points at production)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import openstack.config
import pytest
import yaml
from kubernetes import client as k8s

from stackube.devbox.box import Devbox
from stackube.kube.client import api_client
from stackube.openstack.cloud import connect_cloud

pytestmark = pytest.mark.integration

# Nothing listens on port 1 of loopback: a client sent there fails at once.
NOWHERE = "127.0.0.1:1"


def hostile(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    clouds = directory / "clouds.yaml"
    cloud = {"auth": {"auth_url": f"http://{NOWHERE}/v3", "username": "x", "password": "y"}}
    clouds.write_text(yaml.safe_dump({"clouds": {"devbox-admin": cloud, "elsewhere": cloud}}))
    kubeconfig = directory / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://{NOWHERE}"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    monkeypatch.setenv("OS_CLOUD", "elsewhere")
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    monkeypatch.setenv("OS_AUTH_URL", f"http://{NOWHERE}/v3")
    monkeypatch.setenv("OS_USERNAME", "x")
    monkeypatch.setenv("OS_PASSWORD", "y")
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))


def test_hostile_ambient_variables_do_not_redirect_the_suites_clients(
    devbox: Devbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hostile(monkeypatch, tmp_path)
    # Positive control: openstacksdk left to its defaults does follow them.
    default = openstack.config.OpenStackConfig(config_files=[str(devbox.settings.clouds_yaml)])
    assert NOWHERE in default.get_one(cloud="devbox-admin").config["auth"]["auth_url"]

    conn = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    try:
        assert conn.identity.find_domain("stackube") is not None
    finally:
        conn.close()
    # Positive control: a client left to find its kubeconfig follows KUBECONFIG (read
    # when the Kubernetes client is imported: so in a new process).
    found = subprocess.run(
        [
            sys.executable,
            "-c",
            "from stackube.kube.client import endpoint; print(endpoint().server)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert NOWHERE in found.stdout
    api = api_client(devbox.settings.admin_kubeconfig)
    try:
        assert k8s.CoreV1Api(api).read_namespace("kube-system", _request_timeout=10)
    finally:
        api.close()


def test_the_devbox_command_ignores_them_too(
    devbox: Devbox, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`stackube devbox status`, run from a shell pointing elsewhere, probes every
    service of this devbox (and would exit 3 if any were unhealthy)."""
    hostile(monkeypatch, tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "stackube", "devbox", "status"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
