"""Pure pieces of stackube-auth: TokenReview shapes, the cache, login's rendering."""

import datetime
import json
from dataclasses import replace

import pytest

from stackube.api.tokens import TokenIdentity
from stackube.auth import login, review
from stackube.auth.cache import ReviewCache, token_key, valid_ttl
from stackube.openstack.cloud import Credentials
from stackube.openstack.tokens import parse_token_body, refusal_message

pytestmark = pytest.mark.unit

EXPIRES = datetime.datetime(2026, 11, 26, 12, 0, tzinfo=datetime.UTC)
IDENTITY = TokenIdentity(
    user_id="u1",
    user_name="test",
    user_domain="stackube",
    project_id="p1",
    project_name="test",
    project_domain="stackube",
    roles=("member", "reader"),
    expires_at=EXPIRES,
)


def test_a_valid_token_becomes_a_user_in_the_projects_group_and_role_groups() -> None:
    info = review.user_info(IDENTITY)
    assert info["username"] == "keystone:stackube:test"
    assert info["uid"] == "u1"
    assert info["groups"] == [
        "stackube:project:p1",
        "stackube:project:p1:role:member",
        "stackube:project:p1:role:reader",
    ]
    assert info["extra"]["stackube.kubernetes.io/roles"] == ["member", "reader"]
    assert info["extra"]["stackube.kubernetes.io/project-id"] == ["p1"]


def test_username_format_is_configurable_and_unscoped_tokens_get_no_group() -> None:
    unscoped = TokenIdentity("u1", "test", "Default", None, None, None, (), EXPIRES)
    info = review.user_info(unscoped, "{user_id}")
    assert info["username"] == "u1"
    assert info["groups"] == []


def test_only_tokens_scoped_to_a_project_of_the_tenant_domain_pass() -> None:
    assert review.scope_problem(IDENTITY, "stackube") is None
    unscoped = replace(IDENTITY, project_id=None, project_name=None, project_domain=None)
    assert review.scope_problem(unscoped, "stackube") == review.NOT_SCOPED
    assert "not scoped to a project" in review.NOT_SCOPED
    # Domain-scoped tokens have roles but no project.
    domain_scoped = replace(unscoped, roles=("admin",))
    assert review.scope_problem(domain_scoped, "stackube") == review.NOT_SCOPED
    admin_project = replace(IDENTITY, project_name="admin", project_domain="Default")
    problem = review.scope_problem(admin_project, "stackube")
    assert problem is not None and "'Default'" in problem and "'stackube'" in problem
    assert review.scope_problem(IDENTITY, "elsewhere") is not None


@pytest.mark.parametrize(
    "token",
    [
        "gAAAAABn" + "x" * 8,  # 16: the shortest accepted
        "gAAAAABnQ1Zx-aB_cD=" * 10,  # Fernet-like
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2lnbmF0dXJl",  # JWS: three dotted parts
        "a" * 2048,
    ],
)
def test_keystone_shaped_tokens_are_well_formed(token: str) -> None:
    assert review.well_formed(token)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "short-token-15c",  # 15 characters
        " gAAAAABnQ1Zx-aB_cD0123456789",  # leading blank
        "gAAAAABnQ1Zx-aB_cD0123456789\n",  # trailing newline ($ would let it through)
        "gAAAAABnQ1Zx-aB_cD0123456789\r\nX-Injected: 1",
        "gAAAAABnQ1Zx+aB/cD0123456789",  # standard, not URL-safe, base64
        "tökenwithumlauts0123456789",
        "a" * 2049,
    ],
)
def test_other_text_is_a_malformed_token(token: str) -> None:
    assert not review.well_formed(token)


@pytest.mark.parametrize(
    ("requested", "configured", "granted"),
    [
        ([], [], []),
        ([], ["stackube"], []),
        (["https://kubernetes.default.svc"], [], []),  # not audience-aware: none echoed
        (["a", "b", "c"], ["c", "a"], ["a", "c"]),  # requested order
        (["a", "a"], ["a"], ["a"]),
        (["other"], ["stackube"], None),
    ],
)
def test_audiences_follow_the_tokenreview_api(
    requested: list[str], configured: list[str], granted: list[str] | None
) -> None:
    assert review.granted_audiences(requested, configured) == granted


def test_audiences_flag_and_responses() -> None:
    assert review.parse_audiences("") == ()
    assert review.parse_audiences(" a, b,,a ,") == ("a", "b")
    ok = review.allowed(review.user_info(IDENTITY), [])
    assert "audiences" not in ok["status"]
    assert "requested audiences (x, y)" in review.audience_error(["x", "y"])


def test_request_parsing_and_responses() -> None:
    body = json.dumps(
        {
            "apiVersion": review.API_VERSION,
            "kind": "TokenReview",
            "spec": {"token": "abc", "audiences": ["https://kubernetes.default.svc"]},
        }
    )
    token, audiences = review.parse_request(body.encode())
    assert (token, audiences) == ("abc", ["https://kubernetes.default.svc"])
    ok = review.allowed(review.user_info(IDENTITY), audiences)
    assert ok["status"]["authenticated"] is True
    assert ok["status"]["audiences"] == audiences
    no = review.denied("invalid Keystone token")
    assert no["status"] == {"authenticated": False, "error": "invalid Keystone token"}


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"kind": "SubjectAccessReview"}',
        b'{"kind": "TokenReview", "spec": {}}',
        b'{"kind": "TokenReview", "spec": []}',
        b'{"kind": "TokenReview", "spec": {"token": "t", "audiences": "a"}}',
    ],
)
def test_bad_requests_are_refused(body: bytes) -> None:
    with pytest.raises(review.ReviewError):
        review.parse_request(body)


def test_cache_expires_entries_and_evicts_the_least_recently_used() -> None:
    now = [0.0]
    cache = ReviewCache(max_entries=2, clock=lambda: now[0])
    cache.put("a", {"v": 1}, ttl=10)
    cache.put("b", {"v": 2}, ttl=1)
    assert cache.get("a") == {"v": 1}  # a is now the most recent
    cache.put("c", {"v": 3}, ttl=20)  # evicts b
    assert cache.get("b") is None and len(cache) == 2
    now[0] = 10.0
    assert cache.get("a") is None
    assert cache.get("c") == {"v": 3}
    cache.put("d", {"v": 4}, ttl=0)  # a zero TTL caches nothing
    assert cache.get("d") is None


def test_tokens_are_keyed_by_digest_and_ttl_never_outlives_the_token() -> None:
    assert token_key("secret-token") != "secret-token" and len(token_key("x")) == 64
    assert valid_ttl(expires_in=5, ttl=20) == 5
    assert valid_ttl(expires_in=3600, ttl=20) == 20
    assert valid_ttl(expires_in=-1, ttl=20) == 0


def test_keystone_token_body_is_parsed() -> None:
    body = {
        "token": {
            "expires_at": "2026-11-26T12:00:00.000000Z",
            "user": {"id": "u1", "name": "test", "domain": {"id": "d", "name": "stackube"}},
            "project": {"id": "p1", "name": "test", "domain": {"id": "d", "name": "stackube"}},
            "roles": [{"id": "r2", "name": "reader"}, {"id": "r1", "name": "member"}],
        }
    }
    assert parse_token_body(body) == IDENTITY


def test_login_takes_flags_over_environment_and_names_what_is_missing() -> None:
    env = {
        "OS_AUTH_URL": "http://k/v3",
        "OS_USERNAME": "envuser",
        "OS_PASSWORD": "pw",
        "OS_PROJECT_NAME": "p",
    }
    req = login.request_from({"username": "flaguser"}, env)
    assert (req.username, req.password, req.user_domain) == ("flaguser", "pw", "Default")
    with pytest.raises(login.LoginError, match="no password: set OS_PASSWORD"):
        login.request_from({}, {k: v for k, v in env.items() if k != "OS_PASSWORD"})


def test_exec_credential_and_freshness() -> None:
    cred = login.exec_credential("tok", EXPIRES)
    assert cred == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": "tok", "expirationTimestamp": "2026-11-26T12:00:00Z"},
    }
    assert login.still_fresh(EXPIRES, EXPIRES - datetime.timedelta(minutes=5))
    assert not login.still_fresh(EXPIRES, EXPIRES - datetime.timedelta(minutes=1))


def test_a_new_password_never_reuses_a_cached_token() -> None:
    base = login.LoginRequest("http://k/v3", "u", "pw1", "p", "stackube", "stackube")
    other = login.LoginRequest("http://k/v3", "u", "pw2", "p", "stackube", "stackube")
    assert login.cache_key(base) != login.cache_key(other)
    assert "pw1" not in login.cache_key(base)


def test_tenant_kubeconfig_runs_stackube_login_for_the_tenant_project() -> None:
    doc = login.kubeconfig_for_tenant(
        tenant="test",
        server="https://127.0.0.1:6443",
        ca_data="Q0E=",
        auth_url="http://k/v3",
        username="test",
    )
    exec_ = doc["users"][0]["user"]["exec"]
    # The console script from PATH: no interpreter path of the machine that wrote it.
    assert exec_["command"] == "stackube" and exec_["args"][0] == "login"
    assert "pip install" in exec_["installHint"]
    assert "--project-name=test" in exec_["args"] and "--user-domain-name=stackube" in exec_["args"]
    assert "--project-domain-name=stackube" in exec_["args"]
    assert not any("password" in a for a in exec_["args"])
    assert doc["contexts"][0]["context"]["namespace"] == "test"
    other = login.kubeconfig_for_tenant(
        tenant="t", server="s", ca_data="", auth_url="a", username="u", domain="tenants"
    )
    assert "--user-domain-name=tenants" in other["users"][0]["user"]["exec"]["args"]


def test_a_refused_login_names_the_user_its_domains_and_what_to_check() -> None:
    creds = Credentials("http://k/v3", "alice", "secret-pw", "team", "Default", "Default")
    message = refusal_message(creds)
    assert "'alice' (domain 'Default')" in message and "'team' (domain 'Default')" in message
    assert "OS_PASSWORD" in message and "domain 'stackube'" in message
    assert "secret-pw" not in message
    assert "Stackube's credentials" not in message  # they were the user's own
