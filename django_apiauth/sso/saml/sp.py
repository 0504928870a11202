"""SAML 2.0 Service Provider core: settings, keys and the strict response check.

python3-saml does the XML work (schema, XML-DSig with xmlsec, the
signature-wrapping guards of ``process_signed_elements``). It leaves several
decisions to its caller, which this module takes, always the strict way:

* ``wantAssertionsSigned`` is forced on (SAML 2.0 Profiles §4.1.3.5: the
  assertion carries the identity, so its own signature is required), and
  ``rejectDeprecatedAlgorithm`` refuses RSA-SHA1 / SHA-1 digests.
* ``Destination`` (Bindings §3.5.5.2) and the bearer ``Recipient``
  (Profiles §4.1.4.2) must *equal* the ACS URL rebuilt from the request;
  python3-saml only checks a prefix and a substring.
* An ``Audience`` naming this SP is required, not only checked when present.
* ``InResponseTo`` must name an AuthnRequest this browser started
  (:class:`~django_apiauth.sso.saml.models.SamlAuthnRequest`); python3-saml
  skips that check when the response carries no ``InResponseTo``.
* Each assertion ID is accepted once (Profiles §4.1.4.5), in the replay store
  (:func:`django_apiauth.core.replay.first_use`) until it can no longer be
  valid.
* The clock skew is ``APIAUTH_SAML_CLOCK_SKEW`` instead of the library's
  fixed 300 s, and ``IssueInstant`` may be at most
  ``APIAUTH_SAML_MAX_ASSERTION_AGE`` old.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.db import transaction
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone

from ...app_settings import app_settings
from ...core import encryption, reasons
from ...core.authentication import DependencyUnavailable
from ...core.replay import first_use, seen
from ..identity import SsoRefused
from .models import MAX_PENDING_PER_BROWSER, SamlAuthnRequest, SamlIdentityProvider, SamlServiceProviderKey

RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
BINDING_REDIRECT = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect"
BINDING_POST = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST"
CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
BINDING_COOKIE = "apiauth_saml"
_COOKIE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")
_DTD_RE = re.compile(rb"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.I)
_WHITESPACE = re.compile(rb"[ \t\r\n]+")


# -- the SP key -----------------------------------------------------------------


def current_sp_keys() -> list[SamlServiceProviderKey]:
    """Active SP keys, newest first (the first one signs)."""
    return list(SamlServiceProviderKey.objects.filter(active=True).order_by("-created_at", "-id")[:2])


def create_sp_key(*, name: str, days: int = 3650, common_name: str | None = None,
                  private_key: Any = None) -> SamlServiceProviderKey:
    """Generate (or take) an RSA key, self-sign a certificate, store the key encrypted.

    RSA because it is what every IdP understands for XML-DSig and XML-Enc
    (RSA-SHA256, RSA-OAEP); 3072 bits (NIST SP 800-57 beyond 2030).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = private_key or rsa.generate_private_key(public_exponent=65537, key_size=3072)
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (common_name or name)[:64])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    der = cert.public_bytes(serialization.Encoding.DER)
    sp_key = SamlServiceProviderKey(
        name=name,
        certificate_pem=cert.public_bytes(serialization.Encoding.PEM).decode(),
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    sp_key.private_key_encrypted = encryption.encrypt(
        key_pem, sp_key.encryption_context("private_key_encrypted"))
    sp_key.save()
    return sp_key


# -- URLs and python3-saml settings ------------------------------------------------


def normalise_url(url: str) -> str:
    """``scheme://host[:port]/path`` with scheme and host lower-cased and the
    default port dropped, for exact comparison. The query is kept (it must match too)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = -1
    netloc = host if port in (None, {"https": 443, "http": 80}.get(scheme)) else f"{host}:{port}"
    query = f"?{parts.query}" if parts.query else ""
    return f"{scheme}://{netloc}{parts.path}{query}"


@dataclass(frozen=True, slots=True)
class SpUrls:
    entity_id: str
    metadata: str
    acs: str
    sls: str


def sp_urls(request: HttpRequest, provider: SamlIdentityProvider) -> SpUrls:
    """This SP's URLs for ``provider``, built from the request the way Django
    sees it (``SECURE_PROXY_SSL_HEADER``, ``USE_X_FORWARDED_HOST``, ``ALLOWED_HOSTS``)."""
    def url(name: str) -> str:
        return request.build_absolute_uri(reverse(f"django_apiauth:saml:{name}", args=[provider.slug]))

    metadata = url("metadata")
    return SpUrls(entity_id=provider.sp_entity_id or metadata, metadata=metadata, acs=url("acs"),
                  sls=url("sls"))


def request_data(request: HttpRequest) -> dict[str, Any]:
    """The request as python3-saml wants it: the current URL from Django's view of it."""
    current = urlsplit(request.build_absolute_uri(request.path))
    return {
        "https": "on" if current.scheme == "https" else "off",
        "http_host": current.netloc,
        "script_name": "",
        "path_info": current.path,
        "get_data": request.GET.dict(),
        "post_data": {},
        "query_string": request.META.get("QUERY_STRING", ""),
        # Redirect-binding signatures are checked over the query string as sent
        # (Bindings §3.4.4.1), not over a re-encoding of the parsed values.
        "validate_signature_from_qs": True,
    }


def onelogin_settings(request: HttpRequest, provider: SamlIdentityProvider, *,
                      messages_signed: bool | None = None, with_key: bool = True) -> Any:
    """python3-saml settings for ``provider``, strict. Raises :class:`SsoRefused` (503)
    when the SP key is missing or cannot be decrypted."""
    from onelogin.saml2.settings import OneLogin_Saml2_Settings

    keys = current_sp_keys()
    if not keys:
        raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                         detail={"problem": "no SP key: run manage.py create_saml_sp_key"})
    private_key = ""
    if with_key:
        try:
            private_key = keys[0].private_key_pem()
        except encryption.DecryptionError:
            raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                             detail={"problem": "SP key cannot be decrypted"}) from None
    urls = sp_urls(request, provider)
    sp: dict[str, Any] = {
        "entityId": urls.entity_id,
        "assertionConsumerService": {"url": urls.acs, "binding": BINDING_POST},
        "singleLogoutService": {"url": urls.sls, "binding": BINDING_REDIRECT},
        "NameIDFormat": provider.nameid_format,
        "x509cert": keys[0].certificate_pem,
        "privateKey": private_key,
    }
    if len(keys) > 1:
        sp["x509certNew"] = keys[1].certificate_pem  # still published during a rollover
    idp: dict[str, Any] = {
        "entityId": provider.entity_id,
        "singleSignOnService": {"url": provider.sso_url, "binding": BINDING_REDIRECT},
        "x509certMulti": {"signing": provider.certificate_list()},
    }
    if provider.slo_url:
        idp["singleLogoutService"] = {"url": provider.slo_url, "binding": BINDING_REDIRECT}
    security = {
        "authnRequestsSigned": True,
        "logoutRequestSigned": True,
        "logoutResponseSigned": True,
        "signMetadata": with_key,
        "wantMessagesSigned": provider.want_response_signed if messages_signed is None else messages_signed,
        "wantAssertionsSigned": True,
        "wantAssertionsEncrypted": provider.want_assertions_encrypted,
        "wantNameId": True,
        "wantNameIdEncrypted": False,
        "wantAttributeStatement": False,
        "requestedAuthnContext": False,
        "failOnAuthnContextMismatch": False,
        "allowRepeatAttributeName": False,
        "rejectDeprecatedAlgorithm": True,
        # Our own URLs come from the request, whose host ALLOWED_HOSTS vetted already.
        "allowSingleLabelDomains": True,
        "signatureAlgorithm": RSA_SHA256,
        "digestAlgorithm": SHA256,
        "metadataCacheDuration": 86400,
        "metadataValidUntil": datetime.now(UTC) + timedelta(days=7),
    }
    return OneLogin_Saml2_Settings(
        {"strict": True, "debug": False, "sp": sp, "idp": idp, "security": security},
        sp_validation_only=False,
    )


def metadata_xml(request: HttpRequest, provider: SamlIdentityProvider) -> bytes:
    """This SP's metadata for ``provider`` (signed with the SP key)."""
    settings = onelogin_settings(request, provider)
    xml = settings.get_sp_metadata()
    errors = settings.validate_metadata(xml)
    if errors:  # pragma: no cover - python3-saml built it; a failure here is a bug
        raise SsoRefused(reasons.INTERNAL_ERROR, status=500, detail={"problem": "metadata"})
    return xml if isinstance(xml, bytes) else xml.encode()


# -- login: the AuthnRequest ---------------------------------------------------------


def new_browser_binding() -> str:
    return secrets.token_urlsafe(32)


def usable_binding(value: str | None) -> str | None:
    return value if value and _COOKIE_RE.match(value) else None


def start_login(request: HttpRequest, provider: SamlIdentityProvider, *, binding: str,
                next_url: str) -> str:
    """Store a new AuthnRequest for this browser and return the IdP redirect URL
    (HTTP-Redirect binding, signed: Bindings §3.4.4.1)."""
    from onelogin.saml2.auth import OneLogin_Saml2_Auth
    from onelogin.saml2.authn_request import OneLogin_Saml2_Authn_Request
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    settings = onelogin_settings(request, provider)
    data = request_data(request)
    authn_request = OneLogin_Saml2_Authn_Request(settings, force_authn=False, is_passive=False,
                                                 set_nameid_policy=True)
    now = timezone.now()
    with transaction.atomic():
        SamlAuthnRequest.objects.filter(expires_at__lt=now).delete()
        browser_hash = SamlAuthnRequest.hash_binding(binding)
        SamlAuthnRequest.objects.create(
            request_id=authn_request.get_id(), provider=provider,
            browser_hash=browser_hash, next_url=next_url[:2048],
            created_at=now, expires_at=now + timedelta(seconds=app_settings.SAML_REQUEST_TTL),
        )
        older = list(SamlAuthnRequest.objects.filter(browser_hash=browser_hash)
                     .order_by("-created_at", "-id").values_list("pk", flat=True)[MAX_PENDING_PER_BROWSER:])
        if older:
            SamlAuthnRequest.objects.filter(pk__in=older).delete()
    auth = OneLogin_Saml2_Auth(data, old_settings=settings)
    parameters: dict[str, Any] = {"SAMLRequest": authn_request.get_request()}
    auth.add_request_signature(parameters, RSA_SHA256)
    return str(OneLogin_Saml2_Utils.redirect(provider.sso_url, parameters, request_data=data))


# -- ACS: the response ----------------------------------------------------------------


@dataclass
class VerifiedAssertion:
    subject: str
    name_id_format: str | None
    name_qualifier: str | None
    sp_name_qualifier: str | None
    session_index: str | None
    attributes: dict[str, list[str]]
    next_url: str | None
    in_response_to: str | None
    detail: dict[str, Any] = field(default_factory=dict)


def decode_response(raw: str | None) -> bytes:
    """The XML bytes of a ``SAMLResponse`` form value, refused (400) when it is
    missing, too large, not base64, or carries a DTD. Runs before any XML parser."""
    if not raw:
        raise SsoRefused(reasons.MISSING, status=400, detail={"problem": "no SAMLResponse"})
    if len(raw) > app_settings.SAML_MAX_RESPONSE_BYTES:
        raise SsoRefused(reasons.TOO_LARGE, status=400, detail={"bytes": len(raw)})
    try:
        compact = _WHITESPACE.sub(b"", raw.encode("ascii"))
        xml = base64.b64decode(compact, validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": "not base64"}) from None
    if not xml.lstrip().startswith((b"<", b"\xef\xbb\xbf<")):
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": "not XML"})
    if _DTD_RE.search(xml):
        raise SsoRefused(reasons.FORBIDDEN_DTD, status=400)
    return xml


def _strict_response_class() -> type:
    from onelogin.saml2.response import OneLogin_Saml2_Response
    from onelogin.saml2.utils import (
        OneLogin_Saml2_Utils,
        OneLogin_Saml2_ValidationError,
        return_false_on_exception,
    )

    class StrictResponse(OneLogin_Saml2_Response):  # type: ignore[misc]
        """python3-saml's response with our clock skew instead of its fixed 300 s."""

        @return_false_on_exception  # type: ignore[misc]
        def validate_timestamps(self) -> bool:
            skew = app_settings.SAML_CLOCK_SKEW
            now = OneLogin_Saml2_Utils.now()
            for node in self._query_assertion("/saml:Conditions"):
                not_before = node.get("NotBefore")
                not_after = node.get("NotOnOrAfter")
                if not_before and OneLogin_Saml2_Utils.parse_SAML_to_time(not_before) > now + skew:
                    raise OneLogin_Saml2_ValidationError(
                        "not yet valid", OneLogin_Saml2_ValidationError.ASSERTION_TOO_EARLY)
                if not_after and OneLogin_Saml2_Utils.parse_SAML_to_time(not_after) + skew <= now:
                    raise OneLogin_Saml2_ValidationError(
                        "expired", OneLogin_Saml2_ValidationError.ASSERTION_EXPIRED)
            return True

    return StrictResponse


_STRICT_RESPONSE: type | None = None


def _reason_for(code: int) -> tuple[str, int]:
    from onelogin.saml2.errors import OneLogin_Saml2_ValidationError as E

    table = {
        E.UNSUPPORTED_SAML_VERSION: (reasons.MALFORMED, 400),
        E.MISSING_ID: (reasons.MALFORMED, 400),
        E.INVALID_XML_FORMAT: (reasons.MALFORMED, 400),
        E.STATUS_CODE_IS_NOT_SUCCESS: (reasons.IDP_ERROR, 403),
        E.WRONG_NUMBER_OF_ASSERTIONS: (reasons.WRONG_ASSERTION_COUNT, 403),
        E.DEPRECATED_SIGNATURE_METHOD: (reasons.DISALLOWED_ALGORITHM, 403),
        E.DEPRECATED_DIGEST_METHOD: (reasons.DISALLOWED_ALGORITHM, 403),
        E.WRONG_AUDIENCE: (reasons.BAD_AUDIENCE, 403),
        E.WRONG_ISSUER: (reasons.UNTRUSTED_ISSUER, 403),
        E.ISSUER_MULTIPLE_IN_RESPONSE: (reasons.UNTRUSTED_ISSUER, 403),
        E.ISSUER_NOT_FOUND_IN_ASSERTION: (reasons.UNTRUSTED_ISSUER, 403),
        E.WRONG_DESTINATION: (reasons.BAD_DESTINATION, 403),
        E.EMPTY_DESTINATION: (reasons.BAD_DESTINATION, 403),
        E.WRONG_INRESPONSETO: (reasons.REQUEST_MISMATCH, 403),
        E.ASSERTION_EXPIRED: (reasons.EXPIRED, 403),
        E.SESSION_EXPIRED: (reasons.EXPIRED, 403),
        E.ASSERTION_TOO_EARLY: (reasons.NOT_YET_VALID, 403),
        E.WRONG_SUBJECTCONFIRMATION: (reasons.BAD_SUBJECT_CONFIRMATION, 403),
        E.NO_NAMEID: (reasons.MISSING_SUBJECT, 403),
        E.EMPTY_NAMEID: (reasons.MISSING_SUBJECT, 403),
        E.NO_ENCRYPTED_ASSERTION: (reasons.INVALID_RESPONSE, 403),
    }
    signature_codes = {
        E.INVALID_SIGNATURE, E.NO_SIGNED_ASSERTION, E.NO_SIGNED_MESSAGE, E.NO_SIGNATURE_FOUND,
        E.WRONG_SIGNED_ELEMENT, E.ID_NOT_FOUND_IN_SIGNED_ELEMENT, E.DUPLICATED_ID_IN_SIGNED_ELEMENTS,
        E.INVALID_SIGNED_ELEMENT, E.DUPLICATED_REFERENCE_IN_SIGNED_ELEMENTS,
        E.UNEXPECTED_SIGNED_ELEMENTS, E.WRONG_NUMBER_OF_SIGNATURES_IN_RESPONSE,
        E.WRONG_NUMBER_OF_SIGNATURES_IN_ASSERTION, E.WRONG_NUMBER_OF_SIGNATURES,
    }
    if code in signature_codes:
        return reasons.BAD_SIGNATURE, 403
    return table.get(code, (reasons.INVALID_RESPONSE, 403))


def _parse_time(value: str | None) -> datetime | None:
    from onelogin.saml2.utils import OneLogin_Saml2_Utils

    if not value:
        return None
    try:
        return datetime.fromtimestamp(OneLogin_Saml2_Utils.parse_SAML_to_time(value), UTC)
    except Exception:  # a malformed xs:dateTime: the caller refuses
        return None


def verify_response(request: HttpRequest, provider: SamlIdentityProvider, xml: bytes, *,
                    binding: str | None, relay_state: str | None) -> VerifiedAssertion:
    """Everything between the decoded XML and ``resolve_user``. Raises :class:`SsoRefused`."""
    global _STRICT_RESPONSE
    from onelogin.saml2.errors import OneLogin_Saml2_Error, OneLogin_Saml2_ValidationError

    if _STRICT_RESPONSE is None:
        _STRICT_RESPONSE = _strict_response_class()
    settings = onelogin_settings(request, provider)
    urls = sp_urls(request, provider)
    try:
        response = _STRICT_RESPONSE(settings, base64.b64encode(xml).decode())
    except Exception as exc:  # XMLSyntaxError, DTDForbidden, decryption errors, …
        name = type(exc).__name__
        if name in {"DTDForbidden", "EntitiesForbidden"}:
            raise SsoRefused(reasons.FORBIDDEN_DTD, status=400) from None
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": name}) from None
    try:
        response.is_valid(request_data(request), request_id=None, raise_exceptions=True)
        subject = response.get_nameid()
        nameid_data = response.get_nameid_data()
        attributes = _attributes(response)
        session_index = response.get_session_index()
    except OneLogin_Saml2_ValidationError as exc:
        reason, status = _reason_for(exc.code)
        raise SsoRefused(reason, status=status, detail={"check": _short(str(exc))}) from None
    except OneLogin_Saml2_Error as exc:
        raise SsoRefused(reasons.INVALID_RESPONSE, detail={"check": _short(str(exc))}) from None
    except Exception as exc:  # xmlsec / lxml internals: refuse, never 500
        raise SsoRefused(reasons.INVALID_RESPONSE, detail={"problem": type(exc).__name__}) from None

    document = response.document
    # Destination (Bindings §3.5.5.2): required and equal, not a prefix.
    destination = document.get("Destination")
    if not destination or normalise_url(destination) != normalise_url(urls.acs):
        raise SsoRefused(reasons.BAD_DESTINATION, detail={"destination": _short(destination or "")})

    # Everything below reads the *signed* assertion (python3-saml's reference-bound query).
    assertion = response._query_assertion("")[0]
    confirmations = response._query_assertion(
        f"/saml:Subject/saml:SubjectConfirmation[@Method='{CM_BEARER}']/saml:SubjectConfirmationData")
    if not confirmations:
        raise SsoRefused(reasons.BAD_SUBJECT_CONFIRMATION, detail={"problem": "no bearer confirmation"})
    for data in confirmations:  # Profiles §4.1.4.2: Recipient is the ACS, exactly
        recipient = data.get("Recipient")
        if not recipient or normalise_url(recipient) != normalise_url(urls.acs):
            raise SsoRefused(reasons.BAD_RECIPIENT, detail={"recipient": _short(recipient or "")})
        if not data.get("NotOnOrAfter"):
            raise SsoRefused(reasons.BAD_SUBJECT_CONFIRMATION, detail={"problem": "no NotOnOrAfter"})

    audiences = response.get_audiences()
    if urls.entity_id not in audiences:
        raise SsoRefused(reasons.BAD_AUDIENCE, detail={"audiences": [_short(a) for a in audiences[:5]]})

    skew = app_settings.SAML_CLOCK_SKEW
    now = timezone.now()
    issued = _parse_time(assertion.get("IssueInstant"))
    if issued is None:
        raise SsoRefused(reasons.MALFORMED, status=400, detail={"problem": "IssueInstant"})
    if issued > now + timedelta(seconds=skew):
        raise SsoRefused(reasons.NOT_YET_VALID, detail={"problem": "IssueInstant in the future"})
    max_age = app_settings.SAML_MAX_ASSERTION_AGE
    if issued + timedelta(seconds=max_age + skew) <= now:
        raise SsoRefused(reasons.EXPIRED, detail={"problem": "IssueInstant too old"})

    # InResponseTo: the response's (unsigned unless the response is signed) and
    # every bearer confirmation's (signed) must agree.
    in_response_to_values = {v for v in [document.get("InResponseTo"),
                                         *(d.get("InResponseTo") for d in confirmations)] if v}
    if len(in_response_to_values) > 1:
        raise SsoRefused(reasons.REQUEST_MISMATCH, detail={"problem": "InResponseTo differ"})
    in_response_to = next(iter(in_response_to_values), None)
    if in_response_to is None and not provider.allow_idp_initiated:
        raise SsoRefused(reasons.UNSOLICITED_RESPONSE)

    assertion_id = assertion.get("ID") or ""
    pending = None
    if in_response_to is not None:
        pending = _pending_request(provider, in_response_to, binding, assertion_id)

    # Replay store (Profiles §4.1.4.5): the assertion ID, once, until it cannot
    # be valid any more.
    bounds = [t for t in (_parse_time(d.get("NotOnOrAfter")) for d in confirmations) if t]
    conditions_end = _parse_time(response._query_assertion("/saml:Conditions")[0].get("NotOnOrAfter"))
    if conditions_end:
        bounds.append(conditions_end + timedelta(seconds=skew))
    end = min(max(bounds), issued + timedelta(seconds=max_age + skew))
    ttl = int((end - now).total_seconds()) + skew + 1
    try:
        fresh = first_use(_replay_namespace(provider), assertion_id, max(ttl, 1))
    except DependencyUnavailable:
        raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                         detail={"problem": "replay store"}) from None
    if not fresh:
        raise SsoRefused(reasons.REPLAYED, detail={"assertion_id": _short(assertion_id)})

    next_url: str | None = None
    if pending is not None:
        _consume(pending)
        next_url = pending.next_url
    elif relay_state and relay_state.startswith("/"):
        next_url = relay_state  # IdP-initiated: checked by safe_next like any next

    return VerifiedAssertion(
        subject=subject or "",
        name_id_format=nameid_data.get("Format"),
        name_qualifier=nameid_data.get("NameQualifier"),
        sp_name_qualifier=nameid_data.get("SPNameQualifier"),
        session_index=session_index,
        attributes=attributes,
        next_url=next_url,
        in_response_to=in_response_to,
        detail={"assertion_id": _short(assertion_id)},
    )


def _replay_namespace(provider: SamlIdentityProvider) -> str:
    return f"saml-assertion:{provider.entity_id}"


def _already_used(provider: SamlIdentityProvider, assertion_id: str) -> bool:
    """Whether the replay store holds ``assertion_id`` (read only; for the audit
    reason of a response whose request was already consumed)."""
    try:
        return seen(_replay_namespace(provider), assertion_id)
    except DependencyUnavailable:  # the store is down: the caller refuses anyway
        return False


def _pending_request(provider: SamlIdentityProvider, request_id: str, binding: str | None,
                     assertion_id: str) -> SamlAuthnRequest:
    """The pending AuthnRequest ``request_id`` started by *this browser* (read only).

    Looked up together with this browser's binding, so a response posted from
    another browser neither matches nor disturbs the request of the browser
    that started it (nor burns its assertion in the replay store).
    """
    from django.db import DatabaseError

    row = None
    if binding:
        try:
            row = SamlAuthnRequest.objects.filter(
                request_id=request_id[:100], browser_hash=SamlAuthnRequest.hash_binding(binding)).first()
        except DatabaseError:
            raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                             detail={"problem": "request store"}) from None
    if row is None:
        if _already_used(provider, assertion_id):
            raise SsoRefused(reasons.REPLAYED, detail={"assertion_id": _short(assertion_id)})
        raise SsoRefused(reasons.REQUEST_MISMATCH, detail={"problem": "no pending request of this browser"})
    if row.provider_id != provider.pk:
        raise SsoRefused(reasons.REQUEST_MISMATCH, detail={"problem": "another provider"})
    if row.is_expired():
        raise SsoRefused(reasons.EXPIRED, detail={"problem": "request expired"})
    return row


def _consume(row: SamlAuthnRequest) -> None:
    """Single use: whoever deletes the row wins."""
    from django.db import DatabaseError

    try:
        deleted = SamlAuthnRequest.objects.filter(pk=row.pk).delete()[0]
    except DatabaseError:
        raise SsoRefused(reasons.SERVICE_UNAVAILABLE, status=503,
                         detail={"problem": "request store"}) from None
    if deleted != 1:
        raise SsoRefused(reasons.REPLAYED, detail={"problem": "request used concurrently"})


def _attributes(response: Any) -> dict[str, list[str]]:
    """Attributes by Name, plus by FriendlyName where that name is free; strings only."""
    merged: dict[str, list[str]] = {}
    for source in (response.get_attributes(), response.get_friendlyname_attributes()):
        for name, values in source.items():
            if name in merged:
                continue
            merged[name] = [v for v in values if isinstance(v, str)][:100]
    return merged


def _short(value: str, limit: int = 200) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"
