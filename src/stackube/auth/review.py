"""TokenReview requests and responses (authentication.k8s.io/v1), pure.

Only a well-formed token (checked before anyone asks Keystone), scoped to a project in
the tenants' Keystone domain, authenticates. It becomes a Kubernetes user: a username
(format configurable, prefixed by default so that no Keystone name can pose as
`system:...`), the Keystone user id as uid, the project's group and one group per
Keystone role in the token (the groups the controller's RoleBindings name), and the
roles, project and domain as extras. Audiences follow the TokenReview API: see
granted_audiences.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from stackube.api.naming import project_group, role_group
from stackube.api.tokens import TokenIdentity

API_VERSION = "authentication.k8s.io/v1"
EXTRA_PREFIX = "stackube.kubernetes.io"
DEFAULT_USERNAME_FORMAT = "keystone:{user_domain}:{user_name}"

# Keystone's tokens (Fernet, JWS) are URL-safe base64 text, JWS with dots between its
# parts: letters, digits, `-`, `_`, `=` and `.`. Fernet tokens are some 180-250
# characters, JWS ones longer; 16 to 2048 leaves room without letting anything else
# through. Anything else cannot be a Keystone token, so it is refused here, without a
# Keystone call: blanks or newlines around a real token (they would make the HTTP
# library refuse the header, which looked like an outage), other encodings, huge
# bodies. fullmatch, not `$`, which would let a trailing newline through.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_\-=.]{16,2048}")

MALFORMED = "malformed token: not a Keystone token"
INVALID = "invalid Keystone token"
NOT_SCOPED = "Keystone token is not scoped to a project"


class ReviewError(ValueError):
    """The request is not a TokenReview we can answer."""


def parse_request(body: bytes) -> tuple[str, list[str]]:
    """The token and audiences of a TokenReview request. Raises ReviewError when the body
    is not a TokenReview with a spec.token string (and, if any, a list of audiences)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReviewError(f"request body is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("kind") != "TokenReview":
        raise ReviewError("request is not a TokenReview")
    spec = doc.get("spec") or {}
    if not isinstance(spec, dict):
        raise ReviewError("TokenReview spec is not an object")
    token = spec.get("token")
    if not isinstance(token, str) or not token:
        raise ReviewError("TokenReview has no spec.token")
    requested = spec.get("audiences") or []
    if not isinstance(requested, list):
        raise ReviewError("TokenReview spec.audiences is not a list")
    audiences = [a for a in requested if isinstance(a, str)]
    return token, audiences


def username(identity: TokenIdentity, template: str = DEFAULT_USERNAME_FORMAT) -> str:
    return template.format(
        user_name=identity.user_name,
        user_id=identity.user_id,
        user_domain=identity.user_domain,
    )


def well_formed(token: str) -> bool:
    """Whether `token` has the shape of a Keystone token (TOKEN_SHAPE, whole string)."""
    return TOKEN_SHAPE.fullmatch(token) is not None


def parse_audiences(text: str) -> tuple[str, ...]:
    """`--audiences`: comma-separated, blanks around names ignored, empty names and
    repeats dropped (first kept)."""
    return tuple(dict.fromkeys(a.strip() for a in text.split(",") if a.strip()))


def granted_audiences(requested: Sequence[str], configured: Sequence[str]) -> list[str] | None:
    """The audiences a review may put in status.audiences, per the TokenReview API.

    - nothing requested: [] (status.audiences omitted; the apiserver's own audience);
    - requested, none configured: [] as well: this webhook is then not audience-aware,
      and the apiserver accepts the answer for its own implicit audience only;
    - both: the requested ones that are configured, in the requested order; None when
      there are none: the token must not authenticate (audience_error says why).
    Never an audience that is not configured.
    """
    if not requested or not configured:
        return []
    allowed = set(configured)
    granted = list(dict.fromkeys(a for a in requested if a in allowed))
    return granted or None


def audience_error(requested: Iterable[str]) -> str:
    return f"the token is not valid for the requested audiences ({', '.join(requested)})"


def scope_problem(identity: TokenIdentity, tenant_domain: str) -> str | None:
    """Why a valid Keystone token must still not authenticate, or None: only tokens
    scoped to a project in the tenants' domain (`tenant-domain-name`) do. Unscoped and
    domain-scoped tokens, and projects elsewhere (e.g. the cloud's own admin project),
    are not a Stackube tenant's."""
    if not identity.project_id:
        return NOT_SCOPED
    if identity.project_domain != tenant_domain:
        return (
            f"Keystone token is scoped to a project in domain {identity.project_domain!r}, "
            f"not in the tenants' domain {tenant_domain!r}"
        )
    return None


def user_info(identity: TokenIdentity, template: str = DEFAULT_USERNAME_FORMAT) -> dict[str, Any]:
    """The TokenReview status.user for a valid identity: {username, uid, groups, extra}.
    Groups: project_group and one role_group per Keystone role in the token (Keystone
    lists implied roles too: member brings reader); none without a project."""
    groups: list[str] = []
    if identity.project_id:
        groups.append(project_group(identity.project_id))
        groups += [role_group(identity.project_id, r) for r in sorted(set(identity.roles))]
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
    """An authenticated TokenReview; `audiences` are granted_audiences' answer (only
    set in the status when not empty)."""
    status: dict[str, Any] = {"authenticated": True, "user": dict(user)}
    if audiences:
        status["audiences"] = list(audiences)
    return {"apiVersion": API_VERSION, "kind": "TokenReview", "status": status}


def denied(reason: str) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "TokenReview",
        "status": {"authenticated": False, "error": reason},
    }
