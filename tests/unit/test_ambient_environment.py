"""The devbox's programs never inherit what points clients at another cloud or cluster."""

import pytest

from stackube.devbox.process import service_environ

pytestmark = pytest.mark.unit


def test_os_and_kubeconfig_variables_are_dropped_and_the_rest_kept() -> None:
    shell = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "OS_CLOUD": "production",
        "OS_CLIENT_CONFIG_FILE": "/etc/openstack/clouds.yaml",
        "OS_AUTH_URL": "https://keystone.example/v3",
        "OS_PASSWORD": "secret",
        "KUBECONFIG": "/root/.kube/production",
        "STACKUBE_DEVBOX_DIR": "/var/lib/stackube-devbox",
        "COS_THING": "not an OS_ variable",
    }
    assert service_environ(shell) == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "STACKUBE_DEVBOX_DIR": "/var/lib/stackube-devbox",
        "COS_THING": "not an OS_ variable",
    }
