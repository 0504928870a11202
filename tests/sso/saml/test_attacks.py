"""Every SAML bad input of issue 6, built from real pysaml2-signed responses.

Each case must be refused with the stated status and audit reason, create no
session and no external identity, and leave the victim's account untouched.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import SESSION_KEY
from django.test import Client
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth.models import AuditEvent, ExternalIdentity

from . import xmltools as x
from .conftest import (
    ACS_PATH,
    ACS_URL,
    IDP_ENTITY_ID,
    RSA_SHA1,
    SHA1,
    SP_ENTITY_ID,
    Keys,
    authn_response,
    b64,
    make_idp,
)

pytestmark = pytest.mark.django_db
VICTIM = "victim-0001"
OTHER_ACS = "http://testserver/auth/saml/other/acs/"


@dataclass
class Attempt:
    client: Client
    saml_response: str | None
    relay_state: str | None = None
    method: str = "post"
    shift: timedelta | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Ctx:
    idp: Any
    keys: Keys
    sp_metadata: str
    signed_in: Callable[..., Any]
    sample: str

    def signed(self, **kwargs: Any) -> Attempt:
        started, xml = self.signed_in(**kwargs)
        return Attempt(started.client, b64(xml))

    def edited(self, change: Callable[[Any], None], **kwargs: Any) -> Attempt:
        started, xml = self.signed_in(**kwargs)
        return Attempt(started.client, b64(x.edit(xml, change)))

    def resigned(self, change: Callable[[Any], None], **kwargs: Any) -> Attempt:
        started, xml = self.signed_in(**kwargs)
        return Attempt(started.client, b64(x.resign_assertion(self.idp, xml, change)))

    def from_other_idp(self, **idp_options: Any) -> Attempt:
        other = _other_idp(self.keys, self.sp_metadata, **idp_options)
        started, _xml = self.signed_in()
        return Attempt(started.client, b64(authn_response(other, started.args, subject=VICTIM)))


_OTHER_IDPS: dict[tuple[tuple[str, str], ...], Any] = {}


def _other_idp(keys: Keys, sp_metadata: str, **options: Any) -> Any:
    key = tuple(sorted(options.items()))
    if key not in _OTHER_IDPS:
        _OTHER_IDPS[key] = make_idp(keys, sp_metadata, **options)
    return _OTHER_IDPS[key]


# -- document surgery ---------------------------------------------------------------

A = "/samlp:Response/saml:Assertion"


def _victim_nameid(root: Any) -> None:
    x.one(root, f"{A}/saml:Subject/saml:NameID").text = VICTIM


def _edit_attribute(root: Any) -> None:
    path = f"{A}/saml:AttributeStatement/saml:Attribute[@FriendlyName='mail']/saml:AttributeValue"
    values = root.xpath(path, namespaces=x.NS)
    values[0].text = "mallory@evil.example"


def _xsw_evil_before(root: Any) -> None:  # XSW3: unsigned evil assertion first
    signed = x.one(root, A)
    signed.addprevious(x.evil_copy(signed, VICTIM, new_id="evil-1"))


def _xsw_evil_after(root: Any) -> None:
    signed = x.one(root, A)
    signed.addnext(x.evil_copy(signed, VICTIM, new_id="evil-1"))


def _xsw_wrap_original(root: Any) -> None:  # XSW4: evil assertion wraps the signed one
    signed = x.one(root, A)
    evil = x.evil_copy(signed, VICTIM, new_id="evil-1")
    signed.addprevious(evil)
    evil.append(signed)


def _xsw_original_in_extensions(root: Any) -> None:  # XSW7
    signed = x.one(root, A)
    evil = x.evil_copy(signed, VICTIM, new_id="evil-1")
    signed.addprevious(evil)
    extensions = root.makeelement(f"{{{x.NS['samlp']}}}Extensions")
    root.insert(1, extensions)
    extensions.append(signed)


def _xsw_original_in_signature_object(root: Any) -> None:  # XSW8
    signed = x.one(root, A)
    evil = x.evil_copy(signed, VICTIM, keep_signature=True)
    signature = x.one(evil, "ds:Signature")
    obj = signature.makeelement(f"{{{x.NS['ds']}}}Object")
    signature.append(obj)
    signed.addprevious(evil)
    obj.append(signed)
    x.one(signed, "ds:Signature").getparent().remove(x.one(signed, "ds:Signature"))


def _xsw_same_id_signature_moved(root: Any) -> None:  # evil takes the ID and the signature
    signed = x.one(root, A)
    evil = x.evil_copy(signed, VICTIM, keep_signature=True)
    signed.addprevious(evil)
    root.remove(signed)


def _xsw_response_wrapper(root: Any) -> None:  # XSW1: evil response, signed one tucked away
    signed_response = root
    evil = x.parse(x.dump(root))
    evil.set("ID", "evil-response")
    for signature in evil.xpath("ds:Signature", namespaces=x.NS):
        evil.remove(signature)
    x.one(evil, f"{A}/saml:Subject/saml:NameID").text = VICTIM
    extensions = evil.makeelement(f"{{{x.NS['samlp']}}}Extensions")
    evil.insert(1, extensions)
    extensions.append(x.parse(x.dump(signed_response)))
    # swap the whole tree in place
    for child in list(root):
        root.remove(child)
    for child in list(evil):
        root.append(child)
    for name, value in evil.attrib.items():
        root.set(name, value)


def _two_assertions(root: Any) -> None:
    signed = x.one(root, A)
    signed.addnext(x.evil_copy(signed, "alice-0001", keep_signature=True))


def _no_audience(root: Any) -> None:
    restriction = x.one(root, f"{A}/saml:Conditions/saml:AudienceRestriction")
    restriction.getparent().remove(restriction)


def _other_audience(root: Any) -> None:
    x.one(root, f"{A}/saml:Conditions/saml:AudienceRestriction/saml:Audience").text = \
        "https://other-sp.example/metadata"


def _recipient(value: str) -> Callable[[Any], None]:
    return x.set_attr(f"{A}/saml:Subject/saml:SubjectConfirmation/saml:SubjectConfirmationData",
                      "Recipient", value)


def _destination(value: str | None) -> Callable[[Any], None]:
    return x.set_attr("/samlp:Response", "Destination", value)


def _doctype(prolog: str) -> Callable[[Ctx], Attempt]:
    def build(ctx: Ctx) -> Attempt:
        body = ctx.sample.split("?>", 1)[-1] if ctx.sample.startswith("<?xml") else ctx.sample
        return Attempt(Client(), b64(prolog + body))
    return build


DOCTYPE_ONLY = '<!DOCTYPE Response [ <!ELEMENT Response ANY> ]>'
XXE = '<?xml version="1.0"?><!DOCTYPE r [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>'
LAUGHS = ('<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
          '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>')
PARAMETER_ENTITY = '<!DOCTYPE r [ <!ENTITY % remote SYSTEM "http://127.0.0.1:9/x.dtd"> %remote; ]>'


def _utf16_doctype(ctx: Ctx) -> Attempt:
    body = ctx.sample.split("?>", 1)[-1] if ctx.sample.startswith("<?xml") else ctx.sample
    xml = ('<?xml version="1.0" encoding="UTF-16"?>' + XXE.split("?>", 1)[1] + body).encode("utf-16")
    return Attempt(Client(), base64.b64encode(xml).decode())


def _unsolicited(ctx: Ctx) -> Attempt:
    started, _xml = ctx.signed_in()
    args = {**started.args, "in_response_to": None}
    return Attempt(started.client, b64(authn_response(ctx.idp, args)))


def _in_response_to_mismatch(ctx: Ctx) -> Attempt:
    started, _xml = ctx.signed_in()
    args = {**started.args, "in_response_to": "ONELOGIN_" + "0" * 40}
    return Attempt(started.client, b64(authn_response(ctx.idp, args)))


def _other_browser(ctx: Ctx) -> Attempt:
    _started, xml = ctx.signed_in()
    return Attempt(Client(), b64(xml))  # a response captured from, or pushed into, another browser


def _other_browser_same_session_cookie_missing(ctx: Ctx) -> Attempt:
    started, xml = ctx.signed_in()
    started.client.cookies.pop("apiauth_saml")
    return Attempt(started.client, b64(xml))


def _shifted(delta: timedelta) -> Callable[[Ctx], Attempt]:
    def build(ctx: Ctx) -> Attempt:
        attempt = ctx.signed()
        attempt.shift = delta
        return attempt
    return build


CASES: list[tuple[str, Callable[[Ctx], Attempt], int, set[str]]] = [
    ("unsigned response", lambda c: c.signed(sign_assertion=False), 403, {"bad_signature"}),
    ("signature stripped", lambda c: c.edited(x.strip_signatures), 403, {"bad_signature"}),
    ("signed response, unsigned assertion",
     lambda c: c.signed(sign_assertion=False, sign_response=True), 403, {"bad_signature"}),
    ("NameID edited after signing", lambda c: c.edited(_victim_nameid), 403, {"bad_signature"}),
    ("attribute edited after signing", lambda c: c.edited(_edit_attribute), 403, {"bad_signature"}),
    ("XSW: evil assertion before the signed one", lambda c: c.edited(_xsw_evil_before), 403,
     {"wrong_assertion_count"}),
    ("XSW: evil assertion after the signed one", lambda c: c.edited(_xsw_evil_after), 403,
     {"wrong_assertion_count"}),
    ("XSW: evil assertion wrapping the signed one", lambda c: c.edited(_xsw_wrap_original), 403,
     {"wrong_assertion_count"}),
    ("XSW: signed assertion hidden in Extensions", lambda c: c.edited(_xsw_original_in_extensions), 403,
     {"wrong_assertion_count"}),
    ("XSW: signed assertion hidden in ds:Object", lambda c: c.edited(_xsw_original_in_signature_object),
     403, {"wrong_assertion_count"}),
    ("XSW: evil assertion with the signed ID and signature", lambda c: c.edited(_xsw_same_id_signature_moved),
     403, {"bad_signature"}),
    ("XSW: evil response wrapping the signed response",
     lambda c: c.edited(_xsw_response_wrapper, sign_response=True), 403,
     {"wrong_assertion_count", "bad_signature"}),
    ("two assertions", lambda c: c.edited(_two_assertions), 403, {"wrong_assertion_count"}),
    ("attacker certificate in KeyInfo", lambda c: c.from_other_idp(key="attacker"), 403, {"bad_signature"}),
    ("SHA-1 signature", lambda c: c.from_other_idp(signing_algorithm=RSA_SHA1, digest_algorithm=SHA1), 403,
     {"disallowed_algorithm"}),
    ("wrong Issuer (same key, other entity)",
     lambda c: c.from_other_idp(entity_id="https://evil.example/idp/metadata"), 403, {"untrusted_issuer"}),
    ("expired conditions", _shifted(timedelta(minutes=20)), 403, {"expired"}),
    ("not yet valid conditions", _shifted(timedelta(minutes=-10)), 403, {"not_yet_valid"}),
    ("wrong Audience", lambda c: c.resigned(_other_audience), 403, {"bad_audience"}),
    ("no Audience", lambda c: c.resigned(_no_audience), 403, {"bad_audience"}),
    ("wrong Recipient", lambda c: c.resigned(_recipient(OTHER_ACS)), 403, {"bad_subject_confirmation"}),
    ("Recipient extending the ACS URL", lambda c: c.resigned(_recipient(ACS_URL + "evil/")), 403,
     {"bad_recipient"}),
    ("Recipient on another scheme", lambda c: c.resigned(_recipient(ACS_URL.replace("http:", "https:"))), 403,
     {"bad_subject_confirmation", "bad_recipient"}),
    ("wrong Destination", lambda c: c.edited(_destination(OTHER_ACS)), 403, {"bad_destination"}),
    ("Destination extending the ACS URL", lambda c: c.edited(_destination(ACS_URL + "evil/")), 403,
     {"bad_destination"}),
    ("no Destination", lambda c: c.edited(_destination(None)), 403, {"bad_destination"}),
    ("InResponseTo of no request", _in_response_to_mismatch, 403, {"request_mismatch"}),
    ("response to another browser's request", _other_browser, 403, {"request_mismatch"}),
    ("browser binding cookie missing", _other_browser_same_session_cookie_missing, 403, {"request_mismatch"}),
    ("unsolicited response (IdP-initiated not allowed)", _unsolicited, 403, {"unsolicited_response"}),
    ("DOCTYPE", _doctype(DOCTYPE_ONLY), 400, {"forbidden_dtd"}),
    ("XXE external entity", _doctype(XXE), 400, {"forbidden_dtd"}),
    ("entity expansion (billion laughs)", _doctype(LAUGHS), 400, {"forbidden_dtd"}),
    ("parameter entity", _doctype(PARAMETER_ENTITY), 400, {"forbidden_dtd"}),
    ("XXE in UTF-16", _utf16_doctype, 400, {"forbidden_dtd", "malformed"}),
    ("not base64", lambda c: Attempt(Client(), "not*base64!"), 400, {"malformed"}),
    ("base64 of something else", lambda c: Attempt(Client(), b64(b"\x00\x01binary")), 400, {"malformed"}),
    ("not XML", lambda c: Attempt(Client(), b64("<unclosed")), 400, {"malformed"}),
    ("no SAMLResponse", lambda c: Attempt(Client(), None), 400, {"missing"}),
    ("oversized response", lambda c: Attempt(Client(), "A" * (128 * 1024 + 4)), 400, {"too_large"}),
    ("ACS by GET", lambda c: Attempt(Client(), b64(c.sample), method="get"), 405, {"bad_method"}),
]


@pytest.fixture(scope="session")
def sample(idp: Any) -> str:
    """A signed response for no pending request: enough for input refused before any check."""
    args = {"in_response_to": "ONELOGIN_sample", "destination": ACS_URL, "sp_entity_id": SP_ENTITY_ID,
            "name_id_policy": None}
    return authn_response(idp, args)


@pytest.fixture
def ctx(idp: Any, saml_keys: Keys, sp_metadata: str, signed_in: Any, sample: str) -> Ctx:
    return Ctx(idp, saml_keys, sp_metadata, signed_in, sample)


@pytest.fixture
def victim(make_user: Any, provider: Any) -> Any:
    user = make_user("victim", is_staff=True)
    ExternalIdentity.objects.create(issuer=IDP_ENTITY_ID, subject=VICTIM, user=user)
    return user


def _send(attempt: Attempt) -> Any:
    data: dict[str, str] = {}
    if attempt.saml_response is not None:
        data["SAMLResponse"] = attempt.saml_response
    if attempt.relay_state is not None:
        data["RelayState"] = attempt.relay_state
    if attempt.method == "get":
        return attempt.client.get(ACS_PATH, data)
    if attempt.shift is not None:
        with freeze_time(timezone.now() + attempt.shift):
            return attempt.client.post(ACS_PATH, data, **attempt.extra)
    return attempt.client.post(ACS_PATH, data, **attempt.extra)


@pytest.mark.parametrize(("build", "status", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_refused_audited_and_signs_nobody_in(
    ctx: Ctx, victim: Any, build: Callable[[Ctx], Attempt], status: int, expected: set[str]
) -> None:
    attempt = build(ctx)
    identities_before = set(ExternalIdentity.objects.values_list("pk", flat=True))
    response = _send(attempt)
    assert response.status_code == status, response.content[:300]
    assert SESSION_KEY not in attempt.client.session
    assert set(ExternalIdentity.objects.values_list("pk", flat=True)) == identities_before
    row = AuditEvent.objects.filter(event="sso_login").latest("id")
    assert (row.scheme, row.outcome) == ("saml", "failure")
    assert row.reason in expected, (row.reason, row.detail)
    assert not AuditEvent.objects.filter(event="sso_login", outcome="success").exists()
    body = response.content.decode()
    assert "SAMLResponse" not in body and (attempt.saml_response or "x" * 20)[:20] not in body
    if status == 405:
        assert response["Allow"] == "POST"
