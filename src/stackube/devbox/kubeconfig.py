"""Kubeconfig documents (pure rendering; the caller writes them)."""

from __future__ import annotations

import base64
from typing import Any

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def render_kubeconfig(
    server: str,
    ca_pem: bytes,
    *,
    user: str,
    cert_pem: bytes,
    key_pem: bytes,
    cluster: str = "stackube",
) -> str:
    """A client-certificate kubeconfig with everything embedded (one file to hand out)."""
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": cluster,
                "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(cert_pem),
                    "client-key-data": _b64(key_pem),
                },
            }
        ],
        "contexts": [{"name": f"{user}@{cluster}", "context": {"cluster": cluster, "user": user}}],
        "current-context": f"{user}@{cluster}",
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)
