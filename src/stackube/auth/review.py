"""TokenReview requests and responses (authentication.k8s.io/v1), pure.

A valid Keystone token becomes a Kubernetes user: a username (format configurable,
prefixed by default so that no Keystone name can pose as `system:...`), the Keystone
user id as uid, one group per project the token is scoped to (the group the
controller's RoleBinding names), and the roles, project and domain as extras.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stackube.api.naming import project_group
from stackube.api.tokens import TokenIdentity

API_VERSION = "authentication.k8s.io/v1"
EXTRA_PREFIX = "stackube.kubernetes.io"
DEFAULT_USERNAME_FORMAT = "keystone:{user_domain}:{user_name}"


class ReviewError(ValueError):
    """The request is not a TokenReview we can answer."""


def parse_request(body: bytes) -> tuple[str, list[str]]:
    """The token and audiences of a TokenReview request."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReviewError(f"request body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "TokenReview":
        raise ReviewError("request is not a TokenReview")
    spec = doc.get("spec") or {}
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise ReviewError("TokenReview has no spec.token")
    audiences = [a for a in spec.get("audiences") or [] if isinstance(a, str)]
    return token, audiences


def username(identity: TokenIdentity, template: str = DEFAULT_USERNAME_FORMAT) -> str:
    return template.format(
        user_name=identity.user_name,
        user_id=identity.user_id,
        user_domain=identity.user_domain,
    )


def user_info(identity: TokenIdentity, template: str = DEFAULT_USERNAME_FORMAT) -> dict[str, Any]:
    groups = [project_group(identity.project_id)] if identity.project_id else []
    extra: dict[str, list[str]] = {
        f"{EXTRA_PREFIX}/user-domain": [identity.user_domain],
        f"{EXTRA_PREFIX}/roles": list(identity.roles),
    }
    if identity.project_id:
        extra[f"{EXTRA_PREFIX}/project-id"] = [identity.project_id]
        extra[f"{EXTRA_PREFIX}/project-name"] = [identity.project_name or ""]
        extra[f"{EXTRA_PREFIX}/project-domain"] = [identity.project_domain or ""]
    return {
        "username": username(identity, template),
        "uid": identity.user_id,
        "groups": groups,
        "extra": extra,
    }


def allowed(user: Mapping[str, Any], audiences: list[str]) -> dict[str, Any]:
    status: dict[str, Any] = {"authenticated": True, "user": dict(user)}
    if audiences:
        # Keystone tokens are not bound to an audience: valid for whichever was asked.
        status["audiences"] = audiences
    return {"apiVersion": API_VERSION, "kind": "TokenReview", "status": status}


def denied(reason: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TokenReview",
        "status": {"authenticated": False, "error": reason},
    }
