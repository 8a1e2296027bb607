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

    def apply(self, manifest: str) -> None:
        done = self.kubectl("-n", self.name, "apply", "-f", "-", stdin=manifest)
        assert done.returncode == 0, done.stderr

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
    """The node's rbd-fuse mount and loop device of this volume (the pod's mount of the
    loop device goes with the loop device)."""
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if volume_id in line]
    loops = subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "NAME,BACK-FILE"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout.splitlines()  # fmt: skip
    return mounts + [line for line in loops if volume_id in line]


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


def test_a_pod_cannot_name_another_pod_in_its_volume_options(
    tenants: list[VolumeTenant], devbox: Devbox, tmp_path: Path
) -> None:
    """kubelet passes a pod's own flexVolume options after its own: a pod setting
    kubernetes.io/pod.namespace to the volume owner's namespace is refused by the API's
    validation, and the driver (called as kubelet would, with the forged options)
    refuses it too, should a pod ever carry them."""
    owner, intruder = tenants
    volume_id = str(owner.openstack("volume", "create", "--size", "1", "forged")["id"])
    forged = json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "forged"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox",
                            "volumeMounts": [{"name": "d", "mountPath": "/d"}]}],
            "volumes": [{"name": "d", "flexVolume": {
                "driver": "cinder/flexvolume_driver",
                "options": {"volumeID": volume_id, "kubernetes.io/pod.namespace": owner.name,
                            "kubernetes.io/pod.name": "mine"}}}],
        },
    })  # fmt: skip
    done = intruder.kubectl("-n", intruder.name, "apply", "-f", "-", stdin=forged)
    assert done.returncode != 0
    # Kubernetes' own validation reserves those keys in a pod's options.
    assert "kubernetes.io and k8s.io namespaces are reserved" in done.stderr

    owners_pod = idle_pod(owner, "mine")
    intruders_pod = idle_pod(intruder, "forged")
    mount_dir = tmp_path / "pods" / intruders_pod / "volumes" / "cinder~flexvolume_driver" / "d"
    options = {
        "volumeID": volume_id,
        "kubernetes.io/pod.namespace": owner.name,
        "kubernetes.io/pod.name": "mine",
        "kubernetes.io/pod.uid": owners_pod,
    }
    refused = driver(devbox, "mount", str(mount_dir), json.dumps(options))
    assert refused["status"] == "Failure"
    assert "may not name another namespace or pod" in refused["message"]
    assert owner.volume_status(volume_id) == "available"
    # Positive control: the owner's own pod, in its own directory, gets the volume.
    own_dir = tmp_path / "pods" / owners_pod / "volumes" / "cinder~flexvolume_driver" / "d"
    assert driver(devbox, "mount", str(own_dir), json.dumps(options))["status"] == "Success"
    assert owner.volume_status(volume_id) == "in-use"
    assert driver(devbox, "unmount", str(own_dir))["status"] == "Success"
    assert owner.volume_status(volume_id) == "available"


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


IDLE_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
"""


def idle_pod(user: VolumeTenant, name: str) -> str:
    """A pod of this tenant (made if missing; it need not run): its UID."""
    user.apply(IDLE_POD.format(name=name))
    done = user.kubectl("-n", user.name, "get", "pod", name, "-o", "jsonpath={.metadata.uid}")
    return done.stdout.strip()


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
    pod_uid = idle_pod(owner, "crash")
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


PVC = """
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
{extra}
"""
CLAIM_POD = """
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1{runtime}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"""


def claim_phase(user: VolumeTenant, claim: str) -> str:
    done = user.kubectl("-n", user.name, "get", "pvc", claim, "-o", "jsonpath={.status.phase}")
    return done.stdout


def rbd_images(devbox: Devbox) -> list[str]:
    conf = devbox.settings.state_dir / "ceph" / "ceph.conf"
    done = subprocess.run(
        ["rbd", "-c", str(conf), "ls", "volumes"], capture_output=True, text=True, timeout=60,
        check=True,
    )  # fmt: skip
    return done.stdout.split()


def test_a_claim_gets_a_cinder_volume_of_the_tenant_and_keeps_data(
    tenants: list[VolumeTenant], devbox: Devbox, kubectl: Kubectl, os_admin: Connection
) -> None:
    owner = tenants[0]
    owner.apply(PVC.format(name="data", extra=""))
    eventually(lambda: claim_phase(owner, "data") == "Bound", 120, "the claim Bound")
    volume_name = owner.kubectl(
        "-n", owner.name, "get", "pvc", "data", "-o", "jsonpath={.spec.volumeName}"
    ).stdout
    volume_id = kubectl.run(
        "get", "pv", volume_name, "-o", "jsonpath={.spec.csi.volumeHandle}"
    ).stdout
    # The tenant's own volume: its user sees it, in its project.
    shown = owner.openstack("volume", "show", volume_id)
    project = kubectl.json("get", "tenant", owner.name)["status"]["projectID"]
    assert os_admin.block_storage.get_volume(volume_id).project_id == project
    assert shown["size"] == 1
    assert f"volume-{volume_id}" in rbd_images(devbox)

    proof = f"claimed-{secrets.token_hex(4)}"
    for pod, script in (
        ("writer", f"echo {proof} > /data/proof && sync"),
        ("reader", "cat /data/proof"),
    ):
        owner.apply(CLAIM_POD.format(name=pod, claim="data", runtime=""))
        eventually(lambda p=pod: owner.phase(p) == "Running", 180, f"{pod} Running")
        assert owner.volume_status(volume_id) == "in-use"
        done = owner.kubectl("-n", owner.name, "exec", pod, "--", "sh", "-c", script)
        assert done.returncode == 0, done.stderr
        if pod == "reader":
            assert done.stdout.strip() == proof
        owner.delete_pod(pod)

    assert owner.kubectl("-n", owner.name, "delete", "pvc", "data", "--wait=true").returncode == 0
    eventually(
        lambda: (
            os_admin.block_storage.find_volume(volume_id, ignore_missing=True, all_projects=True)
            is None
        ),
        180,
        "the Cinder volume deleted with its claim",
    )
    assert f"volume-{volume_id}" not in rbd_images(devbox)


def fuse_servers_of(volume_id: str) -> dict[int, str]:
    """{pid: its cgroups} of the rbd-fuse processes serving this volume on the node."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if (
                proc.name.isdigit()
                and argv[0].endswith(b"rbd-fuse")
                and any(volume_id.encode() in a for a in argv)
            ):
                found[int(proc.name)] = (proc / "cgroup").read_text()
        except OSError:
            continue
    return found


def test_a_claims_mount_outlives_a_restart_of_the_node_plugin(
    tenants: list[VolumeTenant], devbox: Devbox, kubectl: Kubectl, os_admin: Connection
) -> None:
    """The node plugin's pod replaced (a crash, a rollout) while a pod uses a claim: the
    rbd-fuse server under that pod's volume left the plugin's cgroups when it started, so
    the pod reads and writes its volume on, and the new plugin unstages it afterwards."""
    if not devbox.pods_mode:
        pytest.skip("the CSI node plugin is a host process here (STACKUBE_DEVBOX_COMPONENTS)")
    owner = tenants[0]
    owner.apply(PVC.format(name="kept", extra=""))
    eventually(lambda: claim_phase(owner, "kept") == "Bound", 120, "the claim Bound")
    volume_id = kubectl.run(
        "get", "pv", owner.kubectl(
            "-n", owner.name, "get", "pvc", "kept", "-o", "jsonpath={.spec.volumeName}"
        ).stdout, "-o", "jsonpath={.spec.csi.volumeHandle}",
    ).stdout  # fmt: skip
    owner.apply(CLAIM_POD.format(name="holder", claim="kept", runtime=""))
    eventually(lambda: owner.phase("holder") == "Running", 180, "holder Running")
    proof, more = f"before-{secrets.token_hex(4)}", f"after-{secrets.token_hex(4)}"
    done = owner.kubectl("-n", owner.name, "exec", "holder", "--", "sh", "-c",
                         f"echo {proof} > /data/proof && sync")  # fmt: skip
    assert done.returncode == 0, done.stderr
    servers = fuse_servers_of(volume_id)
    assert len(servers) == 1, servers
    ((pid, cgroups_before),) = servers.items()
    assert "kubepods" not in cgroups_before, cgroups_before  # the node's, not the pod's

    selector = "app.kubernetes.io/name=stackube-csi-node"
    before = kubectl.run("-n", "kube-system", "get", "pods", "-l", selector, "-o", "name").stdout
    assert kubectl.run(
        "-n", "kube-system", "delete", "pods", "-l", selector, "--wait=true", "--timeout=120s"
    ).returncode == 0  # fmt: skip
    done = kubectl.run(
        "-n", "kube-system", "rollout", "status", "daemonset/stackube-csi-node", "--timeout=120s"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    after = kubectl.run("-n", "kube-system", "get", "pods", "-l", selector, "-o", "name").stdout
    assert after.strip() and after != before  # a new plugin pod

    assert list(fuse_servers_of(volume_id)) == [pid]  # the same server, alive
    script = f"cat /data/proof && echo {more} >> /data/proof && sync && cat /data/proof"
    done = owner.kubectl("-n", owner.name, "exec", "holder", "--", "sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [proof, proof, more]

    # The new plugin undoes what the old one did.
    owner.delete_pod("holder")
    eventually(lambda: not node_mounts_of(volume_id), 120, "the volume unstaged on the node")
    assert not fuse_servers_of(volume_id)
    assert owner.kubectl("-n", owner.name, "delete", "pvc", "kept", "--wait=true").returncode == 0
    eventually(
        lambda: (
            os_admin.block_storage.find_volume(volume_id, ignore_missing=True, all_projects=True)
            is None
        ),
        180,
        "the Cinder volume deleted with its claim",
    )


def test_a_claim_mounts_into_gvisor_pods_and_holds_what_they_write(
    tenants: list[VolumeTenant],
) -> None:
    """The same Cinder volume in gVisor pods: the node mounts it as for runc, and the
    sandbox's Gofer serves that mount to the Sentry (gVisor has no block devices). What a
    gVisor pod writes is on the volume: a runc pod reads it, and a gVisor pod reads
    what the runc pod added."""
    owner = tenants[1]
    owner.apply(PVC.format(name="sandboxed", extra=""))
    eventually(lambda: claim_phase(owner, "sandboxed") == "Bound", 120, "the claim Bound")
    proof, more = f"written-{secrets.token_hex(4)}", f"appended-{secrets.token_hex(4)}"
    gvisor = "\n  runtimeClassName: gvisor"
    for pod, runtime, script, want in (
        ("gv-writer", gvisor, f"uname -r; echo {proof} > /data/proof && sync", "gvisor"),
        ("runc-reader", "", f"cat /data/proof; echo {more} >> /data/proof && sync", proof),
        ("gv-reader", gvisor, "uname -r; cat /data/proof", f"{proof}\n{more}"),
    ):
        owner.apply(CLAIM_POD.format(name=pod, claim="sandboxed", runtime=runtime))
        eventually(lambda p=pod: owner.phase(p) == "Running", 180, f"{pod} Running")
        done = owner.kubectl("-n", owner.name, "exec", pod, "--", "sh", "-c", script)
        assert done.returncode == 0, done.stderr
        assert want in done.stdout, (pod, done.stdout)
        # The runtime each pod had: gVisor's kernel, or (runc) no uname asked.
        assert ("gvisor" in done.stdout.splitlines()[0]) == bool(runtime), done.stdout
        owner.delete_pod(pod)
    deleted = owner.kubectl("-n", owner.name, "delete", "pvc", "sandboxed", "--wait=true")
    assert deleted.returncode == 0, deleted.stderr


def test_a_claim_over_the_tenants_cinder_quota_stays_pending_and_says_so(
    tenants: list[VolumeTenant], kubectl: Kubectl, os_admin: Connection
) -> None:
    user = tenants[1]
    project = kubectl.json("get", "tenant", user.name)["status"]["projectID"]
    before = os_admin.block_storage.get_quota_set(project).volumes
    os_admin.block_storage.update_quota_set(project, volumes=0)
    try:
        user.apply(PVC.format(name="over", extra=""))

        def quota_event() -> str | None:
            events = user.events_of("over")
            return events if "quota" in events.lower() else None

        events = eventually(quota_event, 120, "an Event naming the Cinder quota")
        assert "ProvisioningFailed" in events
        assert claim_phase(user, "over") == "Pending"
    finally:
        os_admin.block_storage.update_quota_set(project, volumes=before)
    # Positive control: with room in the quota, the same claim is provisioned.
    eventually(lambda: claim_phase(user, "over") == "Bound", 180, "the claim Bound once allowed")
    user.kubectl("-n", user.name, "delete", "pvc", "over", "--wait=true")


def test_another_tenants_volume_behind_a_claim_is_refused_at_the_node(
    tenants: list[VolumeTenant], kubectl: Kubectl
) -> None:
    """A PersistentVolume an admin made for the first tenant's volume, claimed by name
    from the second tenant: the node refuses to mount it into the second tenant's pod."""
    owner, intruder = tenants
    volume_id = str(owner.openstack("volume", "create", "--size", "1", "static")["id"])
    eventually(lambda: owner.volume_status(volume_id) == "available", 120, "volume available")
    pv = f"static-{volume_id[:8]}"
    kubectl.run("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "csi": {"driver": "cinder.stackube.kubernetes.io", "volumeHandle": volume_id,
                    "fsType": "ext4"},
        },
    }))  # fmt: skip
    try:
        claim = PVC.format(name="stolen", extra=f"  storageClassName: ''\n  volumeName: {pv}")
        intruder.apply(claim)
        eventually(lambda: claim_phase(intruder, "stolen") == "Bound", 60, "the claim Bound")
        intruder.apply(CLAIM_POD.format(name="thief", claim="stolen", runtime=""))
        message = "not a volume of this tenant's project"
        eventually(lambda: message in intruder.events_of("thief"), 180, "the node's refusal")
        assert intruder.phase("thief") == "Pending"
    finally:
        intruder.kubectl("-n", intruder.name, "delete", "pod", "thief", "--wait=true")
        intruder.kubectl("-n", intruder.name, "delete", "pvc", "stolen", "--wait=true")
        kubectl.run("delete", "pv", pv, "--wait=true")
    eventually(lambda: owner.volume_status(volume_id) == "available", 180, "detached again")


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
