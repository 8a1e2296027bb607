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
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from stackube.api.types import KEEP_ON_UNINSTALL
from stackube.devbox import images, stackube_image
from stackube.devbox.commands import StepError
from stackube.devbox.deploy import HELM_RENDERED, NAMESPACE, pod_network_workloads, write_overlay
from stackube.devbox.settings import DevboxSettings

KUBECTL_TIMEOUT = 300.0  # seconds any one kubectl call may take
ROLLOUT_TIMEOUT = 240.0  # seconds a workload may take to be ready after an apply
# Any image will do to name the objects to delete.
PLACEHOLDER_REFERENCE = "localhost/stackube@sha256:" + "0" * 64
HELM_PLUGIN = "stackube-devbox"  # the post-renderer plugin's name
UNINSTALL_SELECTOR = f"{KEEP_ON_UNINSTALL}!=true"
PAUSED_LABEL = "stackube.kubernetes.io/devbox-paused"
PAUSED_REPLICAS = "stackube.kubernetes.io/devbox-replicas"


@dataclass(frozen=True)
class Component:
    """One of Stackube's workloads, and the host-process service it replaces (and the
    others it replaces too: the CSI sidecars)."""

    service: str
    kind: str  # "deployment" or "daemonset"
    name: str
    also: tuple[str, ...] = ()

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
    Component(
        "stackube-csi-controller", "deployment", "stackube-csi-controller",
        also=("csi-provisioner", "csi-attacher"),
    ),
    Component("stackube-csi-node", "daemonset", "stackube-csi-node"),
)  # fmt: skip
HOST_SERVICES = frozenset(name for c in COMPONENTS for name in (c.service, *c.also))


def component(service: str) -> Component:
    """Raises KeyError for a service that is not one of Stackube's components."""
    return {name: c for c in COMPONENTS for name in (c.service, *c.also)}[service]


def running_since(pods: Sequence[dict[str, Any]], since: datetime) -> int:
    """How many of `pods` (Pod objects as the API returns them) are Ready, not being
    deleted, with every container running since `since` (timezone-aware; compared in
    whole seconds, as the kubelet reports `startedAt`). A pod's status written before
    the node's containerd restarted still says Ready for its dead containers until the
    kubelet catches up: such a pod does not count."""
    floor = since.replace(microsecond=0)
    count = 0
    for pod in pods:
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        status = pod.get("status", {})
        conditions = status.get("conditions") or []
        if not any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            continue
        containers = status.get("containerStatuses") or []
        started = [c.get("state", {}).get("running", {}).get("startedAt") for c in containers]
        if containers and all(s and datetime.fromisoformat(s) >= floor for s in started):
            count += 1
    return count


def unpause_patch(doc: dict[str, Any], restore_replicas: bool) -> dict[str, Any] | None:
    """The merge patch that undoes PodComponents.pause on the workload `doc` (None: not
    paused): a Deployment's annotation dropped (and, `restore_replicas`, its replicas
    back), a DaemonSet's node selector dropped."""
    annotations = doc["metadata"].get("annotations") or {}
    if PAUSED_REPLICAS in annotations:
        patch: dict[str, Any] = {"metadata": {"annotations": {PAUSED_REPLICAS: None}}}
        if restore_replicas:
            patch["spec"] = {"replicas": int(annotations[PAUSED_REPLICAS])}
        return patch
    if PAUSED_LABEL in (doc["spec"]["template"]["spec"].get("nodeSelector") or {}):
        return {"spec": {"template": {"spec": {"nodeSelector": {PAUSED_LABEL: None}}}}}
    return None


class PodComponents:
    """Deploys, waits for, pauses and resumes Stackube's components on the devbox."""

    def __init__(self, settings: DevboxSettings, say: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.say = say

    # ---- the image ----------------------------------------------------------------------
    def _image_key(self) -> str:
        """What the image is made of: this checkout's sources and revision, and the
        dependency versions (a change in any means a new image)."""
        root = stackube_image.project_root()
        digest = hashlib.sha256()
        digest.update(stackube_image.revision().encode())  # the image's label
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
        """`<state>/deploy` from this checkout's deploy/ (deploy.write_overlay)."""
        return write_overlay(self.settings, deploy_dir(), image, base)

    def deploy(self, since: datetime | None = None) -> str:
        """Build (if needed), push, apply, and wait until every component is ready (with
        its containers running since `since`, when the node's containerd started then).
        Returns the image reference. Raises StepError with kubectl's message."""
        image = self.image()
        self.apply(image, since)
        return image

    def apply(self, image: str, since: datetime | None = None) -> None:
        """`kubectl apply -k` of the overlay with `image`, then every component rolled
        out and ready (a changed image is a rolling update of each; `since`: as in
        `deploy`)."""
        overlay = self.write_overlay(image)
        self.kubectl(
            "apply", "--server-side", "--field-manager=stackube-devbox", "--force-conflicts",
            "-k", str(overlay),
        )  # fmt: skip
        # As `up` restarts a paused host process: a paused component runs again (the
        # apply gave a Deployment its replicas back; a DaemonSet keeps the pause's selector).
        for item in COMPONENTS:
            self._clear_pause(item)
        self.wait_ready(self._schedulable(COMPONENTS), since=since)

    def _clear_pause(self, item: Component) -> None:
        patch = unpause_patch(self._object(item), restore_replicas=False)
        if patch is not None:
            self._patch(item, patch)

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

    def wait_ready(
        self,
        components: Sequence[Component],
        timeout: float = ROLLOUT_TIMEOUT,
        since: datetime | None = None,
    ) -> None:
        """Each rolled out, then each wanted pod ready: `rollout status` alone passes a
        one-replica Deployment with maxUnavailable 1 whose pod crash-loops, and, right
        after the node's containerd restarted (`since`), a workload whose status is
        still the one from before. Raises StepError naming the workload (with its pods'
        last log lines)."""
        for item in components:
            self.kubectl(
                "-n", NAMESPACE, "rollout", "status", item.ref, f"--timeout={timeout:.0f}s",
                timeout=timeout + 30,
            )  # fmt: skip
            deadline = time.monotonic() + timeout
            while not self.ready(item, since):
                if time.monotonic() > deadline:
                    raise StepError(
                        f"{item.ref}: pods not ready after {timeout:.0f}s;"
                        f" their logs end:\n{self.logs(item, lines=5)}"
                    )
                time.sleep(1)

    def ready(self, item: Component, since: datetime | None = None) -> bool:
        """Every wanted pod of the workload is ready (for `devbox status`); with `since`,
        that many pods also run containers started since then (`running_since`)."""
        try:
            doc = self._object(item)
        except StepError:
            return False
        status = doc.get("status", {})
        if item.kind == "daemonset":
            wanted = status.get("desiredNumberScheduled", 0)
            ready = bool(wanted) and status.get("numberReady", 0) == wanted
        else:
            wanted = doc.get("spec", {}).get("replicas", 1)
            ready = bool(wanted) and status.get("readyReplicas", 0) == wanted
        if not ready or since is None:
            return ready
        try:
            pods = json.loads(
                self.kubectl("-n", NAMESPACE, "get", "pods", "-l", item.selector, "-o", "json")
            )
        except (StepError, ValueError):
            return False
        return running_since(pods.get("items", []), since) >= int(wanted)

    # ---- pause and resume (tests that run their own instance) ---------------------------
    def pause(self, item: Component) -> None:
        """No pod of the workload runs on the node afterwards (a Deployment scaled to
        zero, its replicas kept in an annotation; a DaemonSet selecting no node)."""
        if item.kind == "deployment":
            doc = self._object(item)
            annotations = doc["metadata"].get("annotations") or {}
            # Paused twice: the replicas from before the first pause.
            replicas = annotations.get(PAUSED_REPLICAS) or str(doc["spec"].get("replicas") or 1)
            patch = {
                "metadata": {"annotations": {PAUSED_REPLICAS: replicas}},
                "spec": {"replicas": 0},
            }
        else:
            patch = {"spec": {"template": {"spec": {"nodeSelector": {PAUSED_LABEL: "true"}}}}}
        self._patch(item, patch)
        self._wait_no_pods(item)

    def resume(self, item: Component) -> None:
        patch = unpause_patch(self._object(item), restore_replicas=True)
        if patch is not None:
            self._patch(item, patch)
        self.wait_ready(self._schedulable([item]))

    def _object(self, item: Component) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(
            self.kubectl("-n", NAMESPACE, "get", item.ref, "-o", "json")
        )
        return doc

    def _patch(self, item: Component, patch: dict[str, Any]) -> None:
        self.kubectl("-n", NAMESPACE, "patch", item.ref, "--type=merge", "-p", json.dumps(patch))

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
