"""The e2e tier: the devbox with its node, driven with kubectl as a person would."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from stackube.devbox.components import COMPONENTS, PodComponents
from stackube.openstack.cloud import connect_cloud
from tests.e2e.kubectl import Kubectl


@pytest.fixture(scope="session")
def kubectl(devbox: Devbox) -> Iterator[Kubectl]:
    tool = Kubectl(devbox.settings.admin_kubeconfig)
    # The integration tier cordons the node for its own netns pods; here pods are real.
    subprocess.run(tool.argv("uncordon", devbox.settings.node_name), check=False)
    if devbox.pods_mode:  # a Deployment resumed while the node was cordoned starts now
        PodComponents(devbox.settings).wait_ready(COMPONENTS)
    yield tool


@pytest.fixture(scope="session")
def os_admin(devbox: Devbox) -> Connection:
    return connect_cloud("devbox-admin", devbox.settings.clouds_yaml)
