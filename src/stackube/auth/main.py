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
from stackube.openstack.cloud import Credentials, service_credentials
from stackube.openstack.tokens import TokenValidator, issue_token

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
    try:
        request = login.request_from(vars(args), os.environ)
    except login.LoginError as exc:
        print(f"stackube login: {exc}", file=sys.stderr)
        return 2
    cache = login.TokenCache(args.cache_dir)
    key = login.cache_key(request)
    now = datetime.datetime.now(datetime.UTC)
    cached = None if args.forget else cache.load(key, now)
    if cached is None:
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
        cache.store(key, token, expires)
    else:
        token, expires = cached
    json.dump(login.exec_credential(token, expires), sys.stdout)
    print()
    return 0


def run_kubeconfig(args: argparse.Namespace) -> int:
    import base64  # noqa: PLC0415

    import yaml  # noqa: PLC0415

    ca = base64.b64encode(Path(args.certificate_authority).read_bytes()).decode()
    doc = login.kubeconfig_for_tenant(
        tenant=args.tenant,
        server=args.server,
        ca_data=ca,
        auth_url=args.auth_url,
        username=args.username or args.tenant,
        command=[sys.executable, "-m", "stackube"],
    )
    text = yaml.safe_dump(doc, sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
        Path(args.output).chmod(0o600)
    else:
        print(text, end="")
    return 0
