"""Upgrading Stackube as an operator does (issue 15): a new image in the overlay,
`kubectl apply -k`, and every component rolls to it, while a tenant's client keeps
asking a Service every 100 ms, and while the controller never has two leaders."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator

import pytest
from openstack.connection import Connection

from stackube.devbox import images
from stackube.devbox.box import Devbox
from stackube.devbox.components import COMPONENTS, NAMESPACE, PodComponents
from tests.e2e.kubectl import Kubectl, eventually
from tests.e2e.test_services import expose, web_deployment
from tests.e2e.test_user_guide import delete_tenants, make_tenant, running_pods

pytestmark = pytest.mark.e2e

INTERVAL = 0.1  # seconds between the client's requests
# One request per line: "ok" or "fail", each given at most a second.
CLIENT = (
    "trap 'exit 0' TERM; while true; do "
    "if wget -q -T 1 -O /dev/null http://{ip}/; then echo ok; else echo fail; fi; "
    "sleep {interval}; done"
)


@pytest.fixture(scope="module")
def tenant(devbox: Devbox, kubectl: Kubectl, os_admin: Connection) -> Iterator[str]:
    if not devbox.pods_mode:
        pytest.skip("Stackube runs as host processes here (STACKUBE_DEVBOX_COMPONENTS=host)")
    name = f"roll-{secrets.token_hex(3)}"
    try:
        make_tenant(kubectl, name)
        web_deployment(kubectl, name)
        yield name
    finally:
        delete_tenants(kubectl, os_admin, [name])


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


def images_of(kubectl: Kubectl, selector: str) -> set[str]:
    pods = kubectl.json("-n", NAMESPACE, "get", "pods", "-l", selector)["items"]
    return {c["image"] for p in pods for c in p["spec"]["containers"]}


def test_a_new_image_rolls_to_every_component_and_the_service_keeps_answering(
    devbox: Devbox, kubectl: Kubectl, tenant: str
) -> None:
    components = PodComponents(devbox.settings)
    original = components.image()
    name, _, digest = original.partition("@")
    repository = name.split("/", 1)[1]
    variant = f"{name}@" + images.relabel(
        devbox.settings.registry_url, repository, digest, {"stackube.test/rollout": tenant}
    )
    assert variant != original
    service = expose(kubectl, tenant, "web", "ClusterIP")
    ip = service["spec"]["clusterIP"]
    kubectl.run(
        "-n", tenant, "run", "client", "--image=busybox", "--restart=Never",
        "--", "sh", "-c", CLIENT.format(ip=ip, interval=INTERVAL),
    )  # fmt: skip
    eventually(lambda: running_pods(kubectl, tenant, "client"), 120, "client Running")

    def answers() -> list[str]:
        return kubectl.run("-n", tenant, "logs", "client").stdout.split()

    eventually(lambda: "ok" in answers(), 60, "the Service answering the client")
    before = len(answers())
    watch = LeaseWatch(kubectl)
    started = time.monotonic()
    try:
        components.apply(variant)
        rolled = time.monotonic() - started
        time.sleep(5)  # the last pods settle with the client still asking
    finally:
        holders = watch.finish()
    during = answers()[before:]
    try:
        for item in COMPONENTS:
            assert images_of(kubectl, item.selector) == {variant}, item.ref
        failed = during.count("fail")
        worst, run = 0, 0
        for answer in during:
            run = run + 1 if answer == "fail" else 0
            worst = max(worst, run)
        print(
            f"rollout of {len(COMPONENTS)} components in {rolled:.1f} s: {failed} of "
            f"{len(during)} requests failed (longest run {worst}); lease holders {holders}"
        )
        assert len(during) >= rolled / 2, "the client was not asking throughout"
        # A failed request costs at most its 1 s timeout + 0.1 s: at most ~2 s of loss.
        assert failed <= 2, during
        # One leader at a time: the old one, then (perhaps after a release) the new one.
        named = [h for h in holders if h]
        assert len(named) <= 2 and len(set(named)) == len(named), holders
    finally:
        components.apply(original)
    assert images_of(kubectl, COMPONENTS[0].selector) == {original}
