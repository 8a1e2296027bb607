"""Keystone tokens: validating others' tokens (for the webhook) and getting one's own
(for `stackube login`). Every call has a timeout."""

from __future__ import annotations

import datetime
import re
from typing import Any

from keystoneauth1 import exceptions as ksa
from keystoneauth1 import session as ksa_session
from keystoneauth1.identity import v3

from stackube.api.tokens import TokenIdentity
from stackube.errors import PermanentError, TemporaryError
from stackube.openstack.cloud import Credentials
from stackube.openstack.errors import translate

# What can travel as an HTTP header value unchanged: visible ASCII, no blanks. Anything
# else is no Keystone token, and would make requests refuse the header (an error that
# keystoneauth reports as a connection failure, with the value in its message) or
# http.client fail to encode it.
_SENDABLE_TOKEN = re.compile(r"[!-~]+")


def _password_auth(creds: Credentials) -> v3.Password:
    return v3.Password(
        auth_url=creds.auth_url,
        username=creds.username,
        password=creds.password,
        project_name=creds.project_name,
        user_domain_name=creds.user_domain,
        project_domain_name=creds.project_domain,
    )


def _tokens_url(auth_url: str) -> str:
    """Keystone's `/v3/auth/tokens` under an auth URL (…/v3, with or without a slash)."""
    return auth_url.rstrip("/") + "/auth/tokens"


def _expiry(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def parse_token_body(body: dict[str, Any]) -> TokenIdentity:
    """Keystone's `GET /v3/auth/tokens` answer -> TokenIdentity (pure)."""
    token = body["token"]
    user, project = token["user"], token.get("project")
    return TokenIdentity(
        user_id=user["id"],
        user_name=user["name"],
        user_domain=user["domain"]["name"],
        project_id=project["id"] if project else None,
        project_name=project["name"] if project else None,
        project_domain=project["domain"]["name"] if project else None,
        roles=tuple(sorted(r["name"] for r in token.get("roles") or [])),
        expires_at=_expiry(token["expires_at"]),
    )


class TokenValidator:
    """Validates tokens with a service account's own token (which keystoneauth renews)."""

    def __init__(self, creds: Credentials, timeout: float = 5.0) -> None:
        self.url = _tokens_url(creds.auth_url)
        self.session = ksa_session.Session(auth=_password_auth(creds), timeout=timeout)

    def validate(self, token: str) -> TokenIdentity | None:
        """TokenIdentity for a valid token; None for one Keystone says is invalid, expired
        or revoked, or one that cannot be a token at all (not sent). Raises
        TemporaryError when Keystone is unreachable, failing or answers nonsense, and
        PermanentError when it refuses Stackube's own credentials or the validation.
        Only keystoneauth's errors are translated: anything else is a bug, not an
        outage. No error message carries the token."""
        if not _SENDABLE_TOKEN.fullmatch(token):
            return None
        try:
            response = self.session.get(
                self.url,
                headers={"X-Subject-Token": token},
                raise_exc=False,
                # Our token may have expired: keystoneauth re-authenticates once on a 401.
                allow_reauth=True,
            )
        except ksa.ClientException as exc:
            raise translate(exc, "Keystone token validation") from exc
        if response.status_code in (401, 404):
            return None
        if response.status_code >= 500:
            raise TemporaryError(f"Keystone answered {response.status_code}")
        if response.status_code != 200:
            raise PermanentError(f"Keystone answered {response.status_code} to a validation")
        try:
            return parse_token_body(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise TemporaryError(
                f"Keystone's token validation answer is not understood: {type(exc).__name__}"
            ) from exc


class LoginRefusedError(PermanentError):
    """Keystone refused a user's own credentials (HTTP 401): the message names the user,
    the domains and the project, and what to check."""


def refusal_message(creds: Credentials) -> str:
    """What a 401 to a password login means, for the user who tried (pure). Keystone
    says 401 alike for a wrong password, a user or project not in the named domain,
    and a project the user has no role on."""
    return (
        f"Keystone at {creds.auth_url} refused the login of user {creds.username!r} "
        f"(domain {creds.user_domain!r}) to project {creds.project_name!r} "
        f"(domain {creds.project_domain!r}): check the password (OS_PASSWORD; after a "
        "password change, the new one), and the domains: a Stackube tenant's user and "
        "project are in the operator's tenant domain, by default domain 'stackube' "
        "(--user-domain-name, --project-domain-name; `stackube kubeconfig --domain`)"
    )


def issue_token(creds: Credentials, timeout: float = 10.0) -> tuple[str, datetime.datetime]:
    """A project-scoped token for these credentials, and when it expires. Raises
    LoginRefusedError when Keystone refuses them, TemporaryError when it cannot be reached
    or fails (keystoneauth's errors only; the message never holds the password)."""
    auth = _password_auth(creds)
    session = ksa_session.Session(auth=auth, timeout=timeout)
    try:
        access = auth.get_access(session)
    except ksa.Unauthorized as exc:
        raise LoginRefusedError(refusal_message(creds)) from exc
    except ksa.ClientException as exc:
        raise translate(exc, f"Keystone login at {creds.auth_url}") from exc
    if access.expires is None:
        raise PermanentError("Keystone issued a token without an expiry")
    return str(access.auth_token), access.expires


def token_revoked(auth_url: str, token: str, timeout: float = 3.0) -> bool:
    """Whether Keystone says this token (validated with itself, `GET /v3/auth/tokens`)
    is no longer valid: revoked by a password change, a role removed, or expired. An
    unreachable or failing Keystone answers False: the API server has the last word."""
    if not _SENDABLE_TOKEN.fullmatch(token):
        return True
    session = ksa_session.Session(timeout=timeout)
    try:
        response = session.get(
            _tokens_url(auth_url),
            headers={"X-Auth-Token": token, "X-Subject-Token": token},
            authenticated=False,
            raise_exc=False,
        )
    except ksa.ClientException:
        return False
    return response.status_code in (401, 404)
