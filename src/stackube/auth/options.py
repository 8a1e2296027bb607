"""Command-line options of the auth programs (apart, so `stackube --help` stays light)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stackube.auth.login import default_cache_dir


def add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config-dir",
        type=Path,
        required=True,
        help="stackube-config (auth-url, username, tenant-name, ...), mounted",
    )
    parser.add_argument("--secret-dir", type=Path, help="the Secret with `password`, mounted")
    parser.add_argument("--tls-cert", required=True)
    parser.add_argument("--tls-key", required=True)
    parser.add_argument("--client-ca", help="only clients with a certificate from this CA")
    parser.add_argument("--bind-address", default="0.0.0.0")  # noqa: S104 - a pod's port
    parser.add_argument("--port", type=int, default=8443)
    parser.add_argument(
        "--cache-ttl",
        type=float,
        default=20.0,
        help="seconds a valid token's review is reused (never past its expiry)",
    )
    parser.add_argument("--negative-cache-ttl", type=float, default=5.0)
    parser.add_argument("--cache-size", type=int, default=10000)
    parser.add_argument("--keystone-timeout", type=float, default=5.0)
    parser.add_argument(
        "--audiences",
        default="",
        help="comma-separated audiences this webhook serves; a review asking only for "
        "others is refused (default: none, not audience-aware: the apiserver's own only)",
    )
    parser.add_argument(
        "--username-format",
        default="keystone:{user_domain}:{user_name}",
        help="fields: {user_name} {user_id} {user_domain}",
    )


def add_login_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--auth-url", help="Keystone, e.g. http://host:5000/v3 (default: $OS_AUTH_URL)"
    )
    parser.add_argument("--username", help="the Keystone user (default: $OS_USERNAME)")
    parser.add_argument(
        "--project-name", help="the tenant's Keystone project (default: $OS_PROJECT_NAME)"
    )
    for flag, var in (
        ("user-domain-name", "OS_USER_DOMAIN_NAME"),
        ("project-domain-name", "OS_PROJECT_DOMAIN_NAME"),
    ):
        parser.add_argument(
            f"--{flag}",
            help=f"default: ${var}, else Default (a Stackube tenant's: stackube, "
            "as `stackube kubeconfig` writes it)",
        )
    parser.add_argument(
        "--password",
        help="discouraged (other users see command lines): the default, $OS_PASSWORD, is the way",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=default_cache_dir(os.environ),
        help="where tokens are kept until shortly before they expire (default: %(default)s)",
    )
    parser.add_argument("--forget", action="store_true", help="drop the cached token first")


def add_kubeconfig_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--username", help="default: the tenant's name")
    parser.add_argument("--server", required=True, help="the apiserver URL")
    parser.add_argument("--certificate-authority", required=True, help="the apiserver's CA file")
    parser.add_argument("--auth-url", required=True, help="Keystone, e.g. http://host:5000/v3")
    parser.add_argument(
        "--domain",
        default="stackube",
        help="the Keystone domain of the tenant's project and users (default: %(default)s)",
    )
    parser.add_argument("-o", "--output", help="write it here, 0600 (default: print it)")
