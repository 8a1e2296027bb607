"""Every benchmark that uses the devbox runs with a live tenant beside it (DNS, nginx
and a client on the devbox's node): made before the benchmark, checked after it (it
must still answer with the very ports it had), deleted in any case."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from openstack.connection import Connection
from tests.e2e.kubectl import Kubectl
from tests.live_tenant import LiveTenant, live_tenant_kept

from stackube.devbox.box import Devbox
from stackube.devbox.settings import DevboxSettings
from stackube.openstack.cloud import connect_cloud


def with_live_tenant(main: Callable[[], int]) -> Callable[[], int]:
    @functools.wraps(main)
    def wrapped() -> int:
        devbox = Devbox(DevboxSettings.from_env())
        devbox.up()
        admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
        with live_tenant_kept(devbox.settings.admin_kubeconfig, admin):
            return main()

    return wrapped


@contextmanager
def started_tenant(name: str) -> Iterator[tuple[Devbox, Connection, LiveTenant, str]]:
    """The devbox (brought up), its admin connection, and a live tenant of that name
    started for a benchmark to work in, with its Keystone project id; the tenant is
    deleted afterwards in any case."""
    devbox = Devbox(DevboxSettings.from_env())
    devbox.up()
    admin = connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
    kubectl = Kubectl(devbox.settings.admin_kubeconfig)
    tenant = LiveTenant(kubectl, admin, name)
    try:
        tenant.start()
        project_id = str(kubectl.json("get", "tenant", tenant.name)["status"]["projectID"])
        yield devbox, admin, tenant, project_id
    finally:
        tenant.delete()
