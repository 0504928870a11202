"""The shared SSO tail: identity mapping, account linking, login, refusal, safe ``next``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser, Group
from django.contrib.sessions.middleware import SessionMiddleware
from django.shortcuts import resolve_url
from django.test import RequestFactory

from django_apiauth.core import audit
from django_apiauth.models import AuditEvent, ExternalIdentity
from django_apiauth.sso import identity
from django_apiauth.sso.identity import SsoRefused, complete_login, refuse, resolve_user, safe_next

pytestmark = pytest.mark.django_db
User = get_user_model()


@dataclass
class Provider:
    """A provider as the shared code sees it (the SAML and OIDC models have these attributes)."""

    slug: str = "acme"
    name: str = "ACME"
    active: bool = True
    jit_enabled: bool = False
    attribute_mapping: dict[str, Any] = field(default_factory=dict)
    scheme: str = "oidc"
    issuer_id: str = "https://idp.acme.example"

    def login_url(self) -> str:
        return f"/auth/oidc/{self.slug}/login/"


MAPPING = {
    "username": "uid",
    "email": "mail",
    "first_name": "givenName",
    "last_name": "sn",
    "staff": {"attribute": "groups", "values": ["admins"]},
    "groups": {"attribute": "groups", "map": {"auditors": "Auditors", "admins": "Admins"}},
}


def test_unknown_identity_is_refused_without_jit():
    with pytest.raises(SsoRefused) as caught:
        resolve_user(Provider(), subject="u1", attributes={})
    assert caught.value.reason == identity.UNKNOWN_IDENTITY
    assert caught.value.status == 403
    assert not ExternalIdentity.objects.exists()
    assert not User.objects.exists()


def test_jit_creates_a_user_with_mapped_attributes_and_no_password():
    attrs = {"uid": ["alice"], "mail": ["alice@acme.example"], "givenName": ["Alice"], "sn": ["Liddell"],
             "groups": ["admins", "other"]}
    provider = Provider(jit_enabled=True, attribute_mapping=MAPPING)
    user = resolve_user(provider, subject="s-1", attributes=attrs)
    user.refresh_from_db()
    assert user.username == "alice"
    assert (user.email, user.first_name, user.last_name) == ("alice@acme.example", "Alice", "Liddell")
    assert user.is_staff is True
    assert user.is_superuser is False
    assert not user.has_usable_password()
    assert set(user.groups.values_list("name", flat=True)) == {"Admins"}
    link = ExternalIdentity.objects.get()
    assert (link.issuer, link.subject, link.user_id) == ("https://idp.acme.example", "s-1", user.pk)


def test_second_login_returns_the_same_user_and_syncs_staff_and_managed_groups_only():
    provider = Provider(jit_enabled=True, attribute_mapping=MAPPING)
    user = resolve_user(provider, subject="s-1", attributes={"uid": ["alice"], "groups": ["admins"]})
    unmanaged = Group.objects.create(name="Hand-picked")
    user.groups.add(unmanaged)
    again = resolve_user(provider, subject="s-1", attributes={"uid": ["renamed"], "groups": ["auditors"]})
    again.refresh_from_db()
    assert again.pk == user.pk
    assert again.username == "alice"  # the username is only chosen at creation
    assert again.is_staff is False
    assert set(again.groups.values_list("name", flat=True)) == {"Auditors", "Hand-picked"}
    assert User.objects.count() == 1


def test_jit_never_takes_over_an_existing_username():
    existing = User.objects.create_user("alice", password="pw")
    user = resolve_user(Provider(jit_enabled=True, attribute_mapping=MAPPING), subject="s-1",
                        attributes={"uid": ["alice"]})
    assert user.pk != existing.pk
    assert user.username.startswith("alice-")
    assert ExternalIdentity.objects.get().user_id == user.pk


def test_jit_username_is_sanitised():
    user = resolve_user(Provider(jit_enabled=True, attribute_mapping=MAPPING), subject="s-1",
                        attributes={"uid": ["<b>al ice</b>\r\n"]})
    assert all(c.isalnum() or c in "@.+-_" for c in user.username)


@pytest.mark.parametrize("verified", [False, True])
def test_an_unverified_email_never_links_an_existing_account(verified):
    existing = User.objects.create_user("bob", email="bob@acme.example")
    provider = Provider(attribute_mapping={"email": "mail", "link_by_verified_email": True})
    if verified:
        user = resolve_user(provider, subject="s-2", attributes={"mail": ["BOB@acme.example"]},
                            email_verified=True)
        assert user.pk == existing.pk
        assert ExternalIdentity.objects.get().user_id == existing.pk
    else:
        with pytest.raises(SsoRefused) as caught:
            resolve_user(provider, subject="s-2", attributes={"mail": ["bob@acme.example"]},
                         email_verified=False)
        assert caught.value.reason == identity.UNKNOWN_IDENTITY
        assert not ExternalIdentity.objects.exists()


def test_verified_email_links_only_when_the_provider_opts_in():
    User.objects.create_user("bob", email="bob@acme.example")
    with pytest.raises(SsoRefused):
        resolve_user(Provider(attribute_mapping={"email": "mail"}), subject="s-2",
                     attributes={"mail": ["bob@acme.example"]}, email_verified=True)


@pytest.mark.parametrize("case", ["superuser", "two_accounts", "inactive"])
def test_email_linking_refuses_superusers_ambiguity_and_inactive_accounts(case):
    if case == "superuser":
        User.objects.create_superuser("root", email="x@acme.example", password="pw")
    elif case == "two_accounts":
        User.objects.create_user("a", email="x@acme.example")
        User.objects.create_user("b", email="X@acme.example")
    else:
        User.objects.create_user("a", email="x@acme.example", is_active=False)
    provider = Provider(attribute_mapping={"email": "mail", "link_by_verified_email": True})
    with pytest.raises(SsoRefused) as caught:
        resolve_user(provider, subject="s-3", attributes={"mail": ["x@acme.example"]}, email_verified=True)
    assert caught.value.reason == identity.UNKNOWN_IDENTITY
    assert not ExternalIdentity.objects.exists()


def test_inactive_linked_user_is_refused():
    user = User.objects.create_user("carol", is_active=False)
    ExternalIdentity.objects.create(issuer="https://idp.acme.example", subject="s-4", user=user)
    with pytest.raises(SsoRefused) as caught:
        resolve_user(Provider(jit_enabled=True), subject="s-4", attributes={})
    assert caught.value.reason == "inactive_owner"


def test_sso_never_grants_superuser_even_if_mapped():
    provider = Provider(jit_enabled=True, attribute_mapping={**MAPPING, "is_superuser": "groups"})
    user = resolve_user(provider, subject="s-5", attributes={"groups": ["admins"]})
    user.refresh_from_db()
    assert user.is_superuser is False


@pytest.mark.parametrize("subject", ["", "   ", "a" * 256, "bad\x00sub", "line\nbreak", None, 42])
def test_malformed_subjects_are_refused(subject):
    with pytest.raises(SsoRefused) as caught:
        resolve_user(Provider(jit_enabled=True), subject=subject, attributes={})
    assert caught.value.reason == identity.BAD_ATTRIBUTES
    assert not User.objects.exists()


def test_same_subject_at_another_issuer_is_another_identity():
    a = resolve_user(Provider(jit_enabled=True), subject="same", attributes={})
    b = resolve_user(Provider(jit_enabled=True, issuer_id="https://other.example", slug="other"),
                     subject="same", attributes={})
    assert a.pk != b.pk


# -- safe next ----------------------------------------------------------------

@pytest.mark.parametrize("candidate", [
    "https://evil.example/", "//evil.example", "///evil.example", "/\\evil.example", "\\\\evil.example",
    "javascript:alert(1)", "http://testserver/admin/", "evil.example", "/ok\r\nSet-Cookie: x=1",
    "/\x00x", "", None, "/" + "a" * 3000,
])
def test_safe_next_refuses_anything_but_a_same_site_path(rf, candidate, settings):
    settings.LOGIN_REDIRECT_URL = "/home/"
    assert safe_next(rf.get("/"), candidate) == "/home/"


@pytest.mark.parametrize("candidate", ["/admin/", "/admin/?q=1#frag", "/api/whoami/"])
def test_safe_next_keeps_same_site_paths(rf, candidate):
    assert safe_next(rf.get("/"), candidate) == candidate


# -- login and refusal --------------------------------------------------------

def _request_with_session(path: str = "/auth/oidc/acme/callback/") -> Any:
    request = RequestFactory().get(path, HTTP_USER_AGENT="pytest")
    SessionMiddleware(lambda r: None).process_request(request)
    request.user = AnonymousUser()
    request.session["before"] = "x"
    request.session.save()
    return request


def test_complete_login_logs_in_cycles_the_session_and_audits():
    user = User.objects.create_user("dave")
    ExternalIdentity.objects.create(issuer="https://idp.acme.example", subject="s-6", user=user)
    request = _request_with_session()
    old_key = request.session.session_key
    response = complete_login(request, user, provider=Provider(), subject="s-6", next_url="https://evil.example/")
    assert response.status_code == 302
    assert response["Location"] == resolve_url(settings.LOGIN_REDIRECT_URL)  # not the foreign next
    assert request.session[SESSION_KEY] == str(user.pk)
    assert request.session.session_key != old_key
    row = AuditEvent.objects.get()
    assert (row.event, row.scheme, row.outcome, row.reason, row.user_id) == (
        "sso_login", "oidc", "success", "ok", user.pk)
    assert ExternalIdentity.objects.get().last_seen_at is not None


def test_complete_login_refuses_when_the_audit_cannot_be_written(monkeypatch):
    user = User.objects.create_user("erin")

    def down(**kwargs: Any) -> None:
        raise audit.AuditUnavailable("database down")

    monkeypatch.setattr(identity.audit, "record", down)
    request = _request_with_session()
    response = complete_login(request, user, provider=Provider(), subject="s-7", next_url="/admin/")
    assert response.status_code == 503
    assert SESSION_KEY not in request.session


def test_refuse_audits_and_renders_an_escaped_generic_page():
    request = _request_with_session()
    refused = SsoRefused("state_mismatch", "<script>alert(1)</script>", status=400,
                         detail={"step": "callback"})
    response = refuse(request, refused, provider=Provider(), scheme="oidc")
    response.render()
    assert response.status_code == 400
    body = response.content.decode()
    assert "<script>alert(1)</script>" not in body
    assert "&lt;script&gt;" in body
    assert response["Cache-Control"] == "no-store"
    assert SESSION_KEY not in request.session
    row = AuditEvent.objects.get()
    assert (row.event, row.scheme, row.outcome, row.reason) == (
        "sso_login", "oidc", "failure", "state_mismatch")
    assert row.detail == {"provider": "acme", "step": "callback"}


# -- pages ----------------------------------------------------------------------

def test_login_page_renders_without_providers(client):
    response = client.get("/auth/login/?next=https://evil.example/")
    assert response.status_code == 200
    body = response.content.decode()
    assert "evil.example" not in body
    assert "/admin/login/" in body


def test_login_page_refuses_post(client):
    assert client.post("/auth/login/").status_code == 405


def test_admin_login_page_still_renders_with_the_sso_template(client):
    from django.contrib import admin

    assert admin.site.login_template == "django_apiauth/admin/login.html"
    response = client.get("/admin/login/?next=/admin/")
    assert response.status_code == 200
    assert 'name="username"' in response.content.decode()
