"""The TokenReview webhook: an HTTPS server (aiohttp) in front of Keystone.

What can be decided without Keystone is, first: a malformed token or audiences this
webhook does not serve are refused locally. Cached answers are served from the event
loop without touching a thread; misses go to Keystone in a thread pool, one validation
per token at a time (concurrent reviews of the same token wait for the same answer).
Invalid tokens, and valid ones not scoped to a tenant's project, are cached as denials
for the negative TTL. Keystone unreachable -> the review fails closed (not
authenticated) and nothing is cached, so it recovers by itself.
Tokens are never logged or kept: the cache is keyed by their SHA-256.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from stackube.api.tokens import TokenIdentity
from stackube.auth import review
from stackube.auth.cache import ReviewCache, token_key, valid_ttl
from stackube.errors import StackubeError

log = logging.getLogger(__name__)

REVIEWS = Counter("stackube_auth_reviews_total", "TokenReviews answered", ["result", "source"])
KEYSTONE_SECONDS = Histogram(
    "stackube_auth_keystone_seconds",
    "Keystone token validations",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)

Validate = Callable[[str], TokenIdentity | None]


@dataclass
class Reviewer:
    """Answers TokenReviews. `tenant_domain` is the Keystone domain of the tenants'
    projects (only tokens scoped to one of them authenticate); `audiences` those this
    webhook serves (empty: not audience-aware, see review.granted_audiences)."""

    validate: Validate
    tenant_domain: str
    audiences: tuple[str, ...] = ()
    ttl: float = 20.0
    negative_ttl: float = 5.0
    username_format: str = review.DEFAULT_USERNAME_FORMAT
    cache: ReviewCache = field(default_factory=ReviewCache)
    pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="keystone")
    )
    _inflight: dict[str, asyncio.Future[tuple[dict[str, Any] | None, str]]] = field(
        default_factory=dict
    )

    async def review(self, token: str, audiences: list[str]) -> dict[str, Any]:
        """The TokenReview response (authentication.k8s.io/v1) for a token and the
        audiences the request names. Never raises for a bad token or Keystone outage:
        those are denials."""
        if not review.well_formed(token):
            # Cheap to decide again: not cached, and never sent to Keystone.
            REVIEWS.labels(result="denied", source="local").inc()
            log.debug("refused a malformed token (%d characters)", len(token))
            return review.denied(review.MALFORMED)
        granted = review.granted_audiences(audiences, self.audiences)
        if granted is None:
            REVIEWS.labels(result="denied", source="local").inc()
            return review.denied(review.audience_error(audiences))
        key = token_key(token)
        cached = self.cache.get(key)
        if cached is not None:
            REVIEWS.labels(
                result="allowed" if cached.get("user") else "denied", source="cache"
            ).inc()
            return self._respond(cached, granted)
        pending = self._inflight.get(key)
        if pending is None:
            pending = asyncio.get_running_loop().create_future()
            self._inflight[key] = pending
            try:
                outcome = await self._ask_keystone(token, key)
                pending.set_result(outcome)
            finally:
                del self._inflight[key]
                if not pending.done():
                    pending.set_result((None, "Keystone validation failed"))
        user, reason = await pending
        return self._respond({"user": user, "reason": reason}, granted)

    async def _ask_keystone(self, token: str, key: str) -> tuple[dict[str, Any] | None, str]:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        try:
            identity = await loop.run_in_executor(self.pool, self.validate, token)
        except StackubeError as exc:
            # Fail closed, cache nothing: the next review asks Keystone again.
            log.warning("cannot validate a token with Keystone: %s", exc)
            REVIEWS.labels(result="error", source="keystone").inc()
            return None, "Keystone is unavailable"
        finally:
            KEYSTONE_SECONDS.observe(time.perf_counter() - started)
        if identity is None:
            return self._deny(key, review.INVALID)
        problem = review.scope_problem(identity, self.tenant_domain)
        if problem is not None:
            log.info("refused Keystone user %s: %s", identity.user_id, problem)
            return self._deny(key, problem)
        user = review.user_info(identity, self.username_format)
        expires_in = (identity.expires_at - datetime.datetime.now(datetime.UTC)).total_seconds()
        self.cache.put(key, {"user": user, "reason": ""}, valid_ttl(expires_in, self.ttl))
        REVIEWS.labels(result="allowed", source="keystone").inc()
        log.info("authenticated %s (uid %s)", user["username"], user["uid"])
        return user, ""

    def _deny(self, key: str, reason: str) -> tuple[None, str]:
        """Keystone's answer means no: cached for the negative TTL, so that a repeated
        bad token does not cost a Keystone call each time."""
        REVIEWS.labels(result="denied", source="keystone").inc()
        self.cache.put(key, {"user": None, "reason": reason}, self.negative_ttl)
        return None, reason

    @staticmethod
    def _respond(entry: dict[str, Any], audiences: list[str]) -> dict[str, Any]:
        if entry.get("user"):
            return review.allowed(entry["user"], audiences)
        return review.denied(str(entry.get("reason") or "not authenticated"))


def make_app(reviewer: Reviewer) -> web.Application:
    async def authenticate(request: web.Request) -> web.Response:
        try:
            token, audiences = review.parse_request(await request.read())
        except review.ReviewError as exc:
            return web.json_response(review.denied(str(exc)), status=400)
        return web.json_response(await reviewer.review(token, audiences))

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def metrics(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=64 * 1024)
    app.add_routes(
        [
            web.post("/authenticate", authenticate),
            web.get("/healthz", healthz),
            web.get("/metrics", metrics),
        ]
    )
    return app


def tls_context(cert: str, key: str, client_ca: str | None) -> ssl.SSLContext:
    """Serving TLS; with a client CA, only clients with a certificate it signed (the
    apiserver) may ask."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if client_ca:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context
