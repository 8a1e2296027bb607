"""Fixtures for tests on the real services of the devbox.

The session reuses a healthy devbox or brings one up (`stackube devbox up` is
idempotent and quick when warm). Every test cleans up after itself and the helpers
here assert it.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field

import pytest
from kubernetes import client as k8s
from openstack.connection import Connection

from stackube.api.manifests import cni_rbac
from stackube.devbox.box import Devbox
from stackube.host import netlink
from stackube.kube import apply
from stackube.kube.client import api_client
from stackube.openstack.cloud import connect_cloud
from tests.integration.cni_harness import (
    CniNode,
    PodIdentity,
    Sandboxes,
    create_tenant,
    delete_tenant,
    network_id_of,
    node_of_its_own,
    our_ports,
    wait_for,
)
from tests.integration.controller_harness import (
    Controller,
    apply_crds,
    apply_rbac,
    devbox_controller_paused,
    node_cordoned,
    service_account_kubeconfig,
    write_config,
)


@pytest.fixture(scope="session")
def kube(devbox: Devbox) -> Iterator[k8s.ApiClient]:
    api = api_client(devbox.settings.admin_kubeconfig)
    yield api
    api.close()


@pytest.fixture(scope="module", autouse=True)
def devbox_node_cordoned(devbox: Devbox, kube: k8s.ApiClient) -> Iterator[None]:
    """This tier's pods are netns sandboxes from its own CNI daemons: the devbox's node
    takes no pods meanwhile (DNS servers of the tenants made here stay Pending, which
    also keeps tenant deletion from waiting on them). The e2e tier uses the node."""
    with node_cordoned(kube, devbox.settings.node_name):
        yield


@pytest.fixture(scope="module")
def harness(
    devbox: Devbox, kube: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Controller]:
    """Runs stackube-controller processes for a test module (the devbox's own controller
    is paused meanwhile), with the ServiceAccount's least-privilege RBAC."""
    apply_crds(kube)
    apply_rbac(kube)
    directory = tmp_path_factory.mktemp("controller")
    kubeconfig = service_account_kubeconfig(kube, devbox, directory / "kubeconfig")
    config_dir, secret_dir = write_config(devbox, directory)
    harness = Controller(kubeconfig, config_dir, secret_dir, directory)
    with devbox_controller_paused(devbox):
        yield harness
        harness.stop_all()


@pytest.fixture(scope="session")
def os_admin(devbox: Devbox) -> Connection:
    return connect_cloud("devbox-admin", devbox.settings.clouds_yaml)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


@dataclass
class Pod:
    """A throwaway network namespace standing in for a pod."""

    namespace: str
    host_ifname: str

    def run(self, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@dataclass
class Pods:
    stack: ExitStack
    made: list[Pod] = field(default_factory=list)

    def make(
        self, host_ifname: str, *, mac: str, mtu: int, address: str, gateway: str | None
    ) -> Pod:
        name = unique("stkb-pod")
        netlink.create_namespace(name)
        self.stack.callback(netlink.delete_namespace, name)
        self.stack.callback(netlink.delete_links, [host_ifname])
        netlink.plug_veth_into_namespace(
            host_ifname, name, mac=mac, mtu=mtu, address=address, gateway=gateway
        )
        pod = Pod(name, host_ifname)
        self.made.append(pod)
        return pod


@pytest.fixture
def pods() -> Iterator[Pods]:
    """Makes netns "pods"; removes them and their host links whatever the test did,
    then asserts that nothing is left."""
    with ExitStack() as stack:
        helper = Pods(stack)
        yield helper
    leftovers = set(netlink.namespaces()) & {p.namespace for p in helper.made}
    leftover_links = set(netlink.link_names()) & {p.host_ifname for p in helper.made}
    assert not leftovers and not leftover_links, (leftovers, leftover_links)


# ---- kubestack: a CNI node, tenants, netns sandboxes ------------------------------------------
@pytest.fixture(scope="module")
def node(
    devbox: Devbox, kube: k8s.ApiClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CniNode]:
    apply_crds(kube)
    apply.server_side_apply(kube, cni_rbac(), "stackube-tests")
    root = tmp_path_factory.mktemp("cni")
    kubeconfig = service_account_kubeconfig(kube, devbox, root / "kubeconfig", "stackube-cni")
    config_dir, secret_dir = write_config(devbox, root)
    cni = node_of_its_own(devbox, root, kubeconfig, config_dir, secret_dir, "cnitest")
    # Beside the devbox's own daemon, under its own node identity: it never touches
    # the devbox's pods (the live tenant's check at the end of the run proves it).
    cni.start()
    yield cni
    cni.stop()


@pytest.fixture(scope="module")
def tenants(kube: k8s.ApiClient, node: CniNode, os_admin: Connection) -> Iterator[dict[str, str]]:
    """Two tenants with the same CIDR (tenant-cidr, 10.245.0.0/16): namespace -> network id."""
    names = [f"cni-a-{secrets.token_hex(2)}", f"cni-b-{secrets.token_hex(2)}"]
    for name in names:
        create_tenant(kube, name)
    found = {
        n: wait_for(lambda n=n: network_id_of(kube, n), 90, f"Network {n} Active") for n in names
    }
    yield found
    for name in names:
        delete_tenant(kube, name)
    assert not our_ports(os_admin, set(found.values()))


@pytest.fixture
def sandboxes() -> Iterator[Sandboxes]:
    made = Sandboxes()
    yield made
    made.remove_all()


Attach = Callable[[str], tuple[PodIdentity, str, dict[str, object]]]


@pytest.fixture
def attach(node: CniNode, sandboxes: Sandboxes) -> Iterator[Attach]:
    """ADD a new pod of a namespace; every pod attached is DELeted at the end."""
    attached: list[tuple[PodIdentity, str]] = []

    def add(namespace: str) -> tuple[PodIdentity, str, dict[str, object]]:
        pod, netns = PodIdentity.new(namespace), sandboxes.new()
        run = node.invoke("ADD", pod, netns)
        assert run.code == 0, (run.output, run.stderr, node.logs()[-2000:])
        attached.append((pod, netns))
        return pod, netns, run.output

    yield add
    for pod, netns in attached:
        assert node.invoke("DEL", pod, netns).code == 0
