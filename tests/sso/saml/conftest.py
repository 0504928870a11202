"""A real pysaml2 identity provider (Debian xmlsec1 signs) facing our python3-saml SP.

Keys are generated once per session with ``cryptography``; the SP metadata the
IdP trusts is our own ``/auth/saml/<slug>/metadata/`` document, rendered once
per session and fed to pysaml2 inline. Each test gets the same SP key and IdP
rows back (the database is rolled back between tests), so signed responses
made in one test verify in the next.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from django.test import Client

from django_apiauth.models import SamlIdentityProvider, SamlServiceProviderKey
from django_apiauth.sso.saml import sp

XMLSEC1 = shutil.which("xmlsec1") or "/usr/bin/xmlsec1"
IDP_ENTITY_ID = "https://idp.example.test/idp/metadata"
IDP_SSO_URL = "https://idp.example.test/idp/sso"
IDP_SLO_URL = "https://idp.example.test/idp/slo"
SLUG = "acme"
ACS_PATH = f"/auth/saml/{SLUG}/acs/"
LOGIN_PATH = f"/auth/saml/{SLUG}/login/"
ACS_URL = f"http://testserver{ACS_PATH}"
SP_ENTITY_ID = f"http://testserver/auth/saml/{SLUG}/metadata/"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
MAPPING = {
    "username": "uid",
    "email": "mail",
    "first_name": "givenName",
    "last_name": "sn",
    "staff": {"attribute": "eduPersonAffiliation", "values": ["staff"]},
}
IDENTITY = {
    "uid": ["alice"], "mail": ["alice@acme.example"], "givenName": ["Alice"], "sn": ["Liddell"],
    "eduPersonAffiliation": ["staff", "member"],
}

if not Path(XMLSEC1).exists():  # pragma: no cover - make system-deps installs it
    if os.environ.get("CI"):
        raise RuntimeError("xmlsec1 is missing in CI: the pysaml2 IdP peer needs it (make system-deps)")
    pytest.skip("xmlsec1 is not installed (make system-deps)", allow_module_level=True)


def _key_and_cert(common_name: str, bits: int = 2048) -> tuple[Any, str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365)).sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return key, key_pem, cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Keys:
    directory: Path
    idp_key_pem: str
    idp_cert_pem: str
    attacker_key_pem: str
    attacker_cert_pem: str
    sp_key: Any


@pytest.fixture(scope="session")
def saml_keys() -> Iterator[Keys]:
    directory = Path(tempfile.mkdtemp(prefix="apiauth-saml-"))
    _idp_key, idp_key_pem, idp_cert_pem = _key_and_cert("pysaml2 test IdP")
    _att_key, attacker_key_pem, attacker_cert_pem = _key_and_cert("attacker")
    sp_key, _sp_key_pem, _sp_cert = _key_and_cert("unused")
    for name, text in {"idp.key": idp_key_pem, "idp.crt": idp_cert_pem, "attacker.key": attacker_key_pem,
                       "attacker.crt": attacker_cert_pem}.items():
        (directory / name).write_text(text)
    yield Keys(directory, idp_key_pem, idp_cert_pem, attacker_key_pem, attacker_cert_pem, sp_key)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sp_key_row(saml_keys: Keys, django_db_setup: Any, django_db_blocker: Any) -> dict[str, Any]:
    """The SP key row's field values, made once (3072-bit generation is skipped:
    the session's 2048-bit key is passed in)."""
    with django_db_blocker.unblock():
        row = sp.create_sp_key(name="test SP key", private_key=saml_keys.sp_key)
        fields = {f.attname: getattr(row, f.attname) for f in SamlServiceProviderKey._meta.concrete_fields
                  if not f.primary_key}
        row.delete()
    return fields


def _provider_fields(keys: Keys) -> dict[str, Any]:
    return {
        "slug": SLUG, "name": "ACME Corp", "entity_id": IDP_ENTITY_ID, "sso_url": IDP_SSO_URL,
        "slo_url": IDP_SLO_URL, "certificates": keys.idp_cert_pem, "jit_enabled": True,
        "attribute_mapping": MAPPING,
    }


@pytest.fixture(scope="session")
def sp_metadata(sp_key_row: dict[str, Any], saml_keys: Keys, django_db_blocker: Any) -> str:
    """Our SP metadata, as the IdP would download it from /auth/saml/acme/metadata/."""
    with django_db_blocker.unblock():
        key = SamlServiceProviderKey.objects.create(**sp_key_row)
        provider = SamlIdentityProvider.objects.create(**_provider_fields(saml_keys))
        try:
            response = Client().get(f"/auth/saml/{SLUG}/metadata/")
        finally:
            provider.delete()
            key.delete()
    assert response.status_code == 200, response.content
    return response.content.decode()


def make_idp(keys: Keys, sp_metadata: str, *, key: str = "idp", signing_algorithm: str = RSA_SHA256,
             digest_algorithm: str = SHA256, entity_id: str = IDP_ENTITY_ID) -> Any:
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT
    from saml2.server import Server

    config = IdPConfig()
    config.load({
        "entityid": entity_id,
        "service": {"idp": {
            "endpoints": {
                "single_sign_on_service": [(IDP_SSO_URL, BINDING_HTTP_REDIRECT)],
                "single_logout_service": [(IDP_SLO_URL, BINDING_HTTP_REDIRECT)],
            },
            "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None,
                                   "name_form": NAME_FORMAT_URI}},
            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            "want_authn_requests_signed": True,
            # pysaml2 signs with RSA-SHA1 unless told otherwise *here* (service level).
            "signing_algorithm": signing_algorithm,
            "digest_algorithm": digest_algorithm,
        }},
        "key_file": str(keys.directory / f"{key}.key"),
        "cert_file": str(keys.directory / f"{key}.crt"),
        "metadata": {"inline": [sp_metadata]},
        "xmlsec_binary": XMLSEC1,
        "debug": False,
    })
    return Server(config=config)


@pytest.fixture(scope="session")
def idp(saml_keys: Keys, sp_metadata: str) -> Any:
    return make_idp(saml_keys, sp_metadata)


@pytest.fixture
def sp_key(sp_key_row: dict[str, Any], db: Any) -> SamlServiceProviderKey:
    return SamlServiceProviderKey.objects.create(**sp_key_row)


@pytest.fixture
def provider(sp_key: SamlServiceProviderKey, saml_keys: Keys) -> SamlIdentityProvider:
    return SamlIdentityProvider.objects.create(**_provider_fields(saml_keys))


@dataclass
class Started:
    """An SP-initiated sign-in: the browser (test client) and the IdP's view of the request."""

    client: Client
    request_id: str
    redirect_url: str
    query: dict[str, str]
    args: dict[str, Any]


def start(client: Client, idp: Any, next_url: str | None = None) -> Started:
    """SP login redirect → pysaml2 parses (and verifies) the signed AuthnRequest."""
    from saml2 import BINDING_HTTP_REDIRECT

    path = LOGIN_PATH + (f"?next={next_url}" if next_url else "")
    response = client.get(path)
    assert response.status_code == 302, response.content
    url = response["Location"]
    assert url.startswith(IDP_SSO_URL + "?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    request = idp.parse_authn_request(
        query["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=query.get("RelayState"),
        sigalg=query.get("SigAlg"), signature=query.get("Signature"),
    )
    args = idp.response_args(request.message)
    return Started(client, request.message.id, url, query, args)


def name_id(value: str = "alice-0001") -> Any:
    from saml2.saml import NAMEID_FORMAT_PERSISTENT, NameID

    return NameID(format=NAMEID_FORMAT_PERSISTENT, text=value)


def authn_response(idp: Any, args: dict[str, Any], *, subject: str = "alice-0001",
                   identity: dict[str, list[str]] | None = None, sign_response: bool = False,
                   sign_assertion: bool = True, **overrides: Any) -> str:
    """A pysaml2 <Response> XML string for ``args`` (from ``response_args``)."""
    from saml2.saml import AUTHN_PASSWORD

    kwargs = {**args, **overrides}
    return str(idp.create_authn_response(
        identity if identity is not None else IDENTITY, userid=subject, name_id=name_id(subject),
        authn={"class_ref": AUTHN_PASSWORD, "authn_auth": IDP_ENTITY_ID},
        sign_assertion=sign_assertion, sign_response=sign_response, **kwargs,
    ))


def b64(xml: str | bytes) -> str:
    raw = xml.encode() if isinstance(xml, str) else xml
    return base64.b64encode(raw).decode()


def post_acs(client: Client, xml: str | bytes, relay_state: str | None = None, **extra: Any) -> Any:
    data = {"SAMLResponse": b64(xml)}
    if relay_state is not None:
        data["RelayState"] = relay_state
    return client.post(ACS_PATH, data, **extra)


@pytest.fixture
def signed_in(idp: Any, provider: SamlIdentityProvider) -> Callable[..., tuple[Started, str]]:
    def make(client: Client | None = None, **kwargs: Any) -> tuple[Started, str]:
        started = start(client or Client(), idp, kwargs.pop("next_url", None))
        return started, authn_response(idp, started.args, **kwargs)

    return make
