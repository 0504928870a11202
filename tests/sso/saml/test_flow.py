"""The whole browser-less round trip against a real pysaml2 IdP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY, get_user_model
from django.shortcuts import resolve_url
from django.test import Client, override_settings
from django.utils import timezone
from freezegun import freeze_time
from lxml import etree

from django_apiauth.models import (
    AuditEvent,
    ExternalIdentity,
    SamlAuthnRequest,
    SamlIdentityProvider,
    SamlServiceProviderKey,
)

from . import xmltools as x
from .conftest import (
    ACS_URL,
    IDP_ENTITY_ID,
    LOGIN_PATH,
    SP_ENTITY_ID,
    authn_response,
    b64,
    post_acs,
    start,
)

pytestmark = pytest.mark.django_db
IDP_INITIATED = {"in_response_to": None, "destination": ACS_URL, "sp_entity_id": SP_ENTITY_ID,
                 "name_id_policy": None}


def test_sp_initiated_sign_in_creates_a_session_identity_and_audit_row(signed_in: Any) -> None:
    started, xml = signed_in(next_url="/admin/")
    response = post_acs(started.client, xml)
    assert response.status_code == 302, response.content
    assert response["Location"] == "/admin/"
    user = get_user_model().objects.get()
    assert started.client.session[SESSION_KEY] == str(user.pk)
    assert (user.username, user.email, user.is_staff) == ("alice", "alice@acme.example", True)
    link = ExternalIdentity.objects.get()
    assert (link.issuer, link.subject, link.user_id) == (IDP_ENTITY_ID, "alice-0001", user.pk)
    row = AuditEvent.objects.get(event="sso_login")
    assert (row.scheme, row.outcome, row.reason, row.user_id) == ("saml", "success", "ok", user.pk)
    assert not SamlAuthnRequest.objects.exists()



def _login(client: Any, next_url: str | None = None) -> Any:
    path = LOGIN_PATH + (f"?next={quote(next_url, safe='')}" if next_url else "")
    return client.get(path)


def test_authn_request_is_signed_rsa_sha256_and_verified_by_the_idp(idp: Any, provider: Any) -> None:
    from saml2 import BINDING_HTTP_REDIRECT

    client = Client()
    response = _login(client, "/admin/")
    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    query = {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}
    assert query["SigAlg"] == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    assert "RelayState" not in query  # next stays on the server
    request = idp.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT,
                                      sigalg=query["SigAlg"], signature=query["Signature"])
    assert request.message.assertion_consumer_service_url == ACS_URL
    pending = SamlAuthnRequest.objects.get()
    assert (pending.request_id, pending.next_url) == (request.message.id, "/admin/")
    cookie = client.cookies["apiauth_saml"]
    assert cookie["httponly"] and cookie["samesite"] == "Lax"  # None (+ Secure) over HTTPS
    assert pending.browser_hash == SamlAuthnRequest.hash_binding(cookie.value)
    # a tampered signature is refused by the IdP: the signature above was really checked
    forged = query["Signature"][:-8] + ("A" * 8 if not query["Signature"].endswith("A" * 8) else "B" * 8)
    with pytest.raises(Exception):  # noqa: B017 - pysaml2 raises its own signature errors
        idp.parse_authn_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT, sigalg=query["SigAlg"],
                                signature=forged)


def test_login_over_https_sets_a_samesite_none_secure_binding_cookie(provider: Any) -> None:
    client = Client()
    response = client.get(LOGIN_PATH, secure=True)
    assert response.status_code == 302
    cookie = client.cookies["apiauth_saml"]
    assert (cookie["samesite"], bool(cookie["secure"]), bool(cookie["httponly"])) == ("None", True, True)


def test_metadata_is_valid_signed_and_names_the_acs(provider: Any) -> None:
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    response = Client().get(f"/auth/saml/{provider.slug}/metadata/")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/samlmetadata+xml"
    xml = response.content
    cert = SamlServiceProviderKey.objects.get().certificate_pem
    assert OneLogin_Saml2_Utils.validate_metadata_sign(xml, cert, raise_exceptions=True)
    root = etree.fromstring(xml)
    ns = {"md": "urn:oasis:names:tc:SAML:2.0:metadata"}
    assert root.get("entityID") == SP_ENTITY_ID
    acs = root.find("md:SPSSODescriptor/md:AssertionConsumerService", ns)
    assert acs.get("Location") == ACS_URL
    assert acs.get("Binding") == "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
    sp_descriptor = root.find("md:SPSSODescriptor", ns)
    assert sp_descriptor.get("AuthnRequestsSigned") == "true"
    assert sp_descriptor.get("WantAssertionsSigned") == "true"
    assert b"PRIVATE KEY" not in xml


def test_metadata_without_an_sp_key_is_503(db: Any, saml_keys: Any) -> None:
    from .conftest import _provider_fields

    SamlIdentityProvider.objects.create(**_provider_fields(saml_keys))
    assert Client().get("/auth/saml/acme/metadata/").status_code == 503
    response = Client().get(LOGIN_PATH)
    assert response.status_code == 503
    assert AuditEvent.objects.get(event="sso_login").reason == "service_unavailable"


def test_comment_inside_nameid_never_truncates_the_subject(signed_in: Any, make_user: Any) -> None:
    """The IdP vouches for "victim-0001.attacker"; a comment after "victim-0001"
    must not make the SP read the shorter value (CVE-2017-11427 family)."""
    victim = make_user("victim", is_staff=True)
    ExternalIdentity.objects.create(issuer=IDP_ENTITY_ID, subject="victim-0001", user=victim)
    started, xml = signed_in(subject="victim-0001.attacker")

    def add_comment(root: Any) -> None:
        nameid = x.one(root, "/samlp:Response/saml:Assertion/saml:Subject/saml:NameID")
        nameid.text = "victim-0001"
        comment = etree.Comment("")
        nameid.append(comment)
        comment.tail = ".attacker"

    tampered = x.edit(xml, add_comment)
    assert b"victim-0001<!---->.attacker" in tampered
    response = post_acs(started.client, tampered)
    user_id = started.client.session.get(SESSION_KEY)
    assert user_id != str(victim.pk)
    if response.status_code == 302:  # accepted: then as the full, signed value
        link = ExternalIdentity.objects.get(user_id=int(user_id))
        assert link.subject == "victim-0001.attacker"
    else:
        assert response.status_code in (400, 403)


def test_replayed_response_is_refused_even_in_the_same_browser(signed_in: Any) -> None:
    started, xml = signed_in()
    assert post_acs(started.client, xml).status_code == 302
    started.client.logout()
    again = post_acs(started.client, xml)
    assert again.status_code == 403
    assert SESSION_KEY not in started.client.session
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "replayed"


def test_a_second_login_start_does_not_disturb_the_first(idp: Any, provider: Any) -> None:
    client = Client()
    first = start(client, idp, "/admin/")
    second = start(client, idp, "/other/")
    xml = authn_response(idp, first.args)
    response = post_acs(client, xml)
    assert (response.status_code, response["Location"]) == (302, "/admin/")
    assert SamlAuthnRequest.objects.get().request_id == second.request_id


@pytest.mark.parametrize(
    "evil", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"])
def test_next_open_redirect_is_replaced_by_the_default(signed_in: Any, evil: str) -> None:
    started, xml = signed_in(next_url=quote(evil, safe=""))
    assert SamlAuthnRequest.objects.get().next_url == resolve_url(settings.LOGIN_REDIRECT_URL)
    response = post_acs(started.client, xml, relay_state=evil)
    assert response.status_code == 302
    assert response["Location"] == resolve_url(settings.LOGIN_REDIRECT_URL)


def test_relay_state_never_overrides_the_stored_next(signed_in: Any) -> None:
    started, xml = signed_in(next_url="/admin/")
    response = post_acs(started.client, xml, relay_state="/somewhere-else/")
    assert response["Location"] == "/admin/"


@pytest.mark.parametrize(("relay_state", "expected"), [
    ("/admin/", "/admin/"),
    ("https://evil.example/", None),
    ("//evil.example/", None),
    ("/\\evil.example", None),
])
def test_idp_initiated_when_allowed_honours_only_same_site_relay_state(
    idp: Any, provider: Any, relay_state: str, expected: str | None
) -> None:
    provider.allow_idp_initiated = True
    provider.save()
    args = IDP_INITIATED
    client = Client()
    response = post_acs(client, authn_response(idp, args), relay_state=relay_state)
    assert response.status_code == 302, response.content[:200]
    assert response["Location"] == (expected or resolve_url(settings.LOGIN_REDIRECT_URL))
    assert SESSION_KEY in client.session


def test_idp_initiated_response_still_needs_its_assertion_fresh(idp: Any, provider: Any) -> None:
    provider.allow_idp_initiated = True
    provider.save()
    args = IDP_INITIATED
    xml = authn_response(idp, args)
    assert post_acs(Client(), xml).status_code == 302
    replay = post_acs(Client(), xml)
    assert replay.status_code == 403
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "replayed"


def test_expired_pending_request_is_refused(signed_in: Any) -> None:
    started, xml = signed_in()
    SamlAuthnRequest.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = post_acs(started.client, xml)
    assert response.status_code == 403
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "expired"


def test_response_for_one_idp_posted_to_another_idps_acs_is_refused(signed_in: Any, saml_keys: Any) -> None:
    from .conftest import _provider_fields

    started, xml = signed_in()
    other = {**_provider_fields(saml_keys), "slug": "other", "entity_id": "https://other.example/idp"}
    SamlIdentityProvider.objects.create(**other)
    response = started.client.post("/auth/saml/other/acs/", {"SAMLResponse": b64(xml)})
    assert response.status_code == 403
    assert SESSION_KEY not in started.client.session


def test_unknown_provider_acs_is_404_and_audited(db: Any) -> None:
    response = Client().post("/auth/saml/nobody/acs/", {"SAMLResponse": "x"})
    assert response.status_code == 404
    assert AuditEvent.objects.get(event="sso_login").reason == "unknown_credential"


def test_inactive_provider_is_refused(signed_in: Any, provider: Any) -> None:
    started, xml = signed_in()
    provider.active = False
    provider.save()
    response = post_acs(started.client, xml)
    assert response.status_code == 403
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "provider_inactive"
    assert Client().get(LOGIN_PATH).status_code == 403


def test_unknown_identity_without_jit_is_refused(signed_in: Any, provider: Any) -> None:
    provider.jit_enabled = False
    provider.save()
    started, xml = signed_in()
    response = post_acs(started.client, xml)
    assert response.status_code == 403
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "unknown_identity"
    assert not get_user_model().objects.exists()


def test_replay_store_down_is_503_audited_and_signs_nobody_in(signed_in: Any) -> None:
    started, xml = signed_in()
    with override_settings(APIAUTH_REPLAY_CACHE="missing-alias"):
        response = post_acs(started.client, xml)
    assert response.status_code == 503
    assert SESSION_KEY not in started.client.session
    assert AuditEvent.objects.filter(event="sso_login").latest("id").reason == "service_unavailable"


def test_request_store_down_is_503_audited(provider: Any, monkeypatch: Any) -> None:
    from django.db import DatabaseError

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise DatabaseError("request store down")

    monkeypatch.setattr(SamlAuthnRequest.objects, "create", broken)
    response = Client().get(LOGIN_PATH)
    assert response.status_code == 503
    assert AuditEvent.objects.get(event="sso_login").reason == "service_unavailable"


def test_a_signing_certificate_rollover_accepts_either_certificate(signed_in: Any, provider: Any,
                                                                   saml_keys: Any) -> None:
    provider.certificates = saml_keys.attacker_cert_pem + saml_keys.idp_cert_pem
    provider.full_clean()
    provider.save()
    started, xml = signed_in()
    assert post_acs(started.client, xml).status_code == 302


def test_raw_response_is_never_stored_in_audit_rows(signed_in: Any) -> None:
    started, xml = signed_in()
    post_acs(started.client, x.edit(xml, x.strip_signatures))
    for row in AuditEvent.objects.all():
        text = str(row.detail)
        assert "<" not in text and "alice@acme.example" not in text and b64(xml)[:16] not in text


def test_one_browser_keeps_at_most_five_pending_requests(idp: Any, provider: Any) -> None:
    client = Client()
    for _ in range(7):
        assert _login(client).status_code == 302
    assert SamlAuthnRequest.objects.count() == 5


def test_a_stolen_response_posted_elsewhere_neither_works_nor_spoils_the_real_sign_in(signed_in: Any) -> None:
    started, xml = signed_in(next_url="/admin/")
    attacker = Client()
    assert post_acs(attacker, xml).status_code == 403
    assert SESSION_KEY not in attacker.session
    assert AuditEvent.objects.get(event="sso_login").reason == "request_mismatch"
    response = post_acs(started.client, xml)
    assert (response.status_code, response["Location"]) == (302, "/admin/")


def test_encrypted_assertion_is_decrypted_with_the_sp_key_and_plaintext_refused_when_required(
    signed_in: Any, provider: Any
) -> None:
    provider.want_assertions_encrypted = True
    provider.save()
    cert = SamlServiceProviderKey.objects.get().certificate_pem
    # pysaml2's "self-contained" mode renames the xsi prefix *after* signing (the
    # digest then fails for any verifier), so its plain mode is used here.
    started, xml = signed_in(encrypt_assertion=True, encrypt_cert_assertion=cert,
                              encrypt_assertion_self_contained=False)
    assert b"EncryptedAssertion" in xml.encode() and b"alice@acme.example" not in xml.encode()
    response = post_acs(started.client, xml)
    assert response.status_code == 302, AuditEvent.objects.values_list("reason", "detail").last()
    plain_started, plain = signed_in()
    refused = post_acs(plain_started.client, plain)
    assert refused.status_code == 403
    assert SESSION_KEY not in plain_started.client.session


@pytest.mark.parametrize(("skew", "status"), [(120, 302), (0, 403)])
def test_clock_skew_setting_applies_to_not_before(signed_in: Any, skew: int, status: int) -> None:
    started, xml = signed_in()
    with override_settings(APIAUTH_SAML_CLOCK_SKEW=skew), freeze_time(timezone.now() - timedelta(seconds=60)):
        response = post_acs(started.client, xml)
    assert response.status_code == status


def test_login_pages_show_a_button_for_the_active_idp(provider: Any) -> None:
    page = Client().get("/auth/login/?next=/admin/").content.decode()
    assert "Sign in with ACME Corp" in page and LOGIN_PATH in page
    admin_page = Client().get("/admin/login/?next=/admin/").content.decode()
    assert "Sign in with ACME Corp" in admin_page
    provider.active = False
    provider.save()
    assert "Sign in with ACME Corp" not in Client().get("/auth/login/").content.decode()
