from datetime import timedelta

import pytest
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth import signals
from django_apiauth.core import lifecycle
from django_apiauth.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db


def auth(key):
    return {"HTTP_AUTHORIZATION": f"Api-Key {key}"}


def test_issue_audits_and_signals(user):
    received = []
    signals.credential_issued.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t1")
    try:
        obj, key = lifecycle.issue(ApiKey, owner=user, name="ci", scopes="a b", actor=user)
    finally:
        signals.credential_issued.disconnect(dispatch_uid="t1")
    assert key.startswith(f"ak_{obj.lookup_id}_")
    row = AuditEvent.objects.get(event="credential.issued")
    assert (row.outcome, row.reason, row.credential_id, row.detail) == (
        "success", "issued", obj.lookup_id, {"actor": "alice"})
    assert received[0]["credential"] == obj
    assert "key" not in received[0] and key not in repr(received[0])


def test_issue_validates_scopes_and_networks(user):
    with pytest.raises(Exception, match="scope"):
        lifecycle.issue(ApiKey, owner=user, name="x", scopes='bad"scope')
    with pytest.raises(Exception, match="CIDR"):
        lifecycle.issue(ApiKey, owner=user, name="x", allowed_ips="10.0.0.0/33")
    assert not ApiKey.objects.exists()


def test_rotate_with_grace(client, make_api_key):
    old, old_key = make_api_key(scopes="echo:write", allowed_ips="127.0.0.0/8")
    start = timezone.now()
    with freeze_time(start):
        new, new_key = lifecycle.rotate(old, grace=timedelta(hours=1))
    assert new.rotated_from == old
    assert (new.owner, new.scopes, new.allowed_ips, new.name) == (
        old.owner, old.scopes, old.allowed_ips, old.name)
    old.refresh_from_db()
    assert old.expires_at == start + timedelta(hours=1)
    with freeze_time(start + timedelta(minutes=59)):
        assert client.get("/api/whoami/", **auth(old_key)).status_code == 200
        assert client.get("/api/whoami/", **auth(new_key)).status_code == 200
    with freeze_time(start + timedelta(hours=1)):
        assert client.get("/api/whoami/", **auth(old_key)).status_code == 401
        assert client.get("/api/whoami/", **auth(new_key)).status_code == 200
    rotated = AuditEvent.objects.get(event="credential.rotated")
    assert rotated.detail["successor"] == new.lookup_id
    assert AuditEvent.objects.filter(event="credential.issued", credential_id=new.lookup_id).exists()


def test_rotate_never_extends_expiry(make_api_key):
    soon = timezone.now() + timedelta(minutes=5)
    old, _ = make_api_key(expires_at=soon)
    lifecycle.rotate(old, grace=timedelta(days=1))
    old.refresh_from_db()
    assert old.expires_at == soon


def test_rotate_keeps_lifetime(make_api_key):
    old, _ = make_api_key(expires_at=timezone.now() + timedelta(days=30))
    lifetime = old.expires_at - old.created_at
    later = timezone.now() + timedelta(days=10)
    with freeze_time(later):
        new, _ = lifecycle.rotate(old)
    assert abs((new.expires_at - later) - lifetime) < timedelta(seconds=1)


def test_zero_grace_ends_old_key_at_once(client, make_api_key):
    old, old_key = make_api_key()
    lifecycle.rotate(old, grace=timedelta(0))
    assert client.get("/api/whoami/", **auth(old_key)).status_code == 401


def test_revoke_requires_reason_and_is_one_way(api_key):
    obj, _ = api_key
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.revoke(obj, reason="  ")
    lifecycle.revoke(obj, reason="leaked\r\nin logs")
    obj.refresh_from_db()
    assert obj.revoked_at is not None
    assert "\n" not in obj.revoked_reason and "\r" not in obj.revoked_reason
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.revoke(obj, reason="again")
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.rotate(obj)
    row = AuditEvent.objects.get(event="credential.revoked")
    assert row.reason == "revoked"


def test_rotate_expired_refused(make_api_key):
    obj, _ = make_api_key(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.rotate(obj)


def test_revoke_signal(api_key):
    obj, _ = api_key
    received = []
    signals.credential_revoked.connect(lambda **kw: received.append(kw), weak=False, dispatch_uid="t2")
    try:
        lifecycle.revoke(obj, reason="r")
    finally:
        signals.credential_revoked.disconnect(dispatch_uid="t2")
    assert received[0]["reason"] == "r"


def test_second_rotation_during_grace_is_refused(make_api_key):
    """Rotating twice would fork the chain and shorten the successor's lifetime."""
    old, _ = make_api_key()
    new, _ = lifecycle.rotate(old, grace=timedelta(hours=1))
    with pytest.raises(lifecycle.LifecycleError, match=new.lookup_id):
        lifecycle.rotate(old)
    assert new.expires_at is None
    newer, _ = lifecycle.rotate(new)
    assert newer.expires_at is None


def test_rotation_audit_records_the_grace_that_applies(make_api_key):
    soon = timezone.now() + timedelta(minutes=5)
    old, _ = make_api_key(expires_at=soon)
    lifecycle.rotate(old, grace=timedelta(days=1), via="cli")
    row = AuditEvent.objects.get(event="credential.rotated")
    assert row.detail["grace_until"] == soon.isoformat()
    assert row.detail["via"] == "cli"


def test_update_is_audited_and_limited(api_key):
    obj, _ = api_key
    lifecycle.update(obj, changes={"scopes": "a b", "name": "renamed"}, via="admin")
    obj.refresh_from_db()
    assert (obj.scopes, obj.name) == ("a b", "renamed")
    row = AuditEvent.objects.get(event="credential.changed")
    assert row.reason == "changed"
    assert row.detail["changed"] == {"scopes": "a b", "name": "renamed"}
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.update(obj, changes={"secret_hash": "0" * 64})
    lifecycle.revoke(obj, reason="r")
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.update(obj, changes={"name": "again"})


def test_deletion_is_audited(api_key, user):
    obj, _ = api_key
    lookup_id = obj.lookup_id
    user.delete()  # cascades to the key
    row = AuditEvent.objects.get(event="credential.deleted")
    assert (row.credential_id, row.reason) == (lookup_id, "deleted")


def test_update_cannot_revive_an_expired_or_rotated_out_credential(client, make_api_key):
    old, old_key = make_api_key(expires_at=timezone.now() + timedelta(days=30))
    lifecycle.rotate(old, grace=timedelta(0))
    old.refresh_from_db()
    for expires in (None, timezone.now() + timedelta(days=365)):
        with pytest.raises(lifecycle.LifecycleError):
            lifecycle.update(old, changes={"expires_at": expires})
    assert client.get("/api/whoami/", **auth(old_key)).status_code == 401
    lifecycle.update(old, changes={"name": "renamed"})  # other fields stay editable


def test_rotate_and_revoke_reread_the_row(api_key):
    """A stale copy (revoked meanwhile elsewhere) is not rotated or revoked twice."""
    obj, _ = api_key
    stale = ApiKey.objects.get(pk=obj.pk)
    lifecycle.revoke(obj, reason="elsewhere")
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.rotate(stale)
    with pytest.raises(lifecycle.LifecycleError):
        lifecycle.revoke(ApiKey.objects.get(pk=obj.pk).__class__.objects.get(pk=obj.pk), reason="again")
    assert not ApiKey.objects.filter(rotated_from=obj).exists()
