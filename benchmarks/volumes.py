"""Cinder volumes in pods: how soon a pod with a volume runs, and how fast the volume is,
each side by side with its baseline in one run.

Run (root, devbox up):  python3 -m benchmarks.volumes [--rounds 10] [--megabytes 256]

- `start`: the seed's volume pod (a tenant's Cinder volume through the FlexVolume driver
  `cinder/flexvolume_driver`: attachment, rbd-fuse, loop, ext4 on first use, mount)
  created -> Running, the volume made beforehand by the tenant's user; baseline: the same
  pod with an emptyDir instead; and a PersistentVolumeClaim of the default StorageClass
  (`cinder`, the CSI driver) applied with its pod -> the pod Running. Each pod (and
  claim) is deleted (and its volume detached) before the next round.
- `throughput`: in one pod holding both, busybox `dd` writes `--megabytes` MiB with
  fsync, then reads them back after the node's page cache is dropped, on the volume and
  on the emptyDir (the node's own disk); in a runc pod, then in a gVisor pod (where the
  sandbox's Gofer serves both mounts to its Sentry, which keeps its own page cache: the
  node's drop_caches does not reach it); then the volume's file read again in a new pod
  of each runtime (cold: no sandbox cache).
Prints Markdown tables (seconds; MiB/s timed around `kubectl exec dd`).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tests.e2e.kubectl import Kubectl
from tests.integration.cni_harness import wait_for

from benchmarks.live import started_tenant
from benchmarks.stats import row
from stackube.openstack import cloud

POD = """apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  terminationGracePeriodSeconds: 1{runtime}
  containers:
  - name: c
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: scratch, mountPath: /scratch}}
  volumes:
  - name: data
    {volume}
  - name: scratch
    emptyDir: {{}}
"""
RUNTIMES = ("", "gvisor")  # runc (no RuntimeClass), gVisor
FLEX = (
    'flexVolume: {{driver: "cinder/flexvolume_driver", fsType: ext4, '
    "options: {{volumeID: {volume_id}}}}}"
)


def running(kubectl: Kubectl, namespace: str, name: str) -> bool:
    done = kubectl.run(
        "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False
    )
    return done.stdout == "Running"


def start_pod(kubectl: Kubectl, namespace: str, name: str, volume: str, runtime: str = "") -> float:
    started = time.monotonic()
    spec = f"\n  runtimeClassName: {runtime}" if runtime else ""
    manifest = POD.format(name=name, namespace=namespace, volume=volume, runtime=spec)
    kubectl.run("apply", "-f", "-", stdin=manifest)
    wait_for(lambda: running(kubectl, namespace, name), 180, f"{name} Running", interval=0.2)
    return time.monotonic() - started


CLAIM = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 1Gi}}}}
---
"""


def start_claim_pod(kubectl: Kubectl, namespace: str, name: str) -> float:
    """A claim of the default StorageClass and a pod using it, applied together ->
    the pod Running (CreateVolume in Cinder, attach, mkfs, mount)."""
    started = time.monotonic()
    volume = f"persistentVolumeClaim: {{claimName: {name}}}"
    manifest = CLAIM.format(name=name, namespace=namespace) + POD.format(
        name=name, namespace=namespace, volume=volume, runtime=""
    )
    kubectl.run("apply", "-f", "-", stdin=manifest)
    wait_for(lambda: running(kubectl, namespace, name), 300, f"{name} Running", interval=0.2)
    return time.monotonic() - started


def delete_pod(kubectl: Kubectl, namespace: str, name: str) -> None:
    kubectl.run("-n", namespace, "delete", "pod", name, "--wait=true", "--timeout=120s")


def dd(kubectl: Kubectl, namespace: str, pod: str, script: str, megabytes: int) -> float:
    """MiB/s of `script` (busybox dd prints no rate): timed around the exec, so the rate
    includes kubectl exec's own ~0.1-0.2 s."""
    started = time.monotonic()
    kubectl.run("-n", namespace, "exec", pod, "--", "sh", "-c", script, timeout=600)
    return megabytes / (time.monotonic() - started)


def throughput(kubectl: Kubectl, namespace: str, pod: str, megabytes: int) -> dict[str, float]:
    rates = {}
    for where in ("/data", "/scratch"):
        rates[f"write {where}"] = dd(
            kubectl, namespace, pod,
            f"dd if=/dev/zero of={where}/f bs=1M count={megabytes} conv=fsync", megabytes,
        )  # fmt: skip
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        rates[f"read {where}"] = dd(
            kubectl, namespace, pod, f"dd if={where}/f of=/dev/null bs=1M", megabytes
        )
    return rates


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--megabytes", type=int, default=256)
    args = parser.parse_args()
    with started_tenant("bench-vol") as (devbox, _admin, tenant, _project_id):
        spec = tenant.kubectl.json("get", "tenant", tenant.name)["spec"]
        user = cloud.connect(
            cloud.Credentials(
                devbox.settings.keystone_url, str(spec["username"]), str(spec["password"]),
                tenant.name, user_domain="stackube", project_domain="stackube",
            )
        )  # fmt: skip
        volume = user.block_storage.create_volume(size=1, name="bench")
        user.block_storage.wait_for_status(volume, "available", wait=120)
        flex, empty, claimed = [], [], []
        mount = FLEX.format(volume_id=volume.id)
        for n in range(args.rounds):
            flex.append(start_pod(tenant.kubectl, tenant.name, f"flex-{n}", mount))
            delete_pod(tenant.kubectl, tenant.name, f"flex-{n}")
            empty.append(start_pod(tenant.kubectl, tenant.name, f"empty-{n}", "emptyDir: {}"))
            delete_pod(tenant.kubectl, tenant.name, f"empty-{n}")
            claimed.append(start_claim_pod(tenant.kubectl, tenant.name, f"claim-{n}"))
            delete_pod(tenant.kubectl, tenant.name, f"claim-{n}")
            tenant.kubectl.run("-n", tenant.name, "delete", "pvc", f"claim-{n}", "--wait=true")
            print(f"round {n + 1}/{args.rounds}: {flex[-1]:.2f} s / {empty[-1]:.2f} s "
                  f"/ {claimed[-1]:.2f} s", file=sys.stderr)  # fmt: skip
        rates = {}
        for runtime in RUNTIMES:
            start_pod(tenant.kubectl, tenant.name, f"io-{runtime or 'runc'}", mount, runtime)
            rates[runtime] = throughput(
                tenant.kubectl, tenant.name, f"io-{runtime or 'runc'}", args.megabytes
            )
            delete_pod(tenant.kubectl, tenant.name, f"io-{runtime or 'runc'}")
            # The volume's file again in a new pod: no page cache of the old sandbox.
            cold = f"cold-{runtime or 'runc'}"
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
            start_pod(tenant.kubectl, tenant.name, cold, mount, runtime)
            rates[runtime]["read /data, new pod"] = dd(
                tenant.kubectl, tenant.name, cold, "dd if=/data/f of=/dev/null bs=1M",
                args.megabytes,
            )  # fmt: skip
            delete_pod(tenant.kubectl, tenant.name, cold)
        user.block_storage.wait_for_status(volume, "available", wait=120)
        user.block_storage.delete_volume(volume)
        problems = tenant.problems()
    print("| measurement | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    print(row("pod with a Cinder volume (FlexVolume) created -> Running", flex))
    print(row("baseline: the same pod with an emptyDir", empty))
    print(row("claim (StorageClass cinder, CSI) + pod applied together -> Running", claimed))
    print(f"\n| dd, {args.megabytes} MiB, bs=1M, MiB/s | Cinder volume (rbd-fuse + loop) "
          "| node disk (emptyDir) |")  # fmt: skip
    print("|---|---|---|")
    for runtime in RUNTIMES:
        for op in ("write", "read"):
            got = rates[runtime]
            print(f"| {op}, {runtime or 'runc'} pod | {got[f'{op} /data']:.0f} "
                  f"| {got[f'{op} /scratch']:.0f} |")  # fmt: skip
        print(f"| read in a new pod, {runtime or 'runc'} | "
              f"{rates[runtime]['read /data, new pod']:.0f} | - |")  # fmt: skip
    print(f"\nthe tenant afterwards: {problems or 'answering'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
