"""The webhook's Reviewer with a fake Keystone (a `validate` callable that counts its
calls), and the Keystone adapter's refusal of tokens it cannot send."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import requests
from keystoneauth1 import exceptions as ksa
from prometheus_client import REGISTRY

from stackube.api.tokens import TokenIdentity
from stackube.auth import review
from stackube.auth.webhook import Reviewer
from stackube.errors import TemporaryError
from stackube.openstack.cloud import Credentials
from stackube.openstack.tokens import TokenValidator

pytestmark = pytest.mark.unit

TOKEN = "gAAAAABnQ1Zx-aB_cD0123456789abcdefghij"
IDENTITY = TokenIdentity(
    user_id="u1",
    user_name="test",
    user_domain="stackube",
    project_id="p1",
    project_name="test",
    project_domain="stackube",
    roles=("member", "reader"),
    # Far enough ahead that a whole suite (unit tests may run an hour after collection)
    # never sees it expire; the expiry cases build their own.
    expires_at=datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=2),
)


@dataclass
class FakeKeystone:
    """`validate` answering `identity` (None: invalid) or raising `error`."""

    identity: TokenIdentity | None = IDENTITY
    error: Exception | None = None
    calls: list[str] = field(default_factory=list)

    def validate(self, token: str) -> TokenIdentity | None:
        self.calls.append(token)
        if self.error is not None:
            raise self.error
        return self.identity


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown(wait=True)


def reviewer_for(
    keystone: FakeKeystone, pool: ThreadPoolExecutor, audiences: tuple[str, ...] = ()
) -> Reviewer:
    return Reviewer(
        validate=keystone.validate, tenant_domain="stackube", audiences=audiences, pool=pool
    )


def ask(reviewer: Reviewer, token: str, audiences: list[str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = asyncio.run(reviewer.review(token, audiences or []))["status"]
    return status


def counted(result: str, source: str) -> Callable[[], float]:
    def value() -> float:
        sample = REGISTRY.get_sample_value(
            "stackube_auth_reviews_total", {"result": result, "source": source}
        )
        return sample or 0.0

    return value


def test_a_tenant_users_token_authenticates_with_role_groups(pool: ThreadPoolExecutor) -> None:
    keystone = FakeKeystone()
    status = ask(reviewer_for(keystone, pool), TOKEN)
    assert status["authenticated"] is True
    assert status["user"]["groups"] == [
        "stackube:project:p1",
        "stackube:project:p1:role:member",
        "stackube:project:p1:role:reader",
    ]
    assert "audiences" not in status
    assert keystone.calls == [TOKEN]


@pytest.mark.parametrize(
    "token", [f" {TOKEN}", f"{TOKEN}\n", "short", "x" * 5000, f"{TOKEN}\r\nX: y", "tök" * 10]
)
def test_a_malformed_token_never_reaches_keystone_and_is_no_outage(
    pool: ThreadPoolExecutor, token: str
) -> None:
    keystone = FakeKeystone()
    local, outage = counted("denied", "local"), counted("error", "keystone")
    before = local(), outage()
    reviewer = reviewer_for(keystone, pool)
    for _ in range(2):
        status = ask(reviewer, token)
        assert status == {"authenticated": False, "error": review.MALFORMED}
    assert "malformed token" in review.MALFORMED
    assert keystone.calls == []
    assert len(reviewer.cache) == 0  # cheap to decide again: nothing cached
    assert (local(), outage()) == (before[0] + 2, before[1])


@pytest.mark.parametrize(
    ("identity", "reason"),
    [
        (replace(IDENTITY, project_id=None, project_name=None, project_domain=None), "scoped"),
        (replace(IDENTITY, project_domain="Default"), "'Default'"),
        (None, "invalid Keystone token"),
    ],
)
def test_unscoped_foreign_and_invalid_tokens_are_refused_and_negative_cached(
    pool: ThreadPoolExecutor, identity: TokenIdentity | None, reason: str
) -> None:
    keystone = FakeKeystone(identity=identity)
    reviewer = reviewer_for(keystone, pool)
    from_cache = counted("denied", "cache")
    before = from_cache()
    for _ in range(3):
        status = ask(reviewer, TOKEN)
        assert status["authenticated"] is False and reason in status["error"]
        assert "user" not in status
    assert keystone.calls == [TOKEN]  # the repeats came from the negative cache
    assert from_cache() == before + 2


def test_a_domain_scoped_token_says_why(pool: ThreadPoolExecutor) -> None:
    domain_scoped = replace(
        IDENTITY, project_id=None, project_name=None, project_domain=None, roles=("admin",)
    )
    status = ask(reviewer_for(FakeKeystone(identity=domain_scoped), pool), TOKEN)
    assert status == {"authenticated": False, "error": "Keystone token is not scoped to a project"}


def test_keystone_unavailable_fails_closed_and_caches_nothing(pool: ThreadPoolExecutor) -> None:
    keystone = FakeKeystone(error=TemporaryError("Keystone answered 503"))
    reviewer = reviewer_for(keystone, pool)
    assert ask(reviewer, TOKEN) == {"authenticated": False, "error": "Keystone is unavailable"}
    keystone.error = None
    assert ask(reviewer, TOKEN)["authenticated"] is True
    assert len(keystone.calls) == 2


def test_audiences_not_configured_authenticate_without_echoing_them(
    pool: ThreadPoolExecutor,
) -> None:
    status = ask(reviewer_for(FakeKeystone(), pool), TOKEN, ["https://kubernetes.default.svc"])
    assert status["authenticated"] is True
    assert "audiences" not in status


def test_configured_audiences_answer_with_the_intersection_only(
    pool: ThreadPoolExecutor,
) -> None:
    keystone = FakeKeystone()
    reviewer = reviewer_for(keystone, pool, audiences=("stackube", "https://kubernetes"))
    status = ask(reviewer, TOKEN, ["other", "https://kubernetes", "stackube"])
    assert status["authenticated"] is True
    assert status["audiences"] == ["https://kubernetes", "stackube"]
    # The same token from the cache: audiences are decided per request.
    assert "audiences" not in ask(reviewer, TOKEN)
    assert ask(reviewer, TOKEN, ["stackube"])["audiences"] == ["stackube"]
    assert keystone.calls == [TOKEN]


def test_a_token_asked_for_audiences_not_served_is_refused_without_keystone(
    pool: ThreadPoolExecutor,
) -> None:
    keystone = FakeKeystone()
    reviewer = reviewer_for(keystone, pool, audiences=("stackube",))
    status = ask(reviewer, TOKEN, ["https://vault.example", "other"])
    assert status["authenticated"] is False
    assert "not valid for the requested audiences" in status["error"]
    assert "stackube" not in status["error"]
    assert keystone.calls == []


class RefusingSession:
    """A keystoneauth session stand-in: raises `error`, or fails the test if called."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls = 0

    def get(self, url: str, **kwargs: Any) -> Any:
        self.calls += 1
        if self.error is None:
            pytest.fail("the token should not have been sent")
        raise self.error


def validator_with(session: RefusingSession) -> TokenValidator:
    validator = TokenValidator(Credentials("http://keystone.invalid/v3", "svc", "pw", "service"))
    validator.session = session  # type: ignore[assignment]
    return validator


@pytest.mark.parametrize("token", [f" {TOKEN}", f"{TOKEN}\n", "a b", "tök", ""])
def test_the_adapter_never_sends_a_token_that_is_no_header_value(token: str) -> None:
    session = RefusingSession()
    assert validator_with(session).validate(token) is None
    assert session.calls == 0


def test_the_adapter_translates_only_keystoneauth_errors() -> None:
    down = ksa.ConnectFailure("Unable to establish connection to http://keystone.invalid")
    with pytest.raises(TemporaryError) as outage:
        validator_with(RefusingSession(down)).validate(TOKEN)
    assert outage.value.__cause__ is down
    # A request error that keystoneauth did not make (a bug of ours): not an outage.
    with pytest.raises(requests.exceptions.InvalidHeader):
        validator_with(RefusingSession(requests.exceptions.InvalidHeader("bad"))).validate(TOKEN)
