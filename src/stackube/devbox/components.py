"""Stackube's components on the devbox as Pods, deployed as an operator deploys them:
Stackube's image built and pushed to the devbox registry, then `kubectl apply -k` of
the devbox's overlay of deploy/ (decision 0018, docs/deploy.md).

The overlay adds only what this devbox differs in: the image by digest, the
ConfigMap, the credentials and the webhook's TLS from the devbox's own configuration,
one replica of each Deployment (one node; their ports are the node's), and the node
paths of this devbox (its containerd, CNI directories and gVisor build live under the
state and cache directories, mounted at the same paths inside the pods).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from stackube.api.manifests import SEED_CONFIG, SEED_PROXY, SEED_REST
from stackube.api.types import KEEP_ON_UNINSTALL
from stackube.devbox import gvisor, images, stackube_image
from stackube.devbox.commands import StepError
from stackube.devbox.deploy import NAMESPACE, write_overlay
from stackube.devbox.node import CRI_NAMESPACE, NodePaths
from stackube.devbox.pki import PkiStore
from stackube.devbox.settings import DevboxSettings

KUBECTL_TIMEOUT = 300.0  # seconds any one kubectl call may take
ROLLOUT_TIMEOUT = 240.0  # seconds a workload may take to be ready after an apply
# Any image will do to name the objects to delete.
PLACEHOLDER_REFERENCE = "localhost/stackube@sha256:" + "0" * 64
HELM_PLUGIN = "stackube-devbox"  # the post-renderer plugin's name
HELM_RENDERED = "helm-rendered.yaml"  # what the chart rendered, in the overlay
UNINSTALL_SELECTOR = f"{KEEP_ON_UNINSTALL}!=true"
PAUSED_LABEL = "stackube.kubernetes.io/devbox-paused"
PAUSED_REPLICAS = "stackube.kubernetes.io/devbox-replicas"


@dataclass(frozen=True)
class Component:
    """One of Stackube's workloads, and the host-process service it replaces."""

    service: str
    kind: str  # "deployment" or "daemonset"
    name: str

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def selector(self) -> str:
        return f"app.kubernetes.io/name={self.name}"


COMPONENTS = (
    Component("stackube-cni-daemon", "daemonset", "stackube-cni"),
    Component("stackube-proxy", "daemonset", "stackube-proxy"),
    Component("stackube-controller", "deployment", "stackube-controller"),
    Component("stackube-auth", "deployment", "stackube-auth"),
)
HOST_SERVICES = frozenset(component.service for component in COMPONENTS)


def component(service: str) -> Component:
    """Raises KeyError for a service that is not one of Stackube's components."""
    return {c.service: c for c in COMPONENTS}[service]


def _replace(*items: dict[str, Any]) -> list[dict[str, Any]]:
    """A strategic-merge list that replaces the base's list entirely."""
    return [{"$patch": "replace"}, *items]


def cni_patch(settings: DevboxSettings, paths: NodePaths) -> dict[str, Any]:
    """stackube-cni with this devbox's node paths, each mounted at its own path."""
    node_cni = paths.cni_socket.parent  # bin/, net.d/, state/ and the socket
    runsc_bin = settings.gvisor_bin_dir
    probe = json.dumps({"cniVersion": "1.0.0", "socket": str(paths.cni_socket)})
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": "/etc/stackube/config", "readOnly": True},
        {"name": "secret", "mountPath": "/etc/stackube/secret", "readOnly": True},
        {"name": "node-cni", "mountPath": str(node_cni)},
        {"name": "netns", "mountPath": "/run/netns", "mountPropagation": "HostToContainer"},
        {"name": "cri", "mountPath": str(paths.containerd_socket)},
        {"name": "runsc-bin", "mountPath": str(runsc_bin), "readOnly": True},
        {"name": "runsc-state", "mountPath": str(paths.runsc_root)},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "stackube-cni", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "initContainers": [
                        {
                            "name": "install-cni",
                            "args": [
                                "cni-install",
                                f"--bin-dir={paths.cni_bin}",
                                f"--conf-dir={paths.cni_conf}",
                                f"--socket={paths.cni_socket}",
                            ],
                            "volumeMounts": _replace(
                                {"name": "node-cni", "mountPath": str(node_cni)}
                            ),
                        }
                    ],
                    "containers": [
                        {
                            "name": "daemon",
                            "args": [
                                "cni-daemon",
                                "--config-dir=/etc/stackube/config",
                                "--secret-dir=/etc/stackube/secret",
                                f"--socket={paths.cni_socket}",
                                f"--state-dir={paths.cni_state}",
                                f"--cri-endpoint=unix://{paths.containerd_socket}",
                                f"--cluster-dns={settings.cluster_dns_ip}",
                                f"--cluster-domain={settings.cluster_domain}",
                                f"--runsc={runsc_bin / gvisor.RUNSC}",
                                f"--runsc-root={paths.runsc_root / CRI_NAMESPACE}",
                            ],
                            "livenessProbe": {
                                "exec": {
                                    "command": [
                                        "sh",
                                        "-c",
                                        f"echo '{probe}' | CNI_COMMAND=STATUS"
                                        f" {paths.cni_bin / 'kubestack'}",
                                    ]
                                }
                            },
                            "volumeMounts": _replace(*mounts),
                        }
                    ],
                    "volumes": _replace(
                        {"name": "config", "configMap": {"name": "stackube-config"}},
                        {"name": "secret", "secret": {"secretName": "stackube-credentials"}},
                        _host("node-cni", node_cni, "DirectoryOrCreate"),
                        _host("netns", Path("/run/netns"), "DirectoryOrCreate"),
                        _host("cri", paths.containerd_socket, "Socket"),
                        _host("runsc-bin", runsc_bin, "Directory"),
                        _host("runsc-state", paths.runsc_root, "DirectoryOrCreate"),
                    ),
                }
            }
        },
    }


def _host(name: str, path: Path, kind: str) -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": str(path), "type": kind}}


def proxy_patch(settings: DevboxSettings) -> dict[str, Any]:
    """stackube-proxy with this devbox's ranges, serving NodePorts on the node's
    InternalIP only (never the machine's uplink)."""
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "stackube-proxy", "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "proxy",
                            "args": [
                                "proxy",
                                f"--cluster-dns={settings.cluster_dns_ip}",
                                f"--service-cidr={settings.service_cidr}",
                                f"--nodeport-addresses={settings.external_host_address}/32",
                            ],
                        }
                    ]
                }
            }
        },
    }


def replicas_patch(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"replicas": replicas},
    }


def auth_patch(settings: DevboxSettings) -> dict[str, Any]:
    """stackube-auth for this devbox's API audience (its service-account issuer)."""
    doc = replicas_patch("stackube-auth", 1)
    doc["spec"]["template"] = {
        "spec": {
            # Its one node carries no control-plane label (a kubelet may not set one).
            "nodeSelector": {"node-role.kubernetes.io/control-plane": None},
            "containers": [
                {
                    "name": "webhook",
                    "args": [
                        "auth-webhook",
                        "--config-dir=/etc/stackube/config",
                        "--secret-dir=/etc/stackube/secret",
                        "--tls-cert=/etc/stackube/tls/tls.crt",
                        "--tls-key=/etc/stackube/tls/tls.key",
                        "--client-ca=/etc/stackube/tls/client-ca.crt",
                        "--bind-address=127.0.0.1",
                        "--port=8443",
                        "--cache-ttl=20",
                        f"--audiences={settings.service_account_issuer}",
                    ],
                }
            ],
        }
    }
    return doc


def devbox_patches(settings: DevboxSettings, paths: NodePaths) -> list[dict[str, Any]]:
    """The overlay's strategic-merge patches (pure: no I/O)."""
    return [
        cni_patch(settings, paths),
        proxy_patch(settings),
        replicas_patch("stackube-controller", 1),
        auth_patch(settings),
    ]


def pod_network_workloads(rendered: str) -> list[str]:
    """`kind/name` of the rendered Deployments and DaemonSets in kube-system whose pods
    are on the pod network (not the host's), but those kept on uninstall."""
    found = []
    for doc in yaml.safe_load_all(rendered):
        if not doc or doc.get("kind") not in ("Deployment", "DaemonSet"):
            continue
        meta = doc["metadata"]
        kept = (meta.get("labels") or {}).get(KEEP_ON_UNINSTALL) == "true"
        host = doc["spec"]["template"]["spec"].get("hostNetwork", False)
        if meta.get("namespace") == NAMESPACE and not host and not kept:
            found.append(f"{doc['kind'].lower()}/{meta['name']}")
    return found


class PodComponents:
    """Deploys, waits for, pauses and resumes Stackube's components on the devbox."""

    def __init__(self, settings: DevboxSettings, say: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.say = say
        self.paths = NodePaths(settings.node_dir)

    # ---- the image ----------------------------------------------------------------------
    def _image_key(self) -> str:
        """What the image is made of: this checkout's sources and revision, and the
        dependency versions (a change in any means a new image)."""
        root = stackube_image.project_root()
        digest = hashlib.sha256()
        try:
            revision = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True, text=True, check=False, timeout=30,
            ).stdout.strip()  # fmt: skip
        except (OSError, subprocess.TimeoutExpired):
            revision = ""  # no git: the sources alone
        digest.update(revision.encode())
        digest.update(stackube_image.constraints().encode())
        sources = [root / "pyproject.toml", *sorted((root / "src").rglob("*"))]
        for path in sources:
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(root)).encode() + b"\0")
                digest.update(path.read_bytes())
        return digest.hexdigest()

    def image(self) -> str:
        """Stackube's image in the devbox registry, by digest: built and pushed unless
        the last build from the same sources is there already."""
        key = self._image_key()
        last = self._last_build()
        if last.get("key") == key and self._registry_has(str(last.get("reference", ""))):
            return str(last["reference"])
        self.say("  building Stackube's image (about a minute; docs/image.md)")
        built = stackube_image.build(self.settings, self.say)
        try:
            images.push(built, self.settings.registry_url)
        except (images.RegistryError, OSError) as exc:
            raise StepError(f"pushing Stackube's image: {exc}") from exc
        reference = stackube_image.reference(self.settings, built)
        record = self._record()
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps({"key": key, "reference": reference}) + "\n")
        return reference

    def _record(self) -> Path:
        return self.settings.cache_dir / "stackube-image" / "last-build.json"

    def _last_build(self) -> dict[str, Any]:
        try:
            last = json.loads(self._record().read_text())
        except (OSError, ValueError):
            return {}
        return last if isinstance(last, dict) else {}

    def _last_reference(self) -> str | None:
        reference = self._last_build().get("reference")
        return str(reference) if reference else None

    def _registry_has(self, reference: str) -> bool:
        name, sep, digest = reference.partition("@")
        if not sep:
            return False
        repository = name.split("/", 1)[1] if "/" in name else name
        return images.has_manifest(self.settings.registry_url, repository, digest)

    # ---- deploy -------------------------------------------------------------------------
    def write_overlay(self, image: str, base: str = "deploy") -> Path:
        """`<state>/deploy`: `base` with this devbox's image, configuration and node
        paths. `base`: "deploy" (deploy/), "seed" (copies of the seed's three files made
        from it), or "helm" (HELM_RENDERED in the overlay: what the post-renderer got).
        Raises ValueError for another base."""
        if base not in ("deploy", "seed", "helm"):
            raise ValueError(f"{base}: not deploy, seed or helm")
        overlay = write_overlay(self.settings, deploy_dir(), image)
        tls = overlay / "tls"
        tls.mkdir(mode=0o700, exist_ok=True)
        store = PkiStore(self.settings.pki_dir)
        serving = store.paths("stackube-auth")
        for source, name in (
            (serving.cert, "tls.crt"),
            (serving.key, "tls.key"),
            (store.ca_paths.cert, "client-ca.crt"),
        ):
            shutil.copyfile(source, tls / name)
            (tls / name).chmod(0o600)
        path = overlay / "kustomization.yaml"
        doc = yaml.safe_load(path.read_text())
        doc["secretGenerator"].append(
            {
                "name": "stackube-auth-tls",
                "namespace": NAMESPACE,
                "behavior": "replace",
                "type": "kubernetes.io/tls",
                "files": [f"tls/{name}" for name in ("tls.crt", "tls.key", "client-ca.crt")],
                "options": {"disableNameSuffixHash": True},
            }
        )
        if base == "helm":
            doc["resources"] = [HELM_RENDERED]
            (overlay / HELM_RENDERED).touch(mode=0o600)
        if base == "seed":  # as an operator who downloaded them: copies beside the overlay
            doc["resources"] = []
            for name in (SEED_CONFIG, SEED_PROXY, SEED_REST):
                copy = overlay / "seed" / name
                copy.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(deploy_dir() / name, copy)
                doc["resources"].append(f"seed/{name}")
        doc["patches"] = [
            {"patch": yaml.safe_dump(patch, sort_keys=False)}
            for patch in devbox_patches(self.settings, self.paths)
        ]
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return overlay

    def deploy(self) -> str:
        """Build (if needed), push, apply, and wait until every component is ready.
        Returns the image reference. Raises StepError with kubectl's message."""
        image = self.image()
        self.apply(image)
        return image

    def apply(self, image: str) -> None:
        """`kubectl apply -k` of the overlay with `image`, then every component rolled
        out and ready (a changed image is a rolling update of each)."""
        overlay = self.write_overlay(image)
        self.kubectl(
            "apply", "--server-side", "--field-manager=stackube-devbox", "--force-conflicts",
            "-k", str(overlay),
        )  # fmt: skip
        # As `up` restarts a paused host process: a paused component runs again (the
        # apply gave a Deployment its replicas back; a DaemonSet keeps the pause's selector).
        for item in COMPONENTS:
            self._clear_pause(item)
        self.wait_ready(self._schedulable(COMPONENTS))

    def _clear_pause(self, item: Component) -> None:
        doc = json.loads(self.kubectl("-n", NAMESPACE, "get", item.ref, "-o", "json"))
        selector = doc["spec"]["template"]["spec"].get("nodeSelector") or {}
        if PAUSED_REPLICAS in (doc["metadata"].get("annotations") or {}):
            patch: dict[str, Any] = {"metadata": {"annotations": {PAUSED_REPLICAS: None}}}
        elif PAUSED_LABEL in selector:
            patch = {"spec": {"template": {"spec": {"nodeSelector": {PAUSED_LABEL: None}}}}}
        else:
            return
        self.kubectl("-n", NAMESPACE, "patch", item.ref, "--type=merge", "-p", json.dumps(patch))

    def _schedulable(self, components: Sequence[Component]) -> list[Component]:
        """All of them, but Deployments while the node is cordoned (their pods start at
        the uncordon; DaemonSets' pods tolerate a cordon)."""
        if not self._node_cordoned():
            return list(components)
        waiting = [c.ref for c in components if c.kind == "deployment"]
        if waiting:
            self.say(f"  node cordoned: {', '.join(waiting)} start when it is uncordoned")
        return [c for c in components if c.kind != "deployment"]

    def helm_post_renderer(self, image: str, directory: Path) -> Path:
        """A Helm 4 post-renderer plugin (`postrenderer/v1`, subprocess) in `directory`
        that passes what the chart renders through the devbox's overlay (node paths,
        one replica, the webhook's TLS); `helm plugin install <it>`, then
        `helm install --post-renderer stackube-devbox`. Returns the plugin's directory."""
        overlay = self.write_overlay(image, base="helm")
        plugin = directory / HELM_PLUGIN
        plugin.mkdir(parents=True, exist_ok=True)
        manifest = {
            "apiVersion": "v1",
            "type": "postrenderer/v1",
            "name": HELM_PLUGIN,
            "version": "0.1.0",
            "runtime": "subprocess",
            "runtimeConfig": {"platformCommand": [{"command": "${HELM_PLUGIN_DIR}/render"}]},
        }
        (plugin / "plugin.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
        script = (
            "#!/bin/sh\nset -e\n"
            f"cat > {shlex.quote(str(overlay / HELM_RENDERED))}\n"
            f"exec kubectl kustomize {shlex.quote(str(overlay))}\n"
        )
        (plugin / "render").write_text(script)
        (plugin / "render").chmod(0o755)
        return plugin

    def deployed(self) -> bool:
        """Whether this devbox's overlay was applied (its CNI DaemonSet exists)."""
        if not (self.settings.state_dir / "deploy" / "kustomization.yaml").exists():
            return False
        found = self.kubectl(
            "-n", NAMESPACE, "get", COMPONENTS[0].ref, "--ignore-not-found", "-o", "name"
        )  # fmt: skip
        return bool(found.strip())

    def uninstall(self) -> None:
        """`kubectl delete -k` of the overlay, but what is labelled to stay (the CRDs,
        hence Tenants and Networks, and stackube-dns): docs/deploy.md "Uninstalling"."""
        # The overlay again from this checkout (a test may have left another base).
        overlay = self.write_overlay(self._last_reference() or PLACEHOLDER_REFERENCE)
        # Workloads on the pod network first, while the CNI daemon can still take their
        # pods down (without it their sandboxes' DEL fails and they stay Terminating).
        first = pod_network_workloads(self.kubectl("kustomize", str(overlay)))
        if first:
            self.kubectl(
                "-n", NAMESPACE, "delete", *first, "--ignore-not-found", "--cascade=foreground",
                "--wait", f"--timeout={ROLLOUT_TIMEOUT:.0f}s", timeout=ROLLOUT_TIMEOUT + 60,
            )  # fmt: skip
        self.kubectl(
            "delete", "-k", str(overlay), "-l", UNINSTALL_SELECTOR, "--ignore-not-found",
            "--cascade=foreground", "--wait", f"--timeout={ROLLOUT_TIMEOUT:.0f}s",
            timeout=ROLLOUT_TIMEOUT + 60,
        )  # fmt: skip
        for item in COMPONENTS:  # their pods too (a host process may take over the socket)
            self._wait_no_pods(item)

    def wait_ready(self, components: Sequence[Component], timeout: float = ROLLOUT_TIMEOUT) -> None:
        for item in components:
            self.kubectl(
                "-n", NAMESPACE, "rollout", "status", item.ref, f"--timeout={timeout:.0f}s",
                timeout=timeout + 30,
            )  # fmt: skip

    def ready(self, item: Component) -> bool:
        """Every wanted pod of the workload is ready (for `devbox status`)."""
        try:
            doc = json.loads(self.kubectl("-n", NAMESPACE, "get", item.ref, "-o", "json"))
        except StepError:
            return False
        status = doc.get("status", {})
        if item.kind == "daemonset":
            wanted = status.get("desiredNumberScheduled", 0)
            return bool(wanted) and status.get("numberReady", 0) == wanted
        wanted = doc.get("spec", {}).get("replicas", 1)
        return bool(wanted) and status.get("readyReplicas", 0) == wanted

    # ---- pause and resume (tests that run their own instance) ---------------------------
    def pause(self, item: Component) -> None:
        """No pod of the workload runs on the node afterwards (a Deployment scaled to
        zero, its replicas kept in an annotation; a DaemonSet selecting no node)."""
        if item.kind == "deployment":
            doc = json.loads(self.kubectl("-n", NAMESPACE, "get", item.ref, "-o", "json"))
            annotations = doc["metadata"].get("annotations") or {}
            # Paused twice: the replicas from before the first pause.
            replicas = annotations.get(PAUSED_REPLICAS) or str(doc["spec"].get("replicas") or 1)
            patch = {
                "metadata": {"annotations": {PAUSED_REPLICAS: replicas}},
                "spec": {"replicas": 0},
            }
        else:
            patch = {"spec": {"template": {"spec": {"nodeSelector": {PAUSED_LABEL: "true"}}}}}
        self.kubectl("-n", NAMESPACE, "patch", item.ref, "--type=merge", "-p", json.dumps(patch))
        self._wait_no_pods(item)

    def resume(self, item: Component) -> None:
        if item.kind == "deployment":
            doc = json.loads(self.kubectl("-n", NAMESPACE, "get", item.ref, "-o", "json"))
            annotations = doc["metadata"].get("annotations") or {}
            replicas = int(annotations.get(PAUSED_REPLICAS, doc["spec"].get("replicas") or 1))
            patch: dict[str, Any] = {
                "metadata": {"annotations": {PAUSED_REPLICAS: None}},
                "spec": {"replicas": replicas},
            }
        else:
            patch = {"spec": {"template": {"spec": {"nodeSelector": {PAUSED_LABEL: None}}}}}
        self.kubectl("-n", NAMESPACE, "patch", item.ref, "--type=merge", "-p", json.dumps(patch))
        self.wait_ready(self._schedulable([item]))

    def _node_cordoned(self) -> bool:
        node = json.loads(self.kubectl("get", "node", self.settings.node_name, "-o", "json"))
        return bool(node.get("spec", {}).get("unschedulable"))

    def _wait_no_pods(self, item: Component, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            names = self.kubectl(
                "-n", NAMESPACE, "get", "pods", "-l", item.selector, "-o", "name"
            ).split()  # fmt: skip
            if not names:
                return
            if time.monotonic() > deadline:
                raise StepError(f"{item.ref}: pods still there after {timeout:.0f}s: {names}")
            time.sleep(1)

    def logs(self, item: Component, lines: int = -1) -> str:
        """The last `lines` (-1: all) of each of the workload's pods (all containers)."""
        return self.kubectl(
            "-n", NAMESPACE, "logs", "-l", item.selector, "--all-containers", "--prefix",
            f"--tail={lines}", check=False,
        )  # fmt: skip

    def kubectl(self, *args: str, timeout: float = KUBECTL_TIMEOUT, check: bool = True) -> str:
        argv = ["kubectl", f"--kubeconfig={self.settings.admin_kubeconfig}", *args]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StepError(f"kubectl {' '.join(args[:4])}: {exc}") from exc
        if check and done.returncode != 0:
            raise StepError(f"kubectl {' '.join(args[:6])} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout


def deploy_dir() -> Path:
    """deploy/ of this checkout."""
    return stackube_image.project_root() / "deploy"
