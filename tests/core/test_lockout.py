"""Lockout (issue 7 item 4): repeated failures lock a source out, across every scheme.

Thresholds at their boundary, the cool-off (freezegun), a legitimate holder
on another address never locked out by an attacker's guesses, no oracle
while locked, the admin's view and lift action, the store unreachable (503).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import override_settings
from django.urls import reverse
from freezegun import freeze_time

from django_apiauth.core import lockout
from django_apiauth.models import Lockout

from .abuse_helpers import SCHEMES, TERMINATOR, Holder, make_holder_factory, rows
from .test_ratelimit import dead_redis_caches

pytestmark = pytest.mark.django_db

ATTACKER = "203.0.113.66"
HOLDER = "198.51.100.7"


@pytest.fixture(autouse=True)
def _settings(settings: Any) -> None:
    settings.APIAUTH_TRUSTED_PROXIES = [f"{TERMINATOR}/32"]
    settings.APIAUTH_LOCKOUT_CREDENTIAL_FAILURES = 3
    settings.APIAUTH_LOCKOUT_IP_FAILURES = 5
    settings.APIAUTH_LOCKOUT_DURATION = timedelta(minutes=15)


@pytest.fixture
def holder(user: Any) -> Callable[..., Holder]:
    return make_holder_factory(user)


def fail(client: Any, h: Holder, times: int, ip: str = ATTACKER) -> None:
    for _ in range(times):
        response = h.get(client, ip, wrong=True)
        assert response.status_code == 401, response.content


# -- the credential threshold, per (credential, address) ----------------------------------


@pytest.mark.parametrize("scheme", ["api_key", "hmac"])
@pytest.mark.parametrize(("failures", "locked"), [(2, False), (3, True)], ids=["below", "at"])
def test_credential_threshold_boundary(client: Any, holder: Callable[..., Holder], scheme: str,
                                       failures: int, locked: bool) -> None:
    h = holder(scheme)
    fail(client, h, failures)
    response = h.get(client, ATTACKER)  # the right secret, from the same address
    if not locked:
        assert response.status_code == 200
        assert not Lockout.objects.exists()
        return
    assert response.status_code == 429
    assert response.json()["code"] == "locked_out"
    assert 1 <= int(response["Retry-After"]) <= 15 * 60
    row = rows(event="authenticate")[-1]
    assert (row.reason, row.credential_id) == ("locked_out", h.credential_id)
    assert row.detail["scope"] == "credential"
    lock = Lockout.objects.get()
    assert (lock.scope, lock.scheme, lock.credential_id, lock.ip, lock.failures) == (
        "credential", scheme, h.credential_id, ATTACKER, 3)
    assert lock.is_active


@pytest.mark.parametrize("scheme", ["api_key", "hmac"])
def test_holder_on_another_address_is_not_locked_out(client: Any, holder: Callable[..., Holder],
                                                     scheme: str) -> None:
    h = holder(scheme)
    fail(client, h, 3)
    assert h.get(client, ATTACKER).status_code == 429
    for _ in range(3):
        assert h.get(client, HOLDER).status_code == 200


def test_no_oracle_while_locked(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("api_key")
    fail(client, h, 3)
    right, wrong = h.get(client, ATTACKER), h.get(client, ATTACKER, wrong=True)
    assert (right.status_code, wrong.status_code) == (429, 429)
    assert right.json() == wrong.json()
    # Attempts while locked neither extend the lockout nor add rows.
    assert Lockout.objects.count() == 1


def test_cool_off_ends(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("api_key")
    with freeze_time("2030-01-01 12:00:00") as frozen:
        fail(client, h, 3)
        frozen.tick(timedelta(minutes=15) - timedelta(seconds=1))
        assert h.get(client, ATTACKER).status_code == 429
        frozen.tick(timedelta(seconds=2))
        assert h.get(client, ATTACKER).status_code == 200


def test_failures_outside_the_window_do_not_add_up(settings: Any, client: Any,
                                                   holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_LOCKOUT_CREDENTIAL_WINDOW = timedelta(minutes=1)
    h = holder("api_key")
    with freeze_time("2030-01-01 12:00:00") as frozen:
        fail(client, h, 2)
        frozen.tick(timedelta(minutes=2))
        fail(client, h, 2)
        assert h.get(client, ATTACKER).status_code == 200


def test_unknown_credential_ids_count_per_id(client: Any, holder: Callable[..., Holder]) -> None:
    """Guessing other key ids from one address is the address's business (below)."""
    h = holder("api_key")
    fail(client, h, 2)
    other = holder("api_key", name="other")
    fail(client, other, 2)
    assert h.get(client, ATTACKER).status_code == 200


# -- the address threshold, any scheme -----------------------------------------------------


@pytest.mark.parametrize(("failures", "locked"), [(4, False), (5, True)], ids=["below", "at"])
def test_address_threshold_across_schemes(client: Any, holder: Callable[..., Holder],
                                          failures: int, locked: bool) -> None:
    # One failure per credential and scheme: no pair reaches its own threshold.
    targets = [holder(scheme, name=f"{scheme}-{i}") for i in range(2) for scheme in SCHEMES]
    for target in targets[:failures]:
        fail(client, target, 1)
    victim = holder("api_key", name="victim")
    response = victim.get(client, ATTACKER)
    assert response.status_code == (429 if locked else 200)
    if locked:
        assert rows(event="authenticate")[-1].detail["scope"] == "ip"
        lock = Lockout.objects.get()
        assert (lock.scope, lock.ip, lock.credential_id) == ("ip", ATTACKER, "")
        # Another address is untouched.
        assert victim.get(client, HOLDER).status_code == 200


@pytest.mark.parametrize("scheme", SCHEMES)
def test_locked_address_refused_for_every_scheme(client: Any, holder: Callable[..., Holder],
                                                 scheme: str) -> None:
    decoy = holder("api_key", name="decoy")
    for _ in range(5):
        client.get("/api/whoami/", HTTP_AUTHORIZATION="Api-Key ak_garbage", REMOTE_ADDR=ATTACKER)
    assert decoy.get(client, ATTACKER).status_code == 429
    assert holder(scheme, name="victim").get(client, ATTACKER).status_code == 429


@pytest.mark.urls("tests.schemes.jwt_urls")
def test_jwt_failures_count_and_lock_the_address(settings: Any, client: Any) -> None:
    settings.APIAUTH_JWT_ISSUERS = [{"issuer": "https://idp.test", "audience": "a", "keys": []}]
    token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJodHRwczovL2V2aWwifQ.c2ln"
    statuses = [client.get("/jwt/whoami/", HTTP_AUTHORIZATION=f"Bearer {token}",
                           REMOTE_ADDR=ATTACKER).status_code for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    assert Lockout.objects.get().scope == "ip"


def test_exempt_addresses_are_never_locked_by_address(settings: Any, client: Any,
                                                      holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_LOCKOUT_EXEMPT_IPS = ["203.0.113.0/24"]
    targets = [holder("api_key", name=f"k{i}") for i in range(6)]
    for target in targets:
        fail(client, target, 1)
    assert holder("api_key", name="ok").get(client, ATTACKER).status_code == 200


def test_lockout_disabled(settings: Any, client: Any, holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_LOCKOUT_ENABLED = False
    h = holder("api_key")
    fail(client, h, 10)
    assert h.get(client, ATTACKER).status_code == 200
    assert not Lockout.objects.exists()


def test_lockout_start_is_audited_once(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("hmac")
    fail(client, h, 3)
    h.get(client, ATTACKER, wrong=True)
    started = rows(event="lockout")
    assert len(started) == 1
    assert (started[0].reason, started[0].credential_id, started[0].ip) == (
        "locked_out", h.credential_id, ATTACKER)
    assert started[0].detail["failures"] == 3


def test_counter_key_and_cache_key_are_hashes(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("api_key")
    fail(client, h, 3)
    lock = Lockout.objects.get()
    for key in (lock.cache_key, lock.counter_key):
        assert h.credential_id not in key and ATTACKER not in key
        assert key.isascii() and " " not in key and len(key) < 100


# -- the admin -----------------------------------------------------------------------------


@pytest.fixture
def staff_client(client: Any, make_user: Callable[..., Any]) -> Any:
    staff = make_user("security", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(
        content_type__app_label="django_apiauth", codename__in=["view_lockout", "delete_lockout"]))
    client.force_login(staff)
    return client


def test_admin_lists_and_lifts(staff_client: Any, holder: Callable[..., Holder]) -> None:
    from rest_framework.test import APIClient

    api = APIClient()
    h = holder("api_key")
    fail(api, h, 3)
    assert h.get(api, ATTACKER).status_code == 429
    lock = Lockout.objects.get()
    changelist = reverse("admin:django_apiauth_lockout_changelist")
    page = staff_client.get(changelist + "?state=active")
    assert page.status_code == 200
    assert h.credential_id in page.content.decode()
    assert staff_client.get(reverse("admin:django_apiauth_lockout_add")).status_code == 403
    response = staff_client.post(changelist, {"action": "lift_selected",
                                              "_selected_action": [lock.pk]})
    assert response.status_code == 302
    assert not Lockout.objects.exists()
    assert h.get(api, ATTACKER).status_code == 200
    lifted = rows(event="lockout.lifted")
    assert len(lifted) == 1 and lifted[0].username == "security"
    # The counter was cleared too: one more failure does not relock at once.
    fail(api, h, 1)
    assert h.get(api, ATTACKER).status_code == 200


def test_admin_lift_needs_the_delete_permission(client: Any, make_user: Callable[..., Any],
                                                holder: Callable[..., Holder]) -> None:
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_lockout"))
    client.force_login(viewer)
    from rest_framework.test import APIClient

    fail(APIClient(), holder("api_key"), 3)
    changelist = reverse("admin:django_apiauth_lockout_changelist")
    client.post(changelist, {"action": "lift_selected",
                             "_selected_action": [Lockout.objects.get().pk]})
    assert Lockout.objects.count() == 1


def test_lift_function(client: Any, holder: Callable[..., Holder]) -> None:
    h = holder("hmac")
    fail(client, h, 3)
    lockout.lift(Lockout.objects.get())
    assert h.get(client, ATTACKER).status_code == 200


# -- the store -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SCHEMES)
def test_store_unreachable_is_503_even_without_rate_limits(client: Any,
                                                          holder: Callable[..., Holder],
                                                          scheme: str) -> None:
    h = holder(scheme)
    with override_settings(CACHES=dead_redis_caches(), APIAUTH_RATE_LIMIT_CACHE="limits"):
        response = h.get(client, HOLDER)
    assert response.status_code == 503
    row = rows(event="authenticate")[-1]
    assert (row.reason, row.scheme, row.detail["dependency"]) == (
        "service_unavailable", scheme, "rate_limit_cache")


def test_malformed_input_with_store_unreachable_is_503(client: Any) -> None:
    with override_settings(CACHES=dead_redis_caches(), APIAUTH_RATE_LIMIT_CACHE="limits"):
        response = client.get("/api/whoami/", HTTP_AUTHORIZATION="Api-Key ak_garbage")
    assert response.status_code == 503
    row = rows(event="authenticate")[-1]
    assert row.detail == {"dependency": "rate_limit_cache", "refused_for": "malformed"}


def test_nothing_needs_the_store_when_everything_is_off(settings: Any, client: Any,
                                                        holder: Callable[..., Holder]) -> None:
    settings.APIAUTH_LOCKOUT_ENABLED = False
    settings.APIAUTH_ALERT_NEW_IP = False
    settings.APIAUTH_ALERT_CREDENTIAL_FAILURES = 0
    h = holder("api_key")
    with override_settings(CACHES=dead_redis_caches(), APIAUTH_RATE_LIMIT_CACHE="limits"):
        assert h.get(client, HOLDER).status_code == 200
        assert h.get(client, HOLDER, wrong=True).status_code == 401


@pytest.mark.parametrize("term", ["203.0.113.66", "' OR 1=1 --", "%", "\x00", "::1", "x" * 500])
def test_admin_search_is_exact_and_never_an_error(staff_client: Any, holder: Callable[..., Holder],
                                                  term: str) -> None:
    from rest_framework.test import APIClient

    fail(APIClient(), holder("api_key"), 3)
    changelist = reverse("admin:django_apiauth_lockout_changelist")
    response = staff_client.get(changelist, {"q": term})
    assert response.status_code == 200
    if term != "\x00":  # Django's admin itself discards a search term with a NUL
        assert response.context["cl"].result_count == (1 if term == ATTACKER else 0)
