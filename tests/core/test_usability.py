"""The one usability rule: Python side and queryset side agree."""

from datetime import timedelta

import pytest
from django.utils import timezone

from django_apiauth.core.models import ip_allowed, unusable_reason
from django_apiauth.models import ApiKey

pytestmark = pytest.mark.django_db

NOW = timezone.now()
STATES = {
    "active": {},
    "expired": {"expires_at": NOW - timedelta(seconds=1)},
    "expires_now": {"expires_at": NOW},
    "expires_later": {"expires_at": NOW + timedelta(seconds=1)},
    "revoked": {"revoked_at": NOW - timedelta(seconds=1)},
    "not_yet_valid": {"not_before": NOW + timedelta(seconds=1)},
    "valid_from_now": {"not_before": NOW},
}
EXPECTED = {
    "active": None,
    "expired": "expired",
    "expires_now": "expired",
    "expires_later": None,
    "revoked": "revoked",
    "not_yet_valid": "not_yet_valid",
    "valid_from_now": None,
}


@pytest.mark.parametrize("state", sorted(STATES))
def test_python_rule_and_queryset_agree(make_api_key, state):
    obj, _key = make_api_key(name=state)
    ApiKey.objects.filter(pk=obj.pk).update(**STATES[state])
    obj.refresh_from_db()
    assert unusable_reason(obj, NOW, "127.0.0.1", True) == EXPECTED[state]
    in_usable = ApiKey.objects.usable(NOW).filter(pk=obj.pk).exists()
    assert in_usable == (EXPECTED[state] is None)


def test_inactive_owner_agrees(make_api_key, make_user):
    obj, _key = make_api_key(owner=make_user(is_active=False))
    assert unusable_reason(obj, NOW, None, False) == "inactive_owner"
    assert not ApiKey.objects.usable(NOW).filter(pk=obj.pk).exists()


def test_revocation_wins_over_expiry(make_api_key):
    obj, _key = make_api_key(expires_at=NOW - timedelta(days=1))
    ApiKey.objects.filter(pk=obj.pk).update(revoked_at=NOW - timedelta(hours=1))
    obj.refresh_from_db()
    assert unusable_reason(obj, NOW, None, True) == "revoked"


@pytest.mark.parametrize(
    ("ip", "spec", "allowed"),
    [
        ("10.1.2.3", "10.0.0.0/8", True),
        ("11.1.2.3", "10.0.0.0/8", False),
        ("192.0.2.7", "192.0.2.7", True),
        ("::ffff:10.0.0.1", "10.0.0.0/8", True),
        ("2001:db8::1", "2001:db8::/32", True),
        ("2001:db9::1", "2001:db8::/32", False),
        ("not-an-ip", "0.0.0.0/0", False),
        (None, "0.0.0.0/0", False),
        ("10.0.0.1", "garbage", False),
    ],
)
def test_ip_allowed(ip, spec, allowed):
    assert ip_allowed(ip, spec) is allowed
