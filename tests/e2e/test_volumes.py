"""The seed's volume.rst on the devbox: a tenant's Keystone user makes a Cinder volume with
`openstack volume create`, mounts it into the seed's `web` Pod with the FlexVolume
driver `cinder/flexvolume_driver`, and finds its data again in a new pod; Cinder shows
the volume in-use while mounted and available after. Another tenant naming that volume
is refused by the driver (checked against Cinder), and nothing gets attached for it."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openstack.connection import Connection

from stackube.devbox.box import Devbox
from tests.e2e.kubectl import Kubectl, eventually, side_by_side
from tests.e2e.test_network_policy import TenantUser
from tests.e2e.test_user_guide import delete_tenants, make_tenant

pytestmark = pytest.mark.e2e

# The seed's Pod, as volume.rst has it (volumeID filled in).
WEB_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: nginx
spec:
  containers:
  - name: nginx
    image: nginx
    ports:
    - containerPort: 80
    volumeMounts:
    - name: nginx-persistent-storage
      mountPath: /var/lib/nginx
  volumes:
  - name: nginx-persistent-storage
    flexVolume:
      driver: "cinder/flexvolume_driver"
      fsType: ext4
      options:
        volumeID: {volume_id}
"""


class VolumeTenant(TenantUser):
    """kubectl and the openstack CLI as the tenant's own Keystone user."""

    def __init__(self, devbox: Devbox, tenant: str, directory: Path) -> None:
        super().__init__(devbox, tenant, directory)
        self.name = tenant
        self.os_env = {
            "PATH": self.env["PATH"],
            "HOME": self.env["HOME"],
            "OS_AUTH_URL": devbox.settings.keystone_url,
            "OS_USERNAME": tenant,
            "OS_PASSWORD": "password",
            "OS_PROJECT_NAME": tenant,
            "OS_USER_DOMAIN_NAME": "stackube",
            "OS_PROJECT_DOMAIN_NAME": "stackube",
            "OS_IDENTITY_API_VERSION": "3",
            "OS_VOLUME_API_VERSION": "3",
            "OS_REGION_NAME": devbox.settings.region,
        }

    def openstack(self, *args: str) -> Any:
        done = subprocess.run(
            ["openstack", *args, "-f", "json"], capture_output=True, text=True,
            env=self.os_env, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, f"openstack {' '.join(args)}: {done.stderr}"
        return json.loads(done.stdout)

    def volume_status(self, volume_id: str) -> str:
        return str(self.openstack("volume", "show", volume_id)["status"])

    def apply_pod(self, name: str, volume_id: str) -> subprocess.CompletedProcess[str]:
        return self.kubectl(
            "-n", self.name, "apply", "-f", "-",
            stdin=WEB_POD.format(name=name, volume_id=volume_id),
        )  # fmt: skip

    def phase(self, pod: str) -> str:
        done = self.kubectl("-n", self.name, "get", "pod", pod, "-o", "jsonpath={.status.phase}")
        return done.stdout

    def delete_pod(self, pod: str) -> None:
        done = self.kubectl("-n", self.name, "delete", "pod", pod, "--wait=true", "--timeout=120s")
        assert done.returncode == 0, done.stderr

    def events_of(self, pod: str) -> str:
        template = "jsonpath={range .items[*]}{.reason}: {.message}\n{end}"
        done = self.kubectl(
            "-n", self.name, "get", "events", "--field-selector",
            f"involvedObject.name={pod}", "-o", template,
        )  # fmt: skip
        return done.stdout


@pytest.fixture(scope="module")
def tenants(
    devbox: Devbox, kubectl: Kubectl, os_admin: Connection, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[VolumeTenant]]:
    suffix = secrets.token_hex(3)
    names = [f"vol-a-{suffix}", f"vol-b-{suffix}"]
    directory = tmp_path_factory.mktemp("volume-tenants")
    try:
        side_by_side(lambda name: make_tenant(kubectl, name), names)
        yield [VolumeTenant(devbox, name, directory) for name in names]
    finally:
        delete_tenants(kubectl, os_admin, names)


def attachments(os_admin: Connection, volume_id: str) -> list[Any]:
    return list(os_admin.block_storage.attachments(volume_id=volume_id, all_projects=True))


def node_mounts_of(volume_id: str) -> list[str]:
    return [line for line in Path("/proc/mounts").read_text().splitlines() if volume_id in line]


def test_the_seeds_volume_pod_keeps_its_data(tenants: list[VolumeTenant]) -> None:
    owner = tenants[0]
    volume = owner.openstack("volume", "create", "--size", "1", "web-data")
    volume_id = str(volume["id"])
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume available")

    assert owner.apply_pod("web", volume_id).returncode == 0
    eventually(lambda: owner.phase("web") == "Running", 180, "web Running with its volume")
    assert owner.volume_status(volume_id) == "in-use"
    proof = f"written-{secrets.token_hex(4)}"
    wrote = owner.kubectl(
        "-n", owner.name, "exec", "web", "--",
        "sh", "-c", f"echo {proof} > /var/lib/nginx/proof && sync && df -T /var/lib/nginx",
    )  # fmt: skip
    assert wrote.returncode == 0, wrote.stderr
    assert "ext4" in wrote.stdout or "/dev/loop" in wrote.stdout, wrote.stdout

    owner.delete_pod("web")
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume detached")
    assert node_mounts_of(volume_id) == []

    assert owner.apply_pod("web-again", volume_id).returncode == 0
    eventually(lambda: owner.phase("web-again") == "Running", 180, "the second pod Running")
    read = owner.kubectl("-n", owner.name, "exec", "web-again", "--", "cat", "/var/lib/nginx/proof")
    assert read.stdout.strip() == proof
    owner.delete_pod("web-again")
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume detached")


def test_another_tenants_volume_is_refused(
    tenants: list[VolumeTenant], os_admin: Connection
) -> None:
    owner, intruder = tenants
    volume_id = str(owner.openstack("volume", "create", "--size", "1", "private")["id"])
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume available")

    assert intruder.apply_pod("steal", volume_id).returncode == 0
    message = "not a volume of this tenant's project"

    def refusal() -> str | None:
        events = intruder.events_of("steal")
        return events if message in events else None

    events = eventually(refusal, 120, "a FailedMount event naming the refusal")
    assert "FailedMount" in events
    assert intruder.phase("steal") == "Pending"
    assert attachments(os_admin, volume_id) == []
    assert owner.volume_status(volume_id) == "available"
    assert node_mounts_of(volume_id) == []
    intruder.delete_pod("steal")

    # Positive control: the owner's pod mounts the very same volume.
    assert owner.apply_pod("mine", volume_id).returncode == 0
    eventually(lambda: owner.phase("mine") == "Running", 180, "the owner's pod Running")
    assert owner.volume_status(volume_id) == "in-use"
    owner.delete_pod("mine")
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume detached")


def test_other_flexvolume_drivers_stay_forbidden(tenants: list[VolumeTenant]) -> None:
    owner = tenants[0]
    manifest = WEB_POD.format(name="other-driver", volume_id="x").replace(
        "cinder/flexvolume_driver", "example.com/nfs"
    )
    done = owner.kubectl("-n", owner.name, "apply", "-f", "-", stdin=manifest)
    assert done.returncode != 0
    assert "volumes of these types are not allowed" in done.stderr
    # Control: the same manifest with Stackube's driver is admitted (the driver judges it).
    admitted = owner.kubectl(
        "-n", owner.name, "apply", "--dry-run=server", "-f", "-",
        stdin=WEB_POD.format(name="other-driver", volume_id="x"),
    )  # fmt: skip
    assert admitted.returncode == 0, admitted.stderr


def driver(devbox: Devbox, *args: str, crash: str | None = None) -> dict[str, Any]:
    """The installed driver, called as kubelet calls it (optionally killed after `crash`)."""
    path = devbox.settings.volume_plugin_dir / "cinder~flexvolume_driver" / "flexvolume_driver"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    if crash:
        env["STACKUBE_CRASH_AFTER"] = crash
    done = subprocess.run(
        [str(path), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if crash:
        assert done.returncode == 86, f"no crash at {crash}: {done.stdout}"
        return {}
    return dict(json.loads(done.stdout))


def records(devbox: Devbox) -> list[str]:
    return sorted(p.name for p in (devbox.settings.node_dir / "volumes" / "records").glob("*"))


@pytest.mark.parametrize(
    "step", ["volume-attachment-created", "volume-image-exposed", "volume-loop-attached"]
)
def test_a_driver_killed_mid_mount_converges(
    step: str, tenants: list[VolumeTenant], devbox: Devbox, os_admin: Connection, tmp_path: Path
) -> None:
    """Killed after `step`: kubelet's retry finishes the mount and unmount undoes it all;
    killed again and the pod gone (kubelet removed its directory), the next call of the
    driver undoes it all."""
    owner = tenants[0]
    volume_id = str(owner.openstack("volume", "create", "--size", "1", f"crash-{step}")["id"])
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume available")
    pod_uid = "5c1f3c3e-2f0e-4bb7-9d0e-" + secrets.token_hex(6)
    pod_dir = tmp_path / "pods" / pod_uid
    mount_dir = pod_dir / "volumes" / "cinder~flexvolume_driver" / "data"
    options = json.dumps(
        {
            "volumeID": volume_id,
            "kubernetes.io/fsType": "ext4",
            "kubernetes.io/readwrite": "rw",
            "kubernetes.io/pod.namespace": owner.name,
            "kubernetes.io/pod.name": "crash",
            "kubernetes.io/pod.uid": pod_uid,
        }
    )

    def nothing_left() -> None:
        assert owner.volume_status(volume_id) == "available"
        assert (
            list(os_admin.block_storage.attachments(volume_id=volume_id, all_projects=True)) == []
        )
        assert node_mounts_of(volume_id) == []
        assert f"{volume_id}.json" not in records(devbox)

    driver(devbox, "mount", str(mount_dir), options, crash=step)
    assert f"{volume_id}.json" in records(devbox)  # it did get that far
    assert driver(devbox, "mount", str(mount_dir), options)["status"] == "Success"
    assert str(mount_dir) in Path("/proc/mounts").read_text()
    (mount_dir / "proof").write_text("kept")
    assert owner.volume_status(volume_id) == "in-use"
    assert driver(devbox, "unmount", str(mount_dir))["status"] == "Success"
    nothing_left()

    driver(devbox, "mount", str(mount_dir), options, crash=step)
    assert owner.volume_status(volume_id) in ("in-use", "attaching", "reserved")
    subprocess.run(["rm", "-rf", str(pod_dir)], check=True)
    assert driver(devbox, "unmount", str(tmp_path / "another"))["status"] == "Success"
    nothing_left()


def test_deleting_a_tenant_deletes_its_volumes(
    tenants: list[VolumeTenant], kubectl: Kubectl, os_admin: Connection
) -> None:
    """Last in this module: the first tenant goes, with its volumes (one of them mounted
    by a pod until the namespace went)."""
    owner = tenants[0]
    project_id = kubectl.json("get", "tenant", owner.name)["status"]["projectID"]
    volume_id = str(owner.openstack("volume", "create", "--size", "1", "last")["id"])
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume available")
    assert owner.apply_pod("last", volume_id).returncode == 0
    eventually(lambda: owner.phase("last") == "Running", 180, "the pod Running")
    volumes = list(os_admin.block_storage.volumes(all_projects=True, project_id=project_id))
    assert volume_id in [v.id for v in volumes]  # the ones of earlier tests too

    delete_tenants(kubectl, os_admin, [owner.name])
    left = list(os_admin.block_storage.volumes(all_projects=True, project_id=project_id))
    assert left == []
    assert node_mounts_of(volume_id) == []
