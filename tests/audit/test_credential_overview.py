"""The credential overview: expiring, unused, used after the rotation grace; every kind."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from django_apiauth.ca import authority
from django_apiauth.core import lifecycle
from django_apiauth.models import ApiKey, AuditEvent, ClientCertificate, HmacSecret

pytestmark = pytest.mark.django_db

URL = "/auth/audit/credentials/"


def _ids(response: Any, listing: str) -> set[tuple[str, str]]:
    return {
        (section["kind"], entry["public_id"])
        for section in response.context[listing] for entry in section["entries"]
    }


def test_lists_every_kind(admin_client_: Client, user: Any) -> None:
    now = timezone.now()
    ca = authority.create_ca(name="Corp", slug="corp", days=365)
    soon_key, _ = lifecycle.issue(ApiKey, owner=user, name="soon", expires_at=now + timedelta(days=3))
    later_key, _ = lifecycle.issue(ApiKey, owner=user, name="later", expires_at=now + timedelta(days=60))
    soon_cert, _ = lifecycle.issue(ClientCertificate, owner=user, name="cert", ca=ca,
                                   expires_at=now + timedelta(days=5))
    idle, _ = lifecycle.issue(HmacSecret, owner=user, name="idle")
    HmacSecret.objects.filter(pk=idle.pk).update(created_at=now - timedelta(days=200),
                                                 last_used_at=now - timedelta(days=100))
    busy, _ = lifecycle.issue(HmacSecret, owner=user, name="busy")
    HmacSecret.objects.filter(pk=busy.pk).update(created_at=now - timedelta(days=200),
                                                 last_used_at=now - timedelta(days=1))
    never, _ = lifecycle.issue(ApiKey, owner=user, name="never used")
    ApiKey.objects.filter(pk=never.pk).update(created_at=now - timedelta(days=120))
    revoked, _ = lifecycle.issue(ApiKey, owner=user, name="revoked", expires_at=now + timedelta(days=1))
    lifecycle.revoke(revoked, reason="x")

    response = admin_client_.get(URL)
    assert response.status_code == 200
    assert _ids(response, "expiring") == {("api_key", soon_key.lookup_id),
                                          ("client_cert", soon_cert.fingerprint_sha256)}
    assert _ids(response, "unused") == {("hmac", idle.key_id), ("api_key", never.lookup_id)}
    assert {s["kind"] for s in response.context["expiring"]} == {"api_key", "hmac", "client_cert"}
    html = response.content.decode()
    assert 'value="rotate_selected"' in html and 'value="revoke_selected"' in html
    assert "/admin/django_apiauth/apikey/" in html
    wider = admin_client_.get(URL, {"expiring_days": "90", "unused_days": "150"})
    assert ("api_key", later_key.lookup_id) in _ids(wider, "expiring")
    assert _ids(wider, "unused") == set()  # idle 100 days, never used for 120: not 150


def test_used_after_rotation_grace(admin_client_: Client, user: Any) -> None:
    key, secret = lifecycle.issue(ApiKey, owner=user, name="rotating")
    lifecycle.rotate(key, grace=timedelta(0))
    key.refresh_from_db()
    # a client still presenting the old key after the grace: refused as expired, audited
    from rest_framework.test import APIClient

    assert APIClient().get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {secret}").status_code == 401
    assert AuditEvent.objects.filter(credential_id=key.lookup_id, reason="expired").exists()
    response = admin_client_.get(URL)
    entries = [e for s in response.context["used_after_grace"] for e in s["entries"]]
    assert [e["public_id"] for e in entries] == [key.lookup_id]
    assert entries[0]["attempts"] == 1
    # the successor is not "expiring" merely because of the rotation, the predecessor is gone
    assert ("api_key", key.lookup_id) not in _ids(response, "expiring")


def test_rotate_button_opens_the_admin_confirmation(admin_client_: Client, user: Any) -> None:
    key, _ = lifecycle.issue(ApiKey, owner=user, name="soon",
                             expires_at=timezone.now() + timedelta(days=2))
    response = admin_client_.post("/admin/django_apiauth/apikey/",
                                  {"action": "rotate_selected", "_selected_action": str(key.pk)})
    assert response.status_code == 200
    assert "Grace period" in response.content.decode()
    response = admin_client_.post("/admin/django_apiauth/apikey/",
                                  {"action": "revoke_selected", "_selected_action": str(key.pk)})
    assert "Reason" in response.content.decode()


def test_only_kinds_the_user_may_view(staff_client: Client, user: Any) -> None:
    lifecycle.issue(ApiKey, owner=user, name="soon", expires_at=timezone.now() + timedelta(days=2))
    response = staff_client.get(URL)  # audit permission only: no credential kind to view
    assert response.status_code == 200
    assert response.context["expiring"] == []


def test_empty_lists_say_so(admin_client_: Client) -> None:
    html = admin_client_.get(URL).content.decode()
    assert html.count("apiauth-none") == 3
