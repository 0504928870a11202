"""Single logout over the HTTP-Redirect binding, with the pysaml2 IdP."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import SESSION_KEY

from django_apiauth.models import AuditEvent

from .conftest import IDP_SLO_URL, RSA_SHA256, SP_ENTITY_ID, name_id, post_acs

pytestmark = pytest.mark.django_db
SLS_URL = "http://testserver/auth/saml/acme/sls/"


def _logout_request_url(idp: Any, subject: str, *, sign: bool = True) -> str:
    from saml2 import BINDING_HTTP_REDIRECT

    _id, request = idp.create_logout_request(SLS_URL, SP_ENTITY_ID, name_id=name_id(subject), sign=False)
    info = idp.apply_binding(BINDING_HTTP_REDIRECT, str(request), destination=SLS_URL, sign=sign,
                             sigalg=RSA_SHA256)
    return dict(info["headers"])["Location"]


def _signed_in_client(signed_in: Any) -> Any:
    started, xml = signed_in()
    assert post_acs(started.client, xml).status_code == 302
    return started.client


def test_idp_initiated_logout_ends_the_session_and_answers_signed(idp: Any, signed_in: Any) -> None:
    from saml2 import BINDING_HTTP_REDIRECT

    client = _signed_in_client(signed_in)
    url = _logout_request_url(idp, "alice-0001")
    response = client.get(url.replace("http://testserver", ""))
    assert response.status_code == 302, response.content[:300]
    assert SESSION_KEY not in client.session
    location = response["Location"]
    assert location.startswith(IDP_SLO_URL + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert query["SigAlg"] == RSA_SHA256
    answer = idp.parse_logout_request_response(query["SAMLResponse"], BINDING_HTTP_REDIRECT)
    assert answer.response.status.status_code.value == "urn:oasis:names:tc:SAML:2.0:status:Success"
    assert AuditEvent.objects.filter(event="sso_logout", outcome="success").exists()


def test_logout_request_for_someone_else_keeps_the_session(idp: Any, signed_in: Any) -> None:
    client = _signed_in_client(signed_in)
    response = client.get(_logout_request_url(idp, "bob-0002").replace("http://testserver", ""))
    assert response.status_code == 302
    assert SESSION_KEY in client.session


def test_unsigned_logout_request_is_refused_and_keeps_the_session(idp: Any, signed_in: Any) -> None:
    client = _signed_in_client(signed_in)
    response = client.get(_logout_request_url(idp, "alice-0001", sign=False).replace("http://testserver", ""))
    assert response.status_code == 403
    assert SESSION_KEY in client.session
    assert AuditEvent.objects.filter(event="sso_logout", outcome="failure", reason="bad_signature").exists()


def test_garbage_logout_request_is_400_not_500(signed_in: Any) -> None:
    client = _signed_in_client(signed_in)
    response = client.get("/auth/saml/acme/sls/", {"SAMLRequest": "not*deflated*"})
    assert response.status_code in (400, 403)
    assert SESSION_KEY in client.session


def test_sp_initiated_logout_is_post_only_and_sends_a_signed_logout_request(idp: Any, signed_in: Any) -> None:
    from saml2 import BINDING_HTTP_REDIRECT

    client = _signed_in_client(signed_in)
    assert client.get("/auth/saml/acme/logout/").status_code == 405
    response = client.post("/auth/saml/acme/logout/")
    assert response.status_code == 302
    assert SESSION_KEY not in client.session
    query = {k: v[0] for k, v in parse_qs(urlsplit(response["Location"]).query).items()}
    request = idp.parse_logout_request(query["SAMLRequest"], BINDING_HTTP_REDIRECT,
                                       relay_state=query.get("RelayState"), sigalg=query["SigAlg"],
                                       signature=query["Signature"])
    assert request.message.name_id.text == "alice-0001"


def test_refused_logout_messages_are_audited_as_logout_only(signed_in: Any) -> None:
    client = _signed_in_client(signed_in)
    client.get("/auth/saml/acme/sls/", {"SAMLRequest": "not*deflated*"})
    client.get("/auth/saml/acme/sls/")
    rows = list(AuditEvent.objects.filter(outcome="failure").values_list("event", "reason"))
    assert rows and all(event == "sso_logout" for event, _reason in rows)
    assert ("sso_logout", "missing") in rows
    assert SESSION_KEY in client.session
