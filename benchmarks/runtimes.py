"""runc vs gVisor on the devbox's node, side by side in one run: pod start, HTTP through
a ClusterIP, and what an idle sandbox costs in memory.

Run (root, devbox up):  python3 -m benchmarks.runtimes [--rounds 10] [--seconds 10]

- `start`: a busybox pod created -> Running (API phase, polled every 0.2 s), runc and
  gVisor (runtimeClassName gvisor) alternating, each deleted before the next.
- `http`: nginx (the devbox's busybox httpd image) under each runtime behind its own
  ClusterIP Service; one runc client pod fetches `/` with busybox wget in a loop for
  `--seconds` (one process per request: the client's cost is the same for both).
- `memory`: each nginx pod's cgroup working set (as the kubelet counts it) after the
  HTTP run, and the RSS of the gVisor pod's sandbox processes (Sentry, Gofer): the
  difference is what the RuntimeClass's declared overhead has to cover.
Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tests.e2e.kubectl import Kubectl, idle
from tests.integration.cni_harness import wait_for

from benchmarks.live import started_tenant
from benchmarks.stats import row

RUNTIMES = ("runc", "gvisor")


def pod(name: str, runtime: str, image: str = "busybox", **extra: Any) -> str:
    spec: dict[str, Any] = {
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": image, **extra}],
    }
    if runtime == "gvisor":
        spec["runtimeClassName"] = "gvisor"
    labels = {"app": name}
    return json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
         "spec": spec}
    )  # fmt: skip


def phase(kubectl: Kubectl, namespace: str, name: str) -> str:
    got = kubectl.run(
        "-n", namespace, "get", "pod", name, "-o", "jsonpath={.status.phase}", check=False
    )
    return got.stdout


def start(kubectl: Kubectl, namespace: str, name: str, runtime: str) -> float:
    began = time.monotonic()
    kubectl.run("-n", namespace, "create", "-f", "-", stdin=pod(name, runtime, command=idle(600)))
    wait_for(lambda: phase(kubectl, namespace, name) == "Running", 180, name, interval=0.2)
    return time.monotonic() - began


def requests_per_second(kubectl: Kubectl, namespace: str, url: str, seconds: int) -> float:
    script = (
        f"end=$(($(date +%s) + {seconds})); n=0; "
        f'while [ "$(date +%s)" -lt "$end" ]; do wget -q -O /dev/null {url} && n=$((n + 1)); '
        "done; echo $n"
    )
    done = kubectl.run(
        "-n", namespace, "exec", "bench-client", "--", "sh", "-c", script, timeout=seconds + 60
    )
    return int(done.stdout.split()[-1]) / seconds


def sandbox_rss_mib(uid: str) -> float:
    """Sum of VmRSS of the processes in the pod's cgroups whose argv[0] is runsc-*."""
    total_kib = 0
    for procs in Path("/sys/fs/cgroup/memory/kubepods").rglob(f"pod{uid}/**/cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            if argv0.startswith(b"runsc-"):
                rss = [line for line in status.splitlines() if line.startswith("VmRSS:")]
                total_kib += int(rss[0].split()[1]) if rss else 0
    return total_kib / 1024


def pod_working_set_mib(uid: str) -> float:
    """The pod cgroup's working set, as the kubelet counts it (usage minus inactive file
    pages, cgroup v1): what a memory limit and the eviction manager hold it to."""
    found = list(Path("/sys/fs/cgroup/memory/kubepods").rglob(f"pod{uid}"))
    if len(found) != 1:
        raise RuntimeError(f"pod {uid}: cgroups {found}")
    usage = int((found[0] / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (found[0] / "memory.stat").read_text().splitlines())
    return max(0, usage - int(stat["total_inactive_file"])) / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    with started_tenant("bench-rt") as (_devbox, _admin, tenant, _project_id):
        k, ns = tenant.kubectl, tenant.name
        starts: dict[str, list[float]] = {r: [] for r in RUNTIMES}
        for n in range(args.rounds):
            for runtime in RUNTIMES:
                starts[runtime].append(start(k, ns, f"s-{runtime}-{n}", runtime))
                k.run("-n", ns, "delete", "pod", f"s-{runtime}-{n}", "--wait=true")
            print(f"round {n + 1}/{args.rounds}: runc {starts['runc'][-1]:.2f} s, "
                  f"gvisor {starts['gvisor'][-1]:.2f} s", file=sys.stderr)  # fmt: skip
        rates: dict[str, float] = {}
        k.run("-n", ns, "create", "-f", "-", stdin=pod("bench-client", "runc", command=idle(3600)))
        for runtime in RUNTIMES:
            k.run("-n", ns, "create", "-f", "-", stdin=pod(f"web-{runtime}", runtime, "nginx"))
            k.run("-n", ns, "expose", "pod", f"web-{runtime}", "--port=80")
        for name in ("bench-client", "web-runc", "web-gvisor"):
            wait_for(lambda n=name: phase(k, ns, n) == "Running", 180, name, interval=0.2)
        for runtime in RUNTIMES:
            rates[runtime] = requests_per_second(k, ns, f"http://web-{runtime}/", args.seconds)
        uids = {r: k.json("-n", ns, "get", "pod", f"web-{r}")["metadata"]["uid"] for r in RUNTIMES}
        rss = sandbox_rss_mib(uids["gvisor"])
        working_set = {r: pod_working_set_mib(uids[r]) for r in RUNTIMES}
        # The live tenant's check counts the namespace's pods: leave it as it was.
        k.run("-n", ns, "delete", "pod,service", "bench-client", "web-runc", "web-gvisor",
              "--ignore-not-found", "--wait=true")  # fmt: skip
        problems = tenant.problems()
    print("| pod created -> Running | n | p50 s | p95 s | max s |")
    print("|---|---|---|---|---|")
    for runtime in RUNTIMES:
        print(row(runtime, starts[runtime]))
    print("\n| HTTP GET / through a ClusterIP (busybox wget loop, runc client) | requests/s |")
    print("|---|---|")
    for runtime in RUNTIMES:
        print(f"| nginx under {runtime} | {rates[runtime]:.1f} |")
    print("\n| idle nginx pod, after the HTTP run | pod cgroup working set MiB |")
    print("|---|---|")
    for runtime in RUNTIMES:
        print(f"| under {runtime} | {working_set[runtime]:.1f} |")
    print(f"\nidle gVisor nginx pod: sandbox processes' RSS {rss:.0f} MiB (shared pages too)")
    print(f"\nthe tenant afterwards: {problems or 'answering'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
