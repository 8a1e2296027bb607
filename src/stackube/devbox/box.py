"""`stackube devbox`: the single-node all-in-one, brought up, inspected and torn down.

`up` is idempotent: installed packages, cached builds, certificates, databases and
healthy services are all kept, so a warm `up` only probes. The Kubernetes and
OpenStack halves start side by side (two tracks), each in dependency order.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from stackube.devbox import (
    cleanup,
    csi,
    gobuild,
    gvisor,
    openvswitch,
    packages,
    podaccess,
    volumes,
)
from stackube.devbox.commands import StepError
from stackube.devbox.components import (
    COMPONENTS,
    HOST_SERVICES,
    Component,
    PodComponents,
    component,
)
from stackube.devbox.kubernetes import (
    ApiserverOptions,
    ensure_pki_and_kubeconfigs,
    kubernetes_services,
)
from stackube.devbox.node import NodeDevbox
from stackube.devbox.openstack import OpenStackDevbox
from stackube.devbox.process import (
    ProcessTable,
    group_rss_bytes,
    pids_mentioning,
    terminate_group,
)
from stackube.devbox.progress import Progress
from stackube.devbox.service import Service, ensure_running, stop_service
from stackube.devbox.settings import DevboxSettings
from stackube.devbox.stackube import StackubeDevbox, apiserver_auth_flags, ensure_auth_pki

log = logging.getLogger(__name__)


# What may be left of our services after their process groups are gone.
HELPER_COMMANDS = (
    "dnsmasq",
    "privsep-helper",
    "haproxy",
    "keepalived",
    "radvd",
    "neutron-",
    "uwsgi",
    "beam.smp",
    "mariadbd",
    "etcd",
    "kube-",
    "containerd-shim",
    "ceph-",
    "cinder-",
    "rbd-fuse",
    "csi-provisioner",
    "csi-attacher",
)


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    healthy: bool
    rss_bytes: int = 0


class Devbox:
    def __init__(
        self,
        settings: DevboxSettings,
        progress: Progress | None = None,
        apiserver: ApiserverOptions | None = None,
    ) -> None:
        self.settings = settings
        self.progress = progress or Progress()
        # Bearer tokens the apiserver does not know go to stackube-auth (Keystone).
        self.apiserver = apiserver or ApiserverOptions(apiserver_auth_flags(settings))
        self.table = ProcessTable(settings.run_dir, settings.log_dir)
        self._openstack: OpenStackDevbox | None = None

    @property
    def openstack(self) -> OpenStackDevbox:
        if self._openstack is None:
            self._openstack = OpenStackDevbox(self.settings, self.table)
        return self._openstack

    def kubernetes_services(self) -> list[Service]:
        return kubernetes_services(self.settings, self.apiserver)

    @property
    def pods_mode(self) -> bool:
        """Stackube's components run as Pods (the default), not host processes."""
        return self.settings.components == "pods"

    def stackube_services(self) -> list[Service]:
        if self.pods_mode:
            return []
        return StackubeDevbox(self.settings, self.openstack).services()

    def host_component_services(self) -> list[Service]:
        """Stackube's components as host processes, whatever the mode (to stop them)."""
        host = replace(self.settings, components="host")
        node = [s for s in NodeDevbox(host).services() if s.name in HOST_SERVICES]
        return StackubeDevbox(host, self.openstack).services() + node + csi.services(host)

    def csi_services(self) -> list[Service]:
        """The CSI driver as host processes (in the Pods mode, deploy/csi/ runs it)."""
        return [] if self.pods_mode else csi.services(self.settings)

    def node_services(self) -> list[Service]:
        return NodeDevbox(self.settings).services()

    def all_services(self) -> list[Service]:
        return (
            self.kubernetes_services()
            + self.openstack.services()
            + self.stackube_services()
            + self.node_services()
            + self.csi_services()
        )

    # ---- up -----------------------------------------------------------------------------
    def up(self) -> None:
        if os.geteuid() != 0:
            raise StepError("the devbox needs root (it runs Neutron's agents and edits netns)")
        s = self.settings
        s.state_dir.mkdir(parents=True, exist_ok=True)
        s.state_dir.chmod(0o755)
        self._check_backend()
        with self.progress.step("checking Debian packages"):
            missing = packages.missing_packages(packages.packages_for(s.neutron_backend))
        if missing:
            with self.progress.step(f"installing {len(missing)} Debian packages"):
                packages.install(missing)
        self.ensure_binaries()
        with self.progress.step("PKI and kubeconfigs"):
            ensure_pki_and_kubeconfigs(self.settings)
            ensure_auth_pki(self.settings)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="devbox-track") as pool:
            tracks = [
                pool.submit(self._start_track, self.kubernetes_services()),
                pool.submit(self._start_track, self.openstack.services()),
            ]
            for track in tracks:
                track.result()
        self.openstack.write_client_files()
        with self.progress.step("the FlexVolume driver and cinder.conf"):
            volumes.install(s, self.openstack.secrets, self.openstack.ceph.cinder_keyring())
        if self.pods_mode:
            self._up_components_as_pods()
        else:
            pods = PodComponents(self.settings, self.progress.say)
            if pods.deployed():  # this devbox ran them as Pods before: those go first
                with self.progress.step("removing Stackube's Pods (the host mode runs them)"):
                    pods.uninstall()
            # Stackube needs both halves: its CRDs in the apiserver, Keystone and Neutron.
            self._start_track(self.stackube_services())
            # A node: registry with our images, containerd, kubestack, stackube-proxy, kubelet.
            self._start_track(self.node_services())
            # The CSI driver: its controller side and the node plugin kubelet registers.
            self._start_track(self.csi_services())
        with self.progress.step("cluster DNS and the kubernetes Service's endpoint"):
            NodeDevbox(self.settings).apply_system_addons()
        self.progress.say("devbox is up; `stackube devbox env` prints the exports")

    def _up_components_as_pods(self) -> None:
        """The node (registry, containerd, kubelet), then Stackube from deploy/ as an
        operator deploys it; the node is Ready once the CNI DaemonSet's pod runs."""
        for service in self.host_component_services():
            if self.table.pid(service.name) is not None:
                with self.progress.step(f"stopping the host process {service.name}"):
                    stop_service(service, self.table)
        with self.progress.step("Stackube's configuration, CRDs and RBAC"):
            StackubeDevbox(self.settings, self.openstack).prepare()
        # A containerd started now runs no container from before, a kubelet started now
        # posts the Node's status afresh: until then the Pods' and the Node's statuses
        # from before (Ready) are stale.
        before = {name: self.table.pid(name) for name in ("containerd", "kubelet")}
        started = datetime.now(UTC)
        self._start_track(self.node_services())
        new = {name for name, pid in before.items() if self.table.pid(name) != pid}
        with self.progress.step("Stackube's components as Pods (kubectl apply -k)"):
            pods = PodComponents(self.settings, self.progress.say)
            image = pods.deploy(since=started if "containerd" in new else None)
        self.progress.say(f"  {image}")
        with self.progress.step(f"node {self.settings.node_name} Ready"):
            NodeDevbox(self.settings).wait_node_ready(started if "kubelet" in new else None)

    # ---- pausing services (tests that run their own instance) ---------------------------
    def _pod_component(self, name: str) -> Component | None:
        return component(name) if self.pods_mode and name in HOST_SERVICES else None

    def pause(self, *names: str) -> None:
        """Stop these services: host processes, or Stackube's workloads in the Pods mode
        (no pod of theirs left on the node)."""
        pods = PodComponents(self.settings, self.progress.say)
        for name in names:
            item = self._pod_component(name)
            if item is not None:
                pods.pause(item)
            else:
                self.table.stop(name)

    def resume(self, *names: str) -> None:
        """Start paused services again (only these: others may be paused elsewhere)."""
        for service in self.all_services():
            if service.name in names:
                ensure_running(service, self.table)
        pods = PodComponents(self.settings, self.progress.say)
        for name in names:
            item = self._pod_component(name)
            if item is not None:
                pods.resume(item)

    def service_log(self, name: str) -> str:
        """What a service logged: its log file, or its pods' logs in the Pods mode."""
        item = self._pod_component(name)
        if item is not None:
            return PodComponents(self.settings, self.progress.say).logs(item)
        path = self.table.log_file(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def _check_backend(self) -> None:
        """A devbox keeps the Neutron backend it was made with (its database has that
        ML2 mechanism's bindings)."""
        record = self.settings.state_dir / "neutron-backend"
        wanted = self.settings.neutron_backend
        if not record.exists():
            record.write_text(wanted + "\n")
            return
        made = record.read_text().strip()
        if made != wanted:
            raise StepError(
                f"this devbox ({self.settings.state_dir}) runs Neutron with {made}, not {wanted}:"
                " use another STACKUBE_DEVBOX_DIR, or `stackube devbox down --purge` first"
            )

    def _start_track(self, services: Sequence[Service]) -> None:
        for service in services:
            with self.progress.step(f"service {service.name}"):
                outcome = ensure_running(service, self.table)
            if outcome != "healthy":
                self.progress.say(f"  {service.name}: {outcome}")

    def ensure_binaries(self) -> None:
        s = self.settings
        builder = gobuild.GoBuilder(s.cache_dir / "go-build-modules")
        if s.kube_bin_override is not None:
            missing = gobuild.missing_programs(s.kube_bin_dir, gobuild.CONTROL_PLANE_COMMANDS)
            if missing:
                raise StepError(f"{s.kube_bin_dir} lacks {', '.join(missing)}")
        elif gobuild.missing_programs(s.kube_bin_dir, gobuild.KUBERNETES_COMMANDS):
            with self.progress.step(f"building Kubernetes {s.kubernetes_version} (minutes, once)"):
                go_mod = builder.module_go_mod(gobuild.KUBERNETES_MODULE, s.kubernetes_version)
                plan = gobuild.kubernetes_plan(s.kubernetes_version, go_mod)
                builder.build(
                    f"kubernetes-{s.kubernetes_version}",
                    plan,
                    s.kube_bin_dir,
                    on_program=lambda name: self.progress.say(f"  go build {name}"),
                )
        if csi.missing_sidecars(s):
            with self.progress.step("building the CSI sidecars (once)"):
                csi.build_sidecars(s, builder)
        if gvisor.missing(s):
            with self.progress.step(f"building gVisor {s.gvisor_version} (once)"):
                status = Path("/proc/self/status").read_text()
                gvisor.build(s, builder, gvisor.has_capability(status, gvisor.CAP_SYS_RESOURCE))
        if gobuild.missing_programs(s.coredns_bin_dir, ["coredns"]):
            with self.progress.step(f"building CoreDNS {s.coredns_version} (once)"):
                self._build_module(
                    builder, gobuild.COREDNS_MODULE, s.coredns_version, "coredns", s.coredns_bin_dir
                )
        if s.etcd_bin_override is None and gobuild.missing_programs(s.etcd_bin_dir, ["etcd"]):
            with self.progress.step(f"building etcd {s.etcd_version}"):
                self._build_module(
                    builder, gobuild.ETCD_SERVER_MODULE, s.etcd_version, "etcd", s.etcd_bin_dir
                )

    @staticmethod
    def _build_module(
        builder: gobuild.GoBuilder, module: str, version: str, program: str, bin_dir: Path
    ) -> None:
        go_mod = builder.module_go_mod(module, version)
        plan = gobuild.module_plan(module, version, go_mod, program)
        builder.build(f"{program}-{version}", plan, bin_dir)

    # ---- down ---------------------------------------------------------------------------
    def _services_to_stop(self) -> list[Service]:
        if not self.settings.secrets_file.exists():
            return self.kubernetes_services()
        services = self.all_services()
        if self.pods_mode:  # host processes left from the host mode, if any
            services += self.host_component_services()
        return services

    def down(self, purge: bool = False) -> cleanup.CleanupReport:
        for service in reversed(self._services_to_stop()):
            if self.table.pid(service.name) is not None:
                with self.progress.step(f"stopping {service.name}"):
                    stop_service(service, self.table)
        # Helpers that left our process groups (dnsmasq, privsep daemons) still name our
        # state directory on their command line.
        for pid in pids_mentioning(str(self.settings.state_dir), HELPER_COMMANDS):
            terminate_group(pid, timeout=5)
        still_mounted = NodeDevbox(self.settings).unmount_all()
        podaccess.remove_host_routes(self.settings)
        podaccess.remove_guard(self.settings)
        with self.progress.step("removing namespaces, links, chains and ipsets"):
            links = [self.settings.external_host_veth, self.settings.external_agent_veth]
            if self.settings.openvswitch:
                # The userspace datapath's tap devices outlive ovs-vswitchd.
                links += list(openvswitch.NETDEV_LINKS)
            report = cleanup.apply(links)
        self.progress.say(report.summary())
        if self.settings.secrets_file.exists():
            restored = self.openstack.restore_sysctls()
            if restored:
                self.progress.say(f"restored sysctls: {restored}")
        if purge and still_mounted:
            raise StepError(
                f"not purging {self.settings.state_dir}: still mounted: {', '.join(still_mounted)}"
            )
        if purge:
            for path in volumes.uninstall(self.settings):
                self.progress.say(f"removed {path}")
        if purge and self.settings.state_dir.exists():
            shutil.rmtree(self.settings.state_dir)
            self.progress.say(f"removed {self.settings.state_dir}")
        return report

    # ---- status and env -----------------------------------------------------------------
    def status(self) -> list[ServiceStatus]:
        if not self.settings.secrets_file.exists():
            names = [s.name for s in self.kubernetes_services()]
            return [ServiceStatus(n, None, False) for n in names]
        rows = []
        for service in self.all_services():
            pid = self.table.pid(service.name)
            healthy = pid is not None and service.probe()
            rss = group_rss_bytes(pid) if pid is not None else 0
            rows.append(ServiceStatus(service.name, pid, healthy, rss))
        if self.pods_mode:
            pods = PodComponents(self.settings, self.progress.say)
            rows += [ServiceStatus(c.service, None, pods.ready(c)) for c in COMPONENTS]
        return rows

    def env(self) -> dict[str, str]:
        s = self.settings
        return {
            "STACKUBE_DEVBOX_DIR": str(s.state_dir),
            "KUBECONFIG": str(s.admin_kubeconfig),
            "OS_CLIENT_CONFIG_FILE": str(s.clouds_yaml),
            "OS_CLOUD": "devbox-admin",
        }
