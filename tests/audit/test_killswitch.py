"""The per-user kill switch: function, console button (POST + CSRF) and command."""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.test import Client

from django_apiauth.audit.killswitch import EVENT, revoke_all_for_user
from django_apiauth.ca import authority
from django_apiauth.core import audit, lifecycle
from django_apiauth.models import ApiKey, AuditEvent, ClientCertificate, HmacSecret

pytestmark = pytest.mark.django_db


@pytest.fixture
def credentials_of(user: Any, make_user: Any) -> dict[str, Any]:
    """One credential of every kind for ``user`` (plus a revoked one), and one of someone else."""
    ca = authority.create_ca(name="Corp", slug="corp", days=365)
    key, _ = lifecycle.issue(ApiKey, owner=user, name="key")
    old, _ = lifecycle.issue(ApiKey, owner=user, name="old key")
    lifecycle.revoke(old, reason="earlier")
    hmac, _ = lifecycle.issue(HmacSecret, owner=user, name="signer")
    cert, _ = lifecycle.issue(ClientCertificate, owner=user, name="cert", ca=ca)
    other_user = make_user("bob")
    other, _ = lifecycle.issue(ApiKey, owner=other_user, name="bob's key")
    return {"key": key, "old": old, "hmac": hmac, "cert": cert, "other": other}


def _refresh(*objs: Any) -> None:
    for obj in objs:
        obj.refresh_from_db()


def test_revoke_all_for_user_every_kind(user: Any, credentials_of: dict[str, Any]) -> None:
    result = revoke_all_for_user(user, reason="laptop stolen", via="test")
    c = credentials_of
    _refresh(*c.values())
    assert {(x.credential_kind, x.public_id) for x in result.revoked} == {
        ("api_key", c["key"].public_id), ("hmac", c["hmac"].public_id),
        ("client_cert", c["cert"].public_id),
    }
    for name in ("key", "hmac", "cert"):
        assert c[name].revoked_at is not None
        assert c[name].revoked_reason == "laptop stolen"
    assert c["old"].revoked_reason == "earlier"  # untouched
    assert c["other"].revoked_at is None  # someone else's
    revoked_rows = AuditEvent.objects.filter(event="credential.revoked", user=user,
                                             detail__reason="laptop stolen")
    assert revoked_rows.count() == 3
    summary = AuditEvent.objects.get(event=EVENT)
    assert summary.user_id == user.pk
    assert summary.detail["count"] == 3
    assert summary.detail["via"] == "test"
    assert summary.detail["reason"] == "laptop stolen"


def test_revoke_all_needs_a_reason(user: Any, credentials_of: dict[str, Any]) -> None:
    with pytest.raises(lifecycle.LifecycleError):
        revoke_all_for_user(user, reason="   ")
    credentials_of["key"].refresh_from_db()
    assert credentials_of["key"].revoked_at is None


def test_revoke_all_rolls_back_when_the_audit_fails(user: Any, credentials_of: dict[str, Any],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    real = audit.record

    def failing(**kwargs: Any) -> None:
        if kwargs.get("event") == EVENT:
            raise audit.AuditUnavailable("OperationalError")
        real(**kwargs)

    monkeypatch.setattr(audit, "record", failing)
    with pytest.raises(audit.AuditUnavailable):
        revoke_all_for_user(user, reason="x")
    for name in ("key", "hmac", "cert"):
        credentials_of[name].refresh_from_db()
        assert credentials_of[name].revoked_at is None


def test_revoked_credentials_stop_working(user: Any, client: Any) -> None:
    _key, secret = lifecycle.issue(ApiKey, owner=user, name="k")
    assert client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {secret}").status_code == 200
    revoke_all_for_user(user, reason="gone")
    assert client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {secret}").status_code == 401


# -- the console button -------------------------------------------------------------------


def test_console_button_revokes_everything(superuser: Any, user: Any,
                                           credentials_of: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    page = client.get(f"/auth/audit/user/{user.pk}/")
    assert page.status_code == 200
    assert page.context["can_kill"] is True
    html = page.content.decode()
    assert 'id="kill-switch"' in html
    token = page.context["csrf_token"]
    response = client.post(f"/auth/audit/user/{user.pk}/revoke-all/",
                           {"reason": "offboarded", "csrfmiddlewaretoken": str(token)})
    assert response.status_code == 302
    assert response["Location"] == f"/auth/audit/user/{user.pk}/"
    credentials_of["cert"].refresh_from_db()
    assert credentials_of["cert"].revoked_reason == "offboarded"
    summary = AuditEvent.objects.get(event=EVENT)
    assert summary.detail["actor"] == superuser.username
    assert summary.detail["via"] == "audit-console"
    after = client.get(response["Location"])
    assert "Revoked 3 credentials of alice." in after.content.decode()
    assert after.context["can_kill"] is False  # nothing left to revoke


def test_console_button_needs_csrf(superuser: Any, user: Any, credentials_of: dict[str, Any]) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)
    response = client.post(f"/auth/audit/user/{user.pk}/revoke-all/", {"reason": "x"})
    assert response.status_code == 403
    credentials_of["key"].refresh_from_db()
    assert credentials_of["key"].revoked_at is None


def test_console_button_is_post_only(superuser: Any, user: Any) -> None:
    client = Client()
    client.force_login(superuser)
    assert client.get(f"/auth/audit/user/{user.pk}/revoke-all/").status_code == 405


def test_console_button_needs_change_permission_on_every_kind(
    staff: Any, user: Any, credentials_of: dict[str, Any],
) -> None:
    client = Client()
    client.force_login(staff)  # may view the audit, may not revoke
    page = client.get(f"/auth/audit/user/{user.pk}/")
    assert page.context["can_kill"] is False
    response = client.post(f"/auth/audit/user/{user.pk}/revoke-all/", {"reason": "x"})
    assert response.status_code == 403
    staff.user_permissions.add(*Permission.objects.filter(codename="change_apikey"))
    response = client.post(f"/auth/audit/user/{user.pk}/revoke-all/", {"reason": "x"})
    assert response.status_code == 403  # still not for the other kinds
    credentials_of["key"].refresh_from_db()
    assert credentials_of["key"].revoked_at is None


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201])
def test_console_button_refuses_a_bad_reason(superuser: Any, user: Any, credentials_of: dict[str, Any],
                                             reason: str) -> None:
    client = Client()
    client.force_login(superuser)
    response = client.post(f"/auth/audit/user/{user.pk}/revoke-all/", {"reason": reason}, follow=True)
    assert response.status_code == 200
    assert "Give a reason" in response.content.decode()
    credentials_of["key"].refresh_from_db()
    assert credentials_of["key"].revoked_at is None


@pytest.mark.parametrize("pk", ["999999", str(10**30)])
def test_console_button_unknown_user(superuser: Any, pk: str) -> None:
    client = Client()
    client.force_login(superuser)
    assert client.post(f"/auth/audit/user/{pk}/revoke-all/", {"reason": "x"}).status_code == 404


def test_anonymous_post_is_sent_to_login(user: Any) -> None:
    response = Client().post(f"/auth/audit/user/{user.pk}/revoke-all/", {"reason": "x"})
    assert response.status_code == 302


# -- the command --------------------------------------------------------------------------


def test_command_json(user: Any, credentials_of: dict[str, Any]) -> None:
    out = StringIO()
    call_command("revoke_user_credentials", "alice", "--reason", "left the company", "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["user"] == "alice"
    assert data["count"] == 3
    assert {item["kind"] for item in data["revoked"]} == {"api_key", "hmac", "client_cert"}
    summary = AuditEvent.objects.get(event=EVENT)
    assert summary.detail["via"] == "cli"
    assert summary.detail["actor"] is None


def test_command_text_and_idempotence(user: Any, credentials_of: dict[str, Any]) -> None:
    out = StringIO()
    call_command("revoke_user_credentials", "alice", "--reason", "x", stdout=out)
    assert "Revoked 3 credential(s) of alice" in out.getvalue()
    out = StringIO()
    call_command("revoke_user_credentials", "alice", "--reason", "again", stdout=out)
    assert "nothing to do" in out.getvalue()


@pytest.mark.parametrize(("args", "message"), [
    (["nobody", "--reason", "x"], "No user 'nobody'"),
    (["alice", "--reason", "  "], "--reason must not be blank"),
])
def test_command_errors(user: Any, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("revoke_user_credentials", *args, stdout=StringIO(), stderr=StringIO())


# -- the admin action -------------------------------------------------------------------


def test_admin_action_revokes_every_credential_of_the_owners(
    superuser: Any, user: Any, credentials_of: dict[str, Any],
) -> None:
    client = Client()
    client.force_login(superuser)
    url = "/admin/django_apiauth/hmacsecret/"
    selected = {"action": "revoke_owners_credentials", "index": "0",
                "_selected_action": [str(credentials_of["hmac"].pk)]}
    confirm = client.post(url, selected)
    assert confirm.status_code == 200
    assert "alice" in confirm.content.decode()
    assert credentials_of["key"].__class__.objects.get(pk=credentials_of["key"].pk).revoked_at is None
    done = client.post(url, {**selected, "confirm": "yes", "reason": "offboarded"}, follow=True)
    assert "Revoked 3 credentials of alice." in done.content.decode()
    for name in ("key", "hmac", "cert"):
        credentials_of[name].refresh_from_db()
        assert credentials_of[name].revoked_reason == "offboarded"
    credentials_of["other"].refresh_from_db()
    assert credentials_of["other"].revoked_at is None
    assert AuditEvent.objects.get(event=EVENT).detail["via"] == "admin"


def test_admin_action_needs_change_permission_on_every_kind(staff: Any) -> None:
    from django.contrib import admin as django_admin
    from django.test import RequestFactory

    from django_apiauth.admin import ApiKeyAdmin

    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_apikey", "change_apikey"]))
    staff = type(staff).objects.get(pk=staff.pk)  # fresh permission cache
    request = RequestFactory().get("/")
    request.user = staff
    actions = dict(ApiKeyAdmin(ApiKey, django_admin.site).get_action_choices(request))
    assert "revoke_selected" in actions
    assert "revoke_owners_credentials" not in actions
