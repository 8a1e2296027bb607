"""The devbox's CSI driver: `stackube csi` as controller plugin beside upstream's
external-provisioner and external-attacher (built from the Go module proxy), and as node
plugin registered with the devbox's kubelet. All read the node's cinder.conf
(devbox.volumes); the controller side acts in Kubernetes as kube-system:stackube-csi.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stackube.devbox import gobuild, health, images
from stackube.devbox.process import ProcessSpec
from stackube.devbox.service import Service
from stackube.devbox.settings import DevboxSettings

DRIVER = "cinder.stackube.kubernetes.io"
PROVISIONER_MODULE = "github.com/kubernetes-csi/external-provisioner/v6"
PROVISIONER_VERSION = "v6.4.0"
ATTACHER_MODULE = "github.com/kubernetes-csi/external-attacher/v4"
ATTACHER_VERSION = "v4.13.0"
# (module, version, program, package)
SIDECARS = (
    (PROVISIONER_MODULE, PROVISIONER_VERSION, "csi-provisioner",
     f"{PROVISIONER_MODULE}/cmd/csi-provisioner"),
    (ATTACHER_MODULE, ATTACHER_VERSION, "csi-attacher", f"{ATTACHER_MODULE}/cmd/csi-attacher"),
)  # fmt: skip


# Upstream's image names (what deploy/csi/workloads.yaml names); the devbox registry, the
# node's mirror of registry.k8s.io, serves them built from the binaries above.
SIDECAR_IMAGES = {
    "csi-provisioner": f"registry.k8s.io/sig-storage/csi-provisioner:{PROVISIONER_VERSION}",
    "csi-attacher": f"registry.k8s.io/sig-storage/csi-attacher:{ATTACHER_VERSION}",
}


def sidecar_image_specs(settings: DevboxSettings) -> list[images.ImageSpec]:
    """Each sidecar as upstream ships it (its static binary at /, the entrypoint; upstream
    builds on distroless/static), named as in the registry mirror."""
    specs = []
    for program, name in SIDECAR_IMAGES.items():
        repository, tag = name.removeprefix("registry.k8s.io/").rsplit(":", 1)
        binary = (sidecar_bin_dir(settings) / program).read_bytes()
        specs.append(
            images.ImageSpec(
                repository, tag, (images.File(program, binary, mode=0o755),),
                entrypoint=(f"/{program}",),
            )
        )  # fmt: skip
    return specs


def sidecar_bin_dir(settings: DevboxSettings) -> Path:
    return settings.cache_dir / "csi-sidecars" / f"{PROVISIONER_VERSION}-{ATTACHER_VERSION}" / "bin"


def missing_sidecars(settings: DevboxSettings) -> list[str]:
    return gobuild.missing_programs(sidecar_bin_dir(settings), [s[2] for s in SIDECARS])


def build_sidecars(settings: DevboxSettings, builder: gobuild.GoBuilder) -> None:
    for module, version, program, package in SIDECARS:
        if not gobuild.missing_programs(sidecar_bin_dir(settings), [program]):
            continue
        go_mod = builder.module_go_mod(module, version)
        plan = gobuild.command_plan(module, version, go_mod, [gobuild.GoProgram(program, package)])
        builder.build(f"{program}-{version}", plan, sidecar_bin_dir(settings))


def controller_socket(settings: DevboxSettings) -> Path:
    return settings.state_dir / "csi" / "controller.sock"


def node_socket(settings: DevboxSettings) -> Path:
    """Where kubelet expects a CSI driver's socket: <kubelet root>/plugins/<driver>/."""
    return settings.node_dir / "kubelet" / "plugins" / DRIVER / "csi.sock"


def respawned(*argv: str) -> list[str]:
    """argv run again a second after each exit (the service's process group is the loop's:
    stopping the service stops both)."""
    loop = 'while :; do "$@"; echo "$1 exited ($?): starting it again" >&2; sleep 1; done'
    return ["sh", "-c", loop, "respawn", *argv]


def _probe_socket(path: Path) -> health.Probe:
    return path.is_socket


def services(settings: DevboxSettings) -> list[Service]:
    kubeconfig = settings.kube_dir / "stackube-csi.kubeconfig"
    controller = controller_socket(settings)
    node = node_socket(settings)
    bins = sidecar_bin_dir(settings)
    ports = settings.ports

    def stackube_csi(mode: str, socket: Path, *extra: str) -> ProcessSpec:
        return ProcessSpec(
            f"stackube-csi-{mode}",
            [sys.executable, "-m", "stackube", "csi", f"--mode={mode}",
             f"--endpoint=unix://{socket}", f"--cloud-config={settings.cinder_conf}", *extra],
            inputs=(settings.cinder_conf,),
        )  # fmt: skip

    def sidecar(program: str, port: int, *extra: str) -> ProcessSpec:
        # A sidecar exits when it loses the driver's socket (a restarted driver): as in a
        # pod, it is started again.
        return ProcessSpec(
            program,
            respawned(
                str(bins / program), f"--kubeconfig={kubeconfig}", f"--csi-address={controller}",
                "--leader-election", "--leader-election-namespace=kube-system", "--timeout=120s",
                f"--http-endpoint={settings.host}:{port}", "--v=2", *extra,
            ),
        )  # fmt: skip

    def leading(port: int) -> health.Probe:
        return health.http_ok(f"http://{settings.host}:{port}/healthz/leader-election")

    registration = settings.node_dir / "kubelet" / "plugins_registry"
    return [
        Service(
            name="stackube-csi-controller",
            process=lambda: stackube_csi("controller", controller),
            probe=_probe_socket(controller),
            start_timeout=30,
        ),
        Service(
            name="csi-provisioner",
            process=lambda: sidecar(
                "csi-provisioner", ports.csi_provisioner, "--extra-create-metadata"
            ),
            probe=leading(ports.csi_provisioner),
            start_timeout=60,
        ),
        Service(
            name="csi-attacher",
            process=lambda: sidecar("csi-attacher", ports.csi_attacher),
            probe=leading(ports.csi_attacher),
            start_timeout=60,
        ),
        Service(
            name="stackube-csi-node",
            process=lambda: stackube_csi("node", node, f"--registration-dir={registration}"),
            probe=_probe_socket(node),
            start_timeout=30,
        ),
    ]
