"""Upgrading, uninstalling and installing Stackube as an operator does (issue 15). Late
in the integration tier (after the probe soak, before the live tenant's check and the
devbox's down/up), because it rolls and removes Stackube's components:

- a new image applied through the overlay rolls every component while the live
  tenant's client asks its nginx Service every 100 ms;
- `kubectl delete -k` and `helm uninstall` leave only what is labelled to stay (the
  CRDs, hence Tenants and Networks, and stackube-dns); the seed's three files and
  `helm install` each install a Stackube that serves a tenant; the devbox's own
  deployment is put back afterwards (`up`), and the live tenant must come through all
  of it (test_zx_live_tenant)."""

from __future__ import annotations

import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from openstack.connection import Connection

from stackube.api.types import KEEP_ON_UNINSTALL
from stackube.devbox import helm, images
from stackube.devbox.box import Devbox
from stackube.devbox.components import COMPONENTS, HELM_PLUGIN, NAMESPACE, PodComponents
from tests.e2e.kubectl import Kubectl, eventually
from tests.e2e.test_user_guide import delete_tenants, make_tenant, running_pods
from tests.live_tenant import LiveTenant

pytestmark = pytest.mark.integration

CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "stackube"


@pytest.fixture(scope="module", autouse=True)
def devbox_node_cordoned(devbox: Devbox) -> Iterator[None]:
    """Not cordoned here (this module's tenants run real pods): the node as it is, and
    Stackube's components ready (a Deployment resumed under a cordon starts now)."""
    if not devbox.pods_mode:
        pytest.skip("Stackube runs as host processes here (STACKUBE_DEVBOX_COMPONENTS=host)")
    PodComponents(devbox.settings).wait_ready(COMPONENTS)
    yield


@pytest.fixture(scope="module")
def kubectl(devbox: Devbox) -> Kubectl:
    return Kubectl(devbox.settings.admin_kubeconfig)


INTERVAL = 0.1  # seconds between the client's requests
# One request per line: "ok" or "fail", each given at most a second (`timeout`: the
# devbox busybox's `wget -T` crashes), `{count}` of them.
ASKER = (
    "i=0; while [ $i -lt {count} ]; do i=$((i+1)); "
    "if timeout 1 wget -q -O /dev/null http://{ip}/; then echo ok; else echo fail; fi; "
    "sleep {interval}; done"
)


class LeaseWatch:
    """Every holder the controller's Lease names, polled every 100 ms in a thread."""

    def __init__(self, kubectl: Kubectl) -> None:
        self.kubectl = kubectl
        self.holders: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            lease = self.kubectl.run(
                "-n", NAMESPACE, "get", "lease", "stackube-controller",
                "-o", "jsonpath={.spec.holderIdentity}", check=False,
            ).stdout.strip()  # fmt: skip
            if not self.holders or self.holders[-1] != lease:
                self.holders.append(lease)
            time.sleep(0.1)

    def finish(self) -> list[str]:
        self.stop.set()
        self.thread.join(timeout=30)
        return self.holders


def images_of(kubectl: Kubectl, selector: str, name: str) -> set[str]:
    """The images named `name@...` (Stackube's, not upstream's CSI sidecars beside it)
    that the workload's pods run."""
    pods = kubectl.json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"]
    found = {c["image"] for p in pods for c in p["spec"]["containers"]}
    return {image for image in found if image.startswith(f"{name}@")}


def test_a_new_image_rolls_to_every_component_and_a_service_keeps_answering(
    devbox: Devbox, kubectl: Kubectl, live_tenant: LiveTenant
) -> None:
    """A new image in the overlay, `kubectl apply -k`: every component rolls to it,
    while the live tenant's client asks its nginx Service every 100 ms, and the
    controller's Lease passes from the old pod to the new."""
    components = PodComponents(devbox.settings)
    original = components.image()
    name, _, digest = original.partition("@")
    repository = name.split("/", 1)[1]
    variant = f"{name}@" + images.relabel(
        devbox.settings.registry_url, repository, digest, {"stackube.test/rollout": "1"}
    )
    assert variant != original
    ip = kubectl.json("-n", live_tenant.name, "get", "service", "nginx")["spec"]["clusterIP"]
    asked: list[str] = []

    def ask() -> None:  # ~60 s of requests from the tenant's own client pod
        done = kubectl.run(
            "-n", live_tenant.name, "exec", "client", "--", "sh", "-c",
            ASKER.format(ip=ip, interval=INTERVAL, count=500), check=False, timeout=300,
        )  # fmt: skip
        asked.extend(done.stdout.split())

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    time.sleep(3)  # the client is asking
    watch = LeaseWatch(kubectl)
    started = time.monotonic()
    try:
        components.apply(variant)
        rolled = time.monotonic() - started
    finally:
        holders = watch.finish()
        asker.join(timeout=300)
    try:
        for item in COMPONENTS:
            assert images_of(kubectl, item.selector, name) == {variant}, item.ref
        failed = asked.count("fail")
        worst, run = 0, 0
        for answer in asked:
            run = run + 1 if answer == "fail" else 0
            worst = max(worst, run)
        print(
            f"rollout of {len(COMPONENTS)} components in {rolled:.1f} s: {failed} of "
            f"{len(asked)} requests failed (longest run {worst}); lease holders {holders}"
        )
        assert len(asked) >= 400, "the client was not asking throughout"
        # A failed request costs at most its 1 s timeout + 0.1 s: at most ~2 s of loss.
        assert failed <= 2, asked
        # The old leader, then the new one, each once (with one replica and maxSurge 0
        # a second pod cannot even start before the first is gone: this shows the
        # handover, which the Lease alone could not show doubled).
        named = [h for h in holders if h]
        assert len(named) == 2 and len(set(named)) == 2, holders
    finally:
        components.apply(original)
    assert images_of(kubectl, COMPONENTS[0].selector, name) == {original}


Ref = tuple[str, str, str]  # (kind.group, namespace, name)


def refs(rendered: str) -> dict[Ref, dict[str, Any]]:
    found = {}
    for doc in yaml.safe_load_all(rendered):
        if doc:
            group = doc["apiVersion"].rpartition("/")[0]
            kind = doc["kind"].lower() + (f".{group}" if group else "")
            found[(kind, doc["metadata"].get("namespace", ""), doc["metadata"]["name"])] = doc
    return found


def exists(kubectl: Kubectl, ref: Ref) -> bool:
    kind, namespace, name = ref
    where = ["-n", namespace] if namespace else []
    done = kubectl.run(*where, "get", f"{kind}/{name}", "--ignore-not-found", "-o", "name")
    return bool(done.stdout.strip())


def helm_env(home: Path) -> dict[str, str]:
    """Helm's own directories in `home` (data with plugins, configuration, cache)."""
    return {
        **os.environ,
        # (not HELM_PLUGINS: helm 4.3 installs into $HELM_DATA_HOME/plugins whatever it says)
        **{f"HELM_{what}": str(home / what.lower()) for what in
           ("CONFIG_HOME", "DATA_HOME", "CACHE_HOME")},
    }  # fmt: skip


def run_helm(devbox: Devbox, tmp_path: Path, *args: str, check: bool = True) -> None:
    """helm (built from the Go module proxy) with its own directories under `tmp_path`."""
    done = subprocess.run(
        [str(helm.ensure(devbox.settings)), f"--kubeconfig={devbox.settings.admin_kubeconfig}",
         *args], env=helm_env(tmp_path / "helm"), capture_output=True, text=True, timeout=600,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0 or not check, done.stdout + done.stderr


def helm_install(devbox: Devbox, components: PodComponents, image: str, tmp_path: Path) -> None:
    """`helm install` of the chart with the devbox's values, its overlay as the
    post-renderer (node paths, one replica, the webhook's TLS)."""
    plugin = components.helm_post_renderer(image, tmp_path)
    run_helm(devbox, tmp_path, "plugin", "install", str(plugin))
    stackube = devbox.settings.state_dir / "stackube"
    repository, _, digest = image.partition("@")
    values = {
        "config": {p.name: p.read_text().strip() for p in (stackube / "config").iterdir()},
        "credentials": {p.name: p.read_text().strip() for p in (stackube / "secret").iterdir()},
        "image": {"repository": repository, "digest": digest},
    }
    values_file = tmp_path / "values.yaml"
    values_file.write_text(yaml.safe_dump(values))
    values_file.chmod(0o600)
    # --take-ownership and --force-conflicts: what the install before kept is not Helm's
    # (its fields have other managers: Helm 4 applies server-side).
    run_helm(
        devbox, tmp_path, "install", "stackube", str(CHART), "--namespace", NAMESPACE,
        "--take-ownership", "--force-conflicts", f"--values={values_file}",
        f"--post-renderer={HELM_PLUGIN}",
    )  # fmt: skip


def test_uninstall_keeps_only_what_it_should_and_seed_files_or_helm_install_stackube(
    devbox: Devbox, kubectl: Kubectl, os_admin: Connection, tmp_path: Path
) -> None:
    """delete -k -> only the kept objects; the seed's files -> a new tenant works;
    delete -k -> the tenant stays; helm install -> its pods start in the kept tenant,
    which is then deleted cleanly; helm uninstall -> only the kept objects again."""
    components = PodComponents(devbox.settings)
    image = components.image()
    name = f"seed-{secrets.token_hex(3)}"
    objects = refs(kubectl.run("kustomize", str(components.write_overlay(image))).stdout)
    kept = {r for r, doc in objects.items() if doc["metadata"].get("labels", {}).get(
        KEEP_ON_UNINSTALL) == "true"}  # fmt: skip

    def stackube_pods() -> list[str]:
        pods = kubectl.json("-n", NAMESPACE, "get", "pods")["items"]
        return [
            p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith("stackube-")
        ]

    def uninstalled() -> None:
        left = {r for r in objects if exists(kubectl, r)}
        assert left == kept, sorted(left - kept)
        # The workloads are gone; their pods end with their grace period (`helm
        # uninstall --wait` waits for the objects it deleted, not for their pods).
        eventually(lambda: not stackube_pods(), 120, "Stackube's pods gone")

    try:
        # The CRDs (Tenants, Networks) and what the tenants' DNS servers need.
        assert {r[2] for r in kept} == {
            "tenants.stackube.kubernetes.io", "networks.stackube.kubernetes.io", "stackube-dns",
            "tenant-dns", "stackube:tenant-dns",
        }  # fmt: skip
        assert len(kept) == 6, kept  # the ClusterRole and its binding
        assert all(exists(kubectl, r) for r in objects)  # control: the check sees them
        components.uninstall()
        uninstalled()
        # The system's Network stays with the CRDs.
        assert kubectl.json("-n", NAMESPACE, "get", "network", "system")["metadata"]

        # The seed's guide: `kubectl create -f` of its three files (here the devbox's
        # copies of them, with its configuration and node paths).
        created = kubectl.run(
            "create", "-k", str(components.write_overlay(image, base="seed")), check=False
        )
        refused = [line for line in created.stderr.splitlines() if line.strip()]
        assert all("AlreadyExists" in line for line in refused), created.stderr
        assert len(refused) == len(kept), created.stderr  # only what stayed
        components.wait_ready(COMPONENTS)
        make_tenant(kubectl, name)
        kubectl.run("-n", name, "run", "nginx", "--image=nginx")
        eventually(lambda: running_pods(kubectl, name, "nginx"), 180, "nginx Running")

        components.uninstall()
        uninstalled()
        assert running_pods(kubectl, name, "nginx"), "the tenant's pod did not outlive Stackube"

        helm_install(devbox, components, image, tmp_path)
        components.wait_ready(COMPONENTS)
        kubectl.run("-n", name, "run", "nginx2", "--image=nginx")
        eventually(lambda: running_pods(kubectl, name, "nginx2"), 180, "nginx2 Running")
        delete_tenants(kubectl, os_admin, [name])  # by the controller Helm installed
        run_helm(devbox, tmp_path, "uninstall", "stackube", "--namespace", NAMESPACE, "--wait")
        uninstalled()
    finally:
        # No release left for the next run (after a failure: gone already, or failed).
        run_helm(devbox, tmp_path, "uninstall", "stackube", "--namespace", NAMESPACE,
                 "--ignore-not-found", "--wait", check=False)  # fmt: skip
        devbox.up()  # the devbox's own deployment again (server-side apply takes them over)
        delete_tenants(kubectl, os_admin, [name])
