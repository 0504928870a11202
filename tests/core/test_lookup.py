"""core.lookup returns what the ORM returns (one compiled query, converters, deferred fields)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.test import override_settings

from django_apiauth.ca.authority import create_ca
from django_apiauth.core import lifecycle
from django_apiauth.core.lookup import lookup
from django_apiauth.models import ApiKey, ClientCertificate, HmacSecret

pytestmark = pytest.mark.django_db

WHEN = {
    "not_before": datetime(2020, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    "expires_at": datetime(2099, 6, 7, 8, 9, 10, tzinfo=UTC),
    "last_used_at": datetime(2026, 11, 23, 12, 0, 1, 2, tzinfo=UTC),
}


def credentials(user: Any) -> list[Any]:
    user.last_login = datetime(2026, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
    user.save()
    key, _ = lifecycle.issue(ApiKey, owner=user, name="k")
    hmac_secret, _ = lifecycle.issue(HmacSecret, owner=user, name="h")
    ca = create_ca(name="Lookup test CA", slug="lookup-ca")
    cert, _ = lifecycle.issue(ClientCertificate, owner=user, name="c", ca=ca)
    made = [key, hmac_secret, cert]
    for credential in made:
        type(credential).objects.filter(pk=credential.pk).update(
            **({k: v for k, v in WHEN.items() if k != "not_before"}
               if isinstance(credential, ClientCertificate) else WHEN),
            revoked_at=datetime(2030, 1, 1, tzinfo=UTC))
    return made


def same_as_orm(credential: Any) -> None:
    model = type(credential)
    found = lookup(model, getattr(credential, model.lookup_field))
    expected = model.objects.select_related("owner").get(pk=credential.pk)
    assert found is not None
    assert found.get_deferred_fields() == set(model.lookup_defer)
    for field in model._meta.concrete_fields:  # a deferred one is loaded on access
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
        value = getattr(found, field.attname)
        if isinstance(value, datetime):
            assert value.tzinfo == getattr(expected, field.attname).tzinfo, field.name
    for field in found.owner._meta.concrete_fields:
        assert getattr(found.owner, field.attname) == getattr(expected.owner, field.attname)
    assert found.owner._state.db == expected.owner._state.db
    assert not found._state.adding


def test_lookup_returns_what_the_orm_returns(user):
    for credential in credentials(user):
        same_as_orm(credential)


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_time_zone_settings_are_followed(user, zone):
    made = credentials(user)
    for credential in made:
        same_as_orm(credential)  # compiled under the test settings first
    with override_settings(TIME_ZONE=zone):
        for credential in made:
            same_as_orm(credential)


def test_use_tz_off_gives_naive_datetimes_like_the_orm(user):
    made = credentials(user)
    for credential in made:
        same_as_orm(credential)  # compiled with USE_TZ = True first
    with override_settings(USE_TZ=False):
        for credential in made:
            same_as_orm(credential)
            found = lookup(type(credential), getattr(credential, type(credential).lookup_field))
            assert found.created_at.tzinfo is None


def test_unknown_value_is_none(user):
    credentials(user)
    assert lookup(ApiKey, "nope") is None
    assert lookup(ClientCertificate, "0" * 64) is None


def test_a_future_change_is_seen_on_the_next_lookup(user):
    key = credentials(user)[0]
    assert lookup(ApiKey, key.lookup_id).revoked_at == datetime(2030, 1, 1, tzinfo=UTC)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=None,
                                            expires_at=datetime(2031, 1, 1) .replace(tzinfo=UTC)
                                            + timedelta(seconds=1))
    found = lookup(ApiKey, key.lookup_id)
    assert found.revoked_at is None
    assert found.expires_at == datetime(2031, 1, 1, 0, 0, 1, tzinfo=UTC)
