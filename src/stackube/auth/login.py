"""`stackube login`: a kubectl exec credential plugin (client.authentication.k8s.io/v1)
that gets a project-scoped Keystone token and caches it privately until shortly before
it expires. The rendering and the cache policy are pure; files are 0600 in a 0700 dir."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXEC_API_VERSION = "client.authentication.k8s.io/v1"
# Do not hand out a token that expires within this margin (clock skew, long commands).
REFRESH_MARGIN = datetime.timedelta(minutes=2)


@dataclass(frozen=True)
class LoginRequest:
    auth_url: str
    username: str
    password: str
    project_name: str
    user_domain: str
    project_domain: str


class LoginError(ValueError):
    """What is missing for a login; the message says where to put it."""


def request_from(flags: Mapping[str, str | None], env: Mapping[str, str]) -> LoginRequest:
    """Flags win over OS_* variables; the password only from OS_PASSWORD (or a flag,
    discouraged: command lines are visible to other users)."""

    def pick(flag: str, var: str, default: str | None = None) -> str:
        value = flags.get(flag) or env.get(var) or default
        if not value:
            if flag == "password":
                raise LoginError(
                    "no password: set OS_PASSWORD to your Keystone password (kubectl runs "
                    "`stackube login` with your environment)"
                )
            raise LoginError(
                f"no {flag.replace('_', '-')}: pass --{flag.replace('_', '-')} or set {var}"
            )
        return value

    return LoginRequest(
        auth_url=pick("auth_url", "OS_AUTH_URL"),
        username=pick("username", "OS_USERNAME"),
        password=pick("password", "OS_PASSWORD"),
        project_name=pick("project_name", "OS_PROJECT_NAME"),
        user_domain=pick("user_domain_name", "OS_USER_DOMAIN_NAME", "Default"),
        project_domain=pick("project_domain_name", "OS_PROJECT_DOMAIN_NAME", "Default"),
    )


def cache_key(req: LoginRequest) -> str:
    """Who, where and with which password (hashed together): a new password never
    reuses a token got with the old one, which Keystone revoked when it changed."""
    ident = "\0".join(
        [
            req.auth_url,
            req.user_domain,
            req.username,
            req.project_domain,
            req.project_name,
            req.password,
        ]
    )
    return hashlib.sha256(ident.encode()).hexdigest()


def exec_credential(token: str, expires_at: datetime.datetime) -> dict[str, Any]:
    stamp = expires_at.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": stamp},
    }


def still_fresh(expires_at: datetime.datetime, now: datetime.datetime) -> bool:
    return expires_at - REFRESH_MARGIN > now


def same_url(a: str, b: str) -> bool:
    """Two Keystone URLs alike but for a trailing slash."""
    return bool(a) and a.rstrip("/") == b.rstrip("/")


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME/stackube/tokens, else ~/.cache/stackube/tokens."""
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "stackube" / "tokens"


class TokenCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str, now: datetime.datetime) -> tuple[str, datetime.datetime] | None:
        try:
            doc = json.loads(self._path(key).read_text())
            expires = datetime.datetime.fromisoformat(doc["expires_at"])
        except (OSError, ValueError, KeyError):
            return None
        return (str(doc["token"]), expires) if still_fresh(expires, now) else None

    def drop(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def forget(self, auth_url: str) -> int:
        """Drop every kept token of this Keystone (e.g. a devbox purged with its
        Keystone); returns how many. Files of other Keystones stay."""
        dropped = 0
        for path in self.directory.glob("*.json"):
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(doc, dict) and same_url(str(doc.get("auth_url") or ""), auth_url):
                path.unlink(missing_ok=True)
                dropped += 1
        return dropped

    def store(
        self, key: str, token: str, expires_at: datetime.datetime, auth_url: str = ""
    ) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        path = self._path(key)
        # A name of its own: kubectl may run two plugins at once (mkstemp: 0600).
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as f:
            doc = {"token": token, "expires_at": expires_at.isoformat(), "auth_url": auth_url}
            json.dump(doc, f)
        Path(tmp).replace(path)


# kubectl prints this when it cannot find the plugin (client.authentication.k8s.io/v1).
INSTALL_HINT = (
    "This kubeconfig logs in with Keystone through `stackube login`: install Stackube "
    "(pip install <the Stackube wheel or source directory>, see docs/tenant-guide.md) "
    "so that `stackube` is on your PATH, and set OS_PASSWORD."
)


def kubeconfig_for_tenant(
    *,
    tenant: str,
    server: str,
    ca_data: str,
    auth_url: str,
    username: str,
    domain: str = "stackube",
) -> dict[str, Any]:
    """A kubeconfig whose user runs `stackube login` (the console script, found on the
    PATH of whoever uses it: portable) for the tenant's project, user and project in
    `domain`; the password comes from OS_PASSWORD in the user's environment, so the
    file holds no secret."""
    args = [
        "login",
        f"--auth-url={auth_url}",
        f"--username={username}",
        f"--project-name={tenant}",
        f"--user-domain-name={domain}",
        f"--project-domain-name={domain}",
    ]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "stackube",
                "cluster": {"server": server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [
            {
                "name": f"{tenant}-{username}",
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API_VERSION,
                        "command": "stackube",
                        "args": args,
                        "installHint": INSTALL_HINT,
                        "interactiveMode": "Never",
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
        "contexts": [
            {
                "name": tenant,
                "context": {
                    "cluster": "stackube",
                    "user": f"{tenant}-{username}",
                    "namespace": tenant,
                },
            }
        ],
        "current-context": tenant,
    }
