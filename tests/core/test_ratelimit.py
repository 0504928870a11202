"""Rate limits (issue 7 item 3): per credential or per scheme, atomic, 429 with headers.

Every stored-credential scheme (API key, RFC 9421 HMAC signature, forwarded
client certificate) and JWT, through the example project's views; counters
in the local-memory cache and, for the atomicity test, in a real Redis.
Mocks only for time (freezegun) and to make the cache fail.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.core.cache import caches
from django.core.exceptions import ValidationError
from django.test import override_settings
from freezegun import freeze_time
from rest_framework.response import Response

from django_apiauth.core import ratelimit
from django_apiauth.core.ratelimit import Rate, parse_rate
from django_apiauth.models import ApiKey

from .abuse_helpers import SCHEMES, TERMINATOR, Holder, make_holder_factory, rows

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _proxies(settings: Any) -> None:
    settings.APIAUTH_TRUSTED_PROXIES = [f"{TERMINATOR}/32"]


@pytest.fixture
def holder(user: Any) -> Callable[..., Holder]:
    return make_holder_factory(user)


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "rate"), [
    ("100/m", Rate(100, 60)), ("10/s", Rate(10, 1)), ("5000/h", Rate(5000, 3600)),
    ("20000/d", Rate(20000, 86400)), ("300/15m", Rate(300, 900)), (" 7 / 2s ", Rate(7, 2)),
    ("", None), ("none", None), ("NONE", None),
])
def test_parse_rate(text: str, rate: Rate | None) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", [
    "100", "/m", "100/", "100/x", "-1/m", "0/m", "100/0m", "1e3/m", "100/m; drop table",
    "1/m\x00", "9" * 12 + "/m", "100/m/m",
])
def test_bad_rates_refused(text: str) -> None:
    with pytest.raises(ValueError, match="Invalid rate"):
        parse_rate(text)
    with pytest.raises(ValidationError):
        ratelimit.validate_rate(text)


def test_rate_limit_field_is_validated(user: Any) -> None:
    key = ApiKey(owner=user, name="bad", rate_limit="lots")
    with pytest.raises(ValidationError) as excinfo:
        key.full_clean(exclude=["lookup_id", "secret_hash"])
    assert "rate_limit" in excinfo.value.message_dict


# -- enforcement, every scheme ---------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_credential_limit_answers_429_with_headers(client: Any, holder: Callable[..., Holder],
                                                   scheme: str) -> None:
    h = holder(scheme, rate_limit="3/m")
    for remaining in (2, 1, 0):
        response = h.get(client)
        assert response.status_code == 200, response.content
        assert response["RateLimit-Limit"] == "3"
        assert response["RateLimit-Remaining"] == str(remaining)
        assert 1 <= int(response["RateLimit-Reset"]) <= 60
        assert response["RateLimit-Policy"] == "3;w=60"
    refused = h.get(client)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Remaining"] == "0"
    assert refused["Retry-After"] == refused["RateLimit-Reset"]
    row = rows(event="authenticate", reason="rate_limited")[-1]
    assert (row.outcome, row.scheme, row.credential_id) == ("failure", scheme, h.credential_id)
    assert row.user_id == h.credential.owner_id
    assert row.detail == {"limit": 3, "window_seconds": 60}


@pytest.mark.parametrize("scheme", SCHEMES)
def test_scheme_default_applies_and_credential_overrides(settings: Any, client: Any,
                                                         holder: Callable[..., Holder],
                                                         scheme: str) -> None:
    settings.APIAUTH_RATE_LIMITS = {scheme: "1/h"}
    default = holder(scheme)
    unlimited = holder(scheme, rate_limit="none", name="unlimited")
    generous = holder(scheme, rate_limit="5/h", name="generous")
    assert default.get(client).status_code == 200
    assert default.get(client).status_code == 429
    for _ in range(4):
        response = unlimited.get(client)
        assert response.status_code == 200
        assert "RateLimit-Limit" not in response
    assert [generous.get(client).status_code for _ in range(6)] == [200] * 5 + [429]


def test_other_schemes_unaffected_by_a_scheme_default(settings: Any, client: Any,
                                                      holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_RATE_LIMITS = {"hmac": "1/h"}
    key = holder("api_key")
    assert [key.get(client).status_code for _ in range(3)] == [200, 200, 200]


def test_limits_are_per_credential(client: Any, holder: Callable[..., Holder]) -> None:
    first, second = holder("api_key", rate_limit="1/m"), holder("api_key", rate_limit="1/m")
    assert first.get(client).status_code == 200
    assert first.get(client).status_code == 429
    assert second.get(client).status_code == 200


def test_window_resets(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("api_key", rate_limit="2/m")
    with freeze_time("2030-01-01 12:00:00") as frozen:
        assert [h.get(client).status_code for _ in range(3)] == [200, 200, 429]
        retry_after = int(h.get(client)["Retry-After"])
        frozen.tick(timedelta(seconds=retry_after - 1))
        assert h.get(client).status_code == 429
        frozen.tick(timedelta(seconds=1))
        assert h.get(client).status_code == 200


def test_rate_limited_requests_do_not_count_as_failures(settings: Any, client: Any,
                                                        holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_LOCKOUT_IP_FAILURES = 2
    settings.APIAUTH_LOCKOUT_CREDENTIAL_FAILURES = 2
    h = holder("api_key", rate_limit="1/h")
    statuses = [h.get(client).status_code for _ in range(5)]
    assert statuses == [200, 429, 429, 429, 429]
    assert not rows(reason="locked_out")


def exception_handler_without_headers(exc: Exception, context: dict[str, Any]) -> Response:
    """A project's own handler that knows nothing of Retry-After."""
    return Response({"error": str(getattr(exc, "default_code", "error"))},
                    status=getattr(exc, "status_code", 500))


def test_headers_survive_a_custom_exception_handler(settings: Any, client: Any,
                                                    holder: Callable[..., Holder]) -> None:
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "EXCEPTION_HANDLER": "tests.core.test_ratelimit.exception_handler_without_headers",
    }
    h = holder("api_key", rate_limit="1/m")
    assert h.get(client).status_code == 200
    refused = h.get(client)
    assert refused.status_code == 429
    assert refused.json() == {"error": "rate_limited"}
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["RateLimit-Limit"] == "1"
    assert refused["RateLimit-Remaining"] == "0"


def test_invalid_scheme_default_is_not_an_outage(settings: Any, client: Any,
                                                 holder: Callable[..., Holder],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    settings.APIAUTH_RATE_LIMITS = {"api_key": "lots"}
    assert holder("api_key").get(client).status_code == 200
    assert "Invalid rate limit" in caplog.text


# -- JWT (stateless: counted per OAuth client_id) ---------------------------------------


@pytest.fixture
def jwt_setup(settings: Any, make_user: Callable[..., Any]) -> Callable[..., str]:
    import uuid

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    from django_apiauth.models import ExternalIdentity

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k1", "alg": "RS256"}
    settings.APIAUTH_JWT_ISSUERS = [{"issuer": "https://idp.test", "audience": "https://api.test",
                                     "keys": [jwk]}]
    ExternalIdentity.objects.create(issuer="https://idp.test", subject="sub-1",
                                    user=make_user("jwt-user"))

    def mint(client_id: str = "web-app") -> str:
        now = int(time.time())
        return jwt.encode({
            "iss": "https://idp.test", "aud": "https://api.test", "sub": "sub-1",
            "client_id": client_id, "jti": uuid.uuid4().hex, "iat": now, "exp": now + 300,
            "scope": "read",
        }, key, algorithm="RS256", headers={"typ": "at+jwt", "kid": "k1"})

    return mint


@pytest.mark.urls("tests.schemes.jwt_urls")
def test_jwt_limited_per_client_id_across_tokens(settings: Any, client: Any,
                                                 jwt_setup: Callable[..., str]) -> None:
    settings.APIAUTH_RATE_LIMITS = {"jwt": "2/m"}

    def get(token: str) -> Any:
        return client.get("/jwt/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}")

    # A fresh token (new jti) per request: still the same client.
    assert [get(jwt_setup()).status_code for _ in range(3)] == [200, 200, 429]
    assert get(jwt_setup("other-app")).status_code == 200
    row = rows(reason="rate_limited")[-1]
    assert row.scheme == "jwt" and row.username == "jwt-user"


# -- the store ---------------------------------------------------------------------------


def dead_redis_caches() -> dict[str, Any]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "limits": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                       "LOCATION": f"redis://127.0.0.1:{port}/0",
                       "OPTIONS": {"socket_connect_timeout": 0.5}}}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("wrong", [False, True], ids=["right-secret", "wrong-secret"])
def test_store_unreachable_is_503_audited(client: Any, holder: Callable[..., Holder], scheme: str,
                                          wrong: bool) -> None:
    h = holder(scheme, rate_limit="100/m")
    with override_settings(CACHES=dead_redis_caches(), APIAUTH_RATE_LIMIT_CACHE="limits"):
        response = h.get(client, wrong=wrong)
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    row = rows(event="authenticate")[-1]
    assert (row.outcome, row.reason, row.scheme) == ("failure", "service_unavailable", scheme)
    assert row.detail["dependency"] == "rate_limit_cache"


class FailingIncr:
    """Failure injection: a cache whose writes fail after its reads succeeded."""

    def __init__(self, real: Any) -> None:
        self.real = real

    def __getattr__(self, name: str) -> Any:
        if name in ("add", "incr", "set"):
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise ConnectionError("injected")
            return fail
        return getattr(self.real, name)


def test_counter_failure_after_lockout_check_is_503(client: Any, holder: Callable[..., Holder],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from django_apiauth.core import lockout

    h = holder("api_key", rate_limit="100/m")
    monkeypatch.setattr(lockout, "cache", lambda: FailingIncr(caches["default"]))
    assert h.get(client).status_code == 503
    assert h.get(client, wrong=True).status_code == 503
    assert [r.reason for r in rows(event="authenticate")] == [
        "service_unavailable", "bad_secret", "service_unavailable",
    ]


# -- atomicity -----------------------------------------------------------------------------


def hammer(cache: Any, threads: int = 8, per_thread: int = 50) -> list[int]:
    seen: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def work() -> None:
        barrier.wait()
        mine = [ratelimit.hit(cache, "apiauth:test:hammer", 10_000, 3600, 1_900_000_000.0).count
                for _ in range(per_thread)]
        with lock:
            seen.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return seen


def test_counter_is_atomic_in_local_memory() -> None:
    counts = hammer(caches["default"])
    # No lost update, no count handed out twice.
    assert sorted(counts) == list(range(1, 401))


REDIS = shutil.which("redis-server") or (
    "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if REDIS is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is missing: run `make system-deps`")
        pytest.skip("redis-server is not installed: run `make system-deps`")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(  # noqa: S603 (fixed arguments)
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            break
        except OSError:
            time.sleep(0.02)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(5)


def test_counter_is_atomic_in_redis_and_expires(redis_url: str) -> None:
    backend = "django.core.cache.backends.redis.RedisCache"
    with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": redis_url}}):
        cache = caches["default"]
        cache.clear()
        counts = hammer(cache)
        assert sorted(counts) == list(range(1, 401))
        # Every counter key carries an expiry: none can outlive its window.
        redis = cache._cache.get_client(write=False)
        keys = redis.keys("*apiauth:test:hammer*")
        assert len(keys) == 1
        assert 0 < redis.ttl(keys[0]) <= 3601


@pytest.mark.parametrize("scheme", ["api_key", "hmac"])
def test_limit_enforced_through_redis(redis_url: str, client: Any, holder: Callable[..., Holder],
                                      scheme: str) -> None:
    backend = "django.core.cache.backends.redis.RedisCache"
    h = holder(scheme, rate_limit="2/m")
    with override_settings(CACHES={"default": {"BACKEND": backend, "LOCATION": redis_url}}):
        caches["default"].clear()
        assert [h.get(client).status_code for _ in range(3)] == [200, 200, 429]


# -- system checks ---------------------------------------------------------------------------


def check_ids(**overrides: Any) -> set[str]:
    from django.core.checks import run_checks

    with override_settings(**overrides):
        return {m.id for m in run_checks() if m.id and m.id.startswith("apiauth.")
                and not m.is_silenced()}


@pytest.mark.parametrize(("overrides", "expected"), [
    ({"APIAUTH_RATE_LIMITS": {"api_key": "lots"}}, "apiauth.E050"),
    ({"APIAUTH_LOCKOUT_IP_FAILURES": 0}, "apiauth.E051"),
    ({"APIAUTH_LOCKOUT_DURATION": timedelta(0)}, "apiauth.E051"),
    ({"APIAUTH_RATE_LIMIT_CACHE": "nope"}, "apiauth.E052"),
    ({"APIAUTH_ALERTS": {"webhook": "file:///etc/passwd"}}, "apiauth.E053"),
    ({"DEBUG": False, "SILENCED_SYSTEM_CHECKS": []}, "apiauth.W050"),
    ({"DEBUG": False, "SILENCED_SYSTEM_CHECKS": [], "APIAUTH_TRUSTED_PROXIES": []},
     "apiauth.W051"),
])
def test_checks(overrides: dict[str, Any], expected: str) -> None:
    assert expected in check_ids(**overrides)


def test_checks_clean_with_good_settings() -> None:
    redis = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": "redis://127.0.0.1:1"}}
    found = check_ids(APIAUTH_RATE_LIMITS={"api_key": "100/m", "jwt": "none"},
                      APIAUTH_ALERTS={"webhook": "https://hooks.example.com/x"},
                      APIAUTH_TRUSTED_PROXIES=["10.0.0.0/24"],
                      DEBUG=False, CACHES=redis, SILENCED_SYSTEM_CHECKS=[])
    assert not {i for i in found if i.startswith(("apiauth.E05", "apiauth.W05"))}


# -- the admin ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_admin_edits_the_rate_limit(admin_client: Any, client: Any, holder: Callable[..., Holder],
                                    scheme: str) -> None:
    from django.urls import reverse

    h = holder(scheme)
    url = reverse(f"admin:django_apiauth_{h.credential._meta.model_name}_change",
                  args=(h.credential.pk,))
    page = admin_client.get(url)
    assert 'name="rate_limit"' in page.content.decode()
    form = {"name": h.credential.name, "scopes": "", "allowed_ips": "",
            "expires_at_0": "", "expires_at_1": ""}
    bad = admin_client.post(url, {**form, "rate_limit": "1/m; DROP"})
    assert bad.status_code == 200
    assert "rate_limit" in bad.context["adminform"].form.errors
    assert admin_client.post(url, {**form, "rate_limit": "1/m"}).status_code == 302
    h.credential.refresh_from_db()
    assert h.credential.rate_limit == "1/m"
    changed = rows(event="credential.changed")[-1]
    assert changed.detail["changed"]["rate_limit"] == "1/m"
    assert [h.get(client).status_code for _ in range(2)] == [200, 429]


def test_rotation_keeps_the_rate_limit(user: Any) -> None:
    from django_apiauth.core import lifecycle

    key, _secret = lifecycle.issue(ApiKey, owner=user, name="r", rate_limit="7/m")
    successor, _secret = lifecycle.rotate(key)
    assert successor.rate_limit == "7/m"
