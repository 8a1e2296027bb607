"""The `stackube auth-webhook` and `stackube login` programs."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
from pathlib import Path

from aiohttp import web

from stackube.auth import login, review
from stackube.auth.webhook import Reviewer, make_app, tls_context
from stackube.config import parse_config, read_key_files
from stackube.errors import PermanentError, StackubeError
from stackube.openstack.cloud import Credentials, service_credentials
from stackube.openstack.tokens import TokenValidator, issue_token, token_revoked

log = logging.getLogger("stackube.auth")


def run_webhook(args: argparse.Namespace) -> int:
    from stackube.auth.cache import ReviewCache  # noqa: PLC0415 - keep imports local to the program

    config = parse_config(read_key_files(args.config_dir), read_key_files(args.secret_dir))
    for warning in config.warnings:
        log.warning("configuration: %s", warning)
    validator = TokenValidator(service_credentials(config), timeout=args.keystone_timeout)
    audiences = review.parse_audiences(args.audiences)
    reviewer = Reviewer(
        validate=validator.validate,
        tenant_domain=config.tenant_domain_name,
        audiences=audiences,
        ttl=args.cache_ttl,
        negative_ttl=args.negative_cache_ttl,
        username_format=args.username_format,
        cache=ReviewCache(args.cache_size),
    )
    log.info(
        "tokens of projects in Keystone domain %r; audiences: %s",
        config.tenant_domain_name,
        ", ".join(audiences) or "none (not audience-aware)",
    )
    context = tls_context(args.tls_cert, args.tls_key, args.client_ca)
    log.info("serving TokenReviews on https://%s:%d/authenticate", args.bind_address, args.port)
    web.run_app(
        make_app(reviewer),
        host=args.bind_address,
        port=args.port,
        ssl_context=context,
        access_log=None,
        print=None,
    )
    return 0


def run_login(args: argparse.Namespace) -> int:
    """kubectl's credential plugin: a cached token Keystone still honours, else a new
    one. Errors go to stderr (kubectl shows them) with exit code 1, or 2 for what is
    missing; never a traceback."""
    try:
        request = login.request_from(vars(args), os.environ)
    except login.LoginError as exc:
        print(f"stackube login: {exc}", file=sys.stderr)
        return 2
    cache = login.TokenCache(args.cache_dir)
    key = login.cache_key(request)
    now = datetime.datetime.now(datetime.UTC)
    cached = None if args.forget else cache.load(key, now)
    # A cached token may have been revoked (password changed, role removed): kubectl
    # would get a bare 401. Keystone says so in one call; the cache is dropped.
    if cached is not None and token_revoked(request.auth_url, cached[0]):
        cached = None
        cache.drop(key)
    if cached is None:
        try:
            token, expires = issue_token(
                Credentials(
                    auth_url=request.auth_url,
                    username=request.username,
                    password=request.password,
                    project_name=request.project_name,
                    user_domain=request.user_domain,
                    project_domain=request.project_domain,
                )
            )
        except StackubeError as exc:
            print(f"stackube login: {exc}", file=sys.stderr)
            return 1
        try:
            cache.store(key, token, expires, request.auth_url)
        except OSError as exc:  # kubectl still gets its token; the next call logs in again
            print(f"stackube login: token not kept in {args.cache_dir}: {exc}", file=sys.stderr)
    else:
        token, expires = cached
    json.dump(login.exec_credential(token, expires), sys.stdout)
    print()
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    """Writes (or prints) a tenant user's kubeconfig. Raises PermanentError naming the
    file for a CA that cannot be read or an output that cannot be written."""
    import base64  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    try:
        ca = base64.b64encode(Path(args.certificate_authority).read_bytes()).decode()
    except OSError as exc:
        raise PermanentError(
            f"cannot read the API server's CA file {args.certificate_authority}: "
            f"{exc.strerror or exc}"
        ) from exc
    doc = login.kubeconfig_for_tenant(
        tenant=args.tenant,
        server=args.server,
        ca_data=ca,
        auth_url=args.auth_url,
        username=args.username or args.tenant,
        domain=args.domain,
    )
    text = yaml.safe_dump(doc, sort_keys=False)
    if not args.output:
        print(text, end="")
        return 0
    output = Path(args.output)
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        output.chmod(0o600)
    except OSError as exc:
        raise PermanentError(f"cannot write {output}: {exc.strerror or exc}") from exc
    return 0
