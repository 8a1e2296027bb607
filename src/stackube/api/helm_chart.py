"""Stackube's Helm chart, made from deploy/'s kustomization (never edited by hand).

`stackube manifests -o deploy` writes it to deploy/helm/stackube. The chart renders the
same objects as `kubectl kustomize deploy` with its default values; values carry what
an operator sets (the seed's stackube-config keys, the credentials, the image, each
workload's replicas and its containers' resources). CRDs go in the chart's `crds/`:
Helm installs them once and never upgrades or deletes them (docs/deploy.md).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from stackube import __version__
from stackube.api.types import KEEP_ON_UNINSTALL

PLACEHOLDER_IMAGE = "localhost/stackube"
CONFIG_MAP, SECRET = "stackube-config", "stackube-credentials"
CHART_DIR = "helm/stackube"
HEADER = (
    "# Generated from deploy/kustomization.yaml by `stackube manifests -o deploy`: edit\n"
    "# those files, not this one.\n"
)
HELPERS = """{{/* The image of every Stackube workload: by digest if given, else by tag. */}}
{{- define "stackube.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}
"""
_SENTINEL = re.compile(
    r"^(?P<indent> *)(?P<key>[A-Za-z]+): __HELM_(?P<what>[A-Z]+)_(?P<arg>[^_]*)__$"
)


def _is_ours(image: str) -> bool:
    return image.split("@", maxsplit=1)[0].rsplit(":", 1)[0] == PLACEHOLDER_IMAGE


def _template(doc: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`doc` with the values' places marked by sentinels (their defaults into `values`)."""
    kind, name = doc["kind"], doc["metadata"]["name"]
    if (doc["metadata"].get("labels") or {}).get(KEEP_ON_UNINSTALL) == "true":
        # What `kubectl delete -k` keeps, `helm uninstall` keeps too.
        doc["metadata"].setdefault("annotations", {})["helm.sh/resource-policy"] = "keep"
    if kind == "ConfigMap" and name == CONFIG_MAP:
        values["config"] = dict(doc.get("data") or {})
        doc["data"] = "__HELM_CONFIG___"
    elif kind == "Secret" and name == SECRET:
        values["credentials"] = dict(doc.get("stringData") or {})
        doc["stringData"] = "__HELM_CREDENTIALS___"
    elif kind in ("Deployment", "DaemonSet"):
        spec = doc["spec"]
        if kind == "Deployment" and "replicas" in spec:
            values["replicas"][name] = spec["replicas"]
            spec["replicas"] = f"__HELM_REPLICAS_{name}__"
        pod = spec["template"]["spec"]
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            if _is_ours(str(container.get("image", ""))):
                container["image"] = "__HELM_IMAGE___"
            if "resources" in container:
                key = f"{name}/{container['name']}"
                values["resources"][key] = container["resources"]
                container["resources"] = f"__HELM_RESOURCES_{key}__"
    return doc


def _expression(indent: str, key: str, what: str, arg: str) -> str:
    """The template line(s) for one sentinel."""
    deeper = len(indent) + 2
    if what == "IMAGE":
        return f'{indent}{key}: {{{{ include "stackube.image" . | quote }}}}'
    if what == "REPLICAS":
        return f'{indent}{key}: {{{{ index .Values.replicas "{arg}" }}}}'
    source = {
        "CONFIG": ".Values.config",
        "CREDENTIALS": ".Values.credentials",
        "RESOURCES": f'(index .Values.resources "{arg}")',
    }[what]
    return f"{indent}{key}:\n{indent}  {{{{- toYaml {source} | nindent {deeper} }}}}"


def chart_files(resources: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The chart's files (path under deploy/ -> text) from the kustomization's resources
    in order, as (path under deploy/, text). Raises ValueError if the configuration
    ConfigMap or Secret is missing (the chart's values start from them)."""
    values: dict[str, Any] = {
        "image": {"repository": PLACEHOLDER_IMAGE, "tag": "", "digest": ""},
        "replicas": {},
        "resources": {},
    }
    files: dict[str, str] = {}
    for path, text in resources:
        docs = [doc for doc in yaml.safe_load_all(text) if doc]
        if docs and all(doc["kind"] == "CustomResourceDefinition" for doc in docs):
            files[f"{CHART_DIR}/crds/{path.replace('/', '-')}"] = text
            continue
        templated = [_template(doc, values) for doc in docs]
        body = yaml.safe_dump_all(templated, sort_keys=False, width=2**31)
        lines = []
        for line in body.splitlines():
            found = _SENTINEL.match(line)
            lines.append(_expression(**found.groupdict()) if found else line)
        files[f"{CHART_DIR}/templates/{path.replace('/', '-')}"] = HEADER + "\n".join(lines) + "\n"
    if "config" not in values or "credentials" not in values:
        raise ValueError(f"the resources lack the ConfigMap {CONFIG_MAP} or the Secret {SECRET}")
    files[f"{CHART_DIR}/templates/_helpers.tpl"] = HELPERS
    files[f"{CHART_DIR}/values.yaml"] = HEADER + yaml.safe_dump(values, sort_keys=False)
    files[f"{CHART_DIR}/Chart.yaml"] = yaml.safe_dump(
        {
            "apiVersion": "v2",
            "name": "stackube",
            "description": "Multi-tenant Kubernetes with Keystone, Neutron and Cinder",
            "type": "application",
            "version": __version__,
            "appVersion": __version__,
        },
        sort_keys=False,
    )
    return files


def values_of(files: Mapping[str, str]) -> dict[str, Any]:
    """The chart's default values (for tests and docs)."""
    return dict(yaml.safe_load(files[f"{CHART_DIR}/values.yaml"]))
