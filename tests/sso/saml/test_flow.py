"""The whole browser-less round trip against a real pysaml2 IdP."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY, get_user_model

from django_apiauth.models import AuditEvent, ExternalIdentity, SamlAuthnRequest

from .conftest import IDP_ENTITY_ID, post_acs

pytestmark = pytest.mark.django_db


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

