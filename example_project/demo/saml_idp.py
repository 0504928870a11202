"""A tiny SAML 2.0 identity provider for the demo, built on pysaml2.

Not part of django-apiauth: it exists so that ``make demo`` can show a staff
user signing in to ``/admin/`` through SAML without an external IdP. It runs
inside the example project under ``/demo-idp/``, signs with its own RSA key
(generated into ``example_project/var/demo-idp/``) using RSA-SHA256, and knows
the demo's service provider from the SP's own metadata endpoint.

Real deployments point the SP at their organisation's IdP instead; the test
suite drives pysaml2 directly (``tests/sso/saml/``).
"""

from __future__ import annotations

import base64
import datetime
import html
import ipaddress
import shutil
from pathlib import Path
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseForbidden
from django.shortcuts import render
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_safe

SIGNING_ALGORITHM = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
DIGEST_ALGORITHM = "http://www.w3.org/2001/04/xmlenc#sha256"
#: The demo users the IdP offers, and what it asserts about them.
DEMO_IDENTITIES = {
    "ada": {"uid": ["ada"], "mail": ["ada@idp.example"], "givenName": ["Ada"], "sn": ["Lovelace"],
            "groups": ["admins"]},
    "grace": {"uid": ["grace"], "mail": ["grace@idp.example"], "givenName": ["Grace"], "sn": ["Hopper"],
              "groups": ["staff"]},
}


def available() -> bool:
    """pysaml2 shells out to Debian's xmlsec1 (``make system-deps`` installs it)."""
    return shutil.which("xmlsec1") is not None


def key_dir() -> Path:
    return Path(settings.VAR_DIR) / "demo-idp"


def ensure_keys() -> tuple[Path, Path]:
    """The IdP's RSA key and self-signed certificate (created on first use, kept in var/)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    directory = key_dir()
    key_path, cert_path = directory / "idp.key", directory / "idp.crt"
    if key_path.exists() and cert_path.exists():
        return key_path, cert_path
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "django-apiauth demo IdP")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


def certificate_pem() -> str:
    return ensure_keys()[1].read_text()


def entity_id(base_url: str) -> str:
    return base_url.rstrip("/") + "/demo-idp/metadata/"


def sso_url(base_url: str) -> str:
    return base_url.rstrip("/") + "/demo-idp/sso/"


def _server(base_url: str, sp_metadata: str) -> Any:
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_PERSISTENT
    from saml2.server import Server

    key_path, cert_path = ensure_keys()
    config = IdPConfig()
    config.load({
        "entityid": entity_id(base_url),
        "service": {"idp": {
            "endpoints": {"single_sign_on_service": [(sso_url(base_url), BINDING_HTTP_REDIRECT)]},
            "name_id_format": [NAMEID_FORMAT_PERSISTENT],
            "sign_response": True,
            "sign_assertion": True,
            "policy": {"default": {"lifetime": {"minutes": 5}, "name_form": NAME_FORMAT_URI}},
            # pysaml2 signs with RSA-SHA1 unless told otherwise here, at the service
            # level; django-apiauth's SP refuses SHA-1.
            "signing_algorithm": SIGNING_ALGORITHM,
            "digest_algorithm": DIGEST_ALGORITHM,
        }},
        "key_file": str(key_path),
        "cert_file": str(cert_path),
        "metadata": {"inline": [sp_metadata]},
        "xmlsec_binary": shutil.which("xmlsec1"),
    })
    return Server(config=config)


def _loopback_only(request: HttpRequest) -> HttpResponse | None:
    """The demo IdP signs anyone in without a password: it answers only to a
    browser on this machine, so a deployed copy of the example project cannot
    be entered through it."""
    try:
        local = ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        local = False
    return None if local else HttpResponseForbidden("The demo IdP answers only on loopback.")


def _base_url(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _sp_metadata(request: HttpRequest) -> str:
    """The metadata of the demo's SAML service provider (the one configured for this IdP)."""
    from django_apiauth.sso.saml import sp
    from django_apiauth.sso.saml.models import SamlIdentityProvider

    provider = SamlIdentityProvider.objects.filter(entity_id=entity_id(_base_url(request))).first()
    if provider is None:
        raise LookupError("no SAML identity provider is configured for the demo IdP (run demo_setup)")
    return sp.metadata_xml(request, provider).decode()


@require_safe
def metadata(request: HttpRequest) -> HttpResponse:
    from saml2 import BINDING_HTTP_REDIRECT
    from saml2.config import IdPConfig
    from saml2.metadata import entity_descriptor

    if (refused := _loopback_only(request)) is not None:
        return refused
    if not available():
        return HttpResponse("xmlsec1 is not installed: run `make system-deps`.", status=503)
    key_path, cert_path = ensure_keys()
    base = _base_url(request)
    endpoints = {"single_sign_on_service": [(sso_url(base), BINDING_HTTP_REDIRECT)]}
    config = IdPConfig()
    config.load({
        "entityid": entity_id(base),
        "service": {"idp": {"endpoints": endpoints}},
        "key_file": str(key_path), "cert_file": str(cert_path),
        "xmlsec_binary": shutil.which("xmlsec1"),
    })
    return HttpResponse(str(entity_descriptor(config)), content_type="application/samlmetadata+xml")


@csrf_exempt  # the sign-in form posts back the AuthnRequest it was given, nothing else
@require_http_methods(["GET", "POST"])
def sso(request: HttpRequest) -> HttpResponse:
    """GET: the SP's AuthnRequest (Redirect binding) → pick a demo user; POST: answer the SP."""
    from saml2 import BINDING_HTTP_REDIRECT

    if (refused := _loopback_only(request)) is not None:
        return refused
    if not available():
        return HttpResponse("xmlsec1 is not installed: run `make system-deps`.", status=503)
    source = request.GET if request.method == "GET" else request.POST
    saml_request = source.get("SAMLRequest", "")
    relay_state = source.get("RelayState", "")
    if not saml_request:
        return HttpResponseBadRequest("SAMLRequest missing.")
    base = _base_url(request)
    try:
        server = _server(base, _sp_metadata(request))
        parsed = server.parse_authn_request(saml_request, BINDING_HTTP_REDIRECT)
    except Exception as exc:  # a demo: say what went wrong
        return HttpResponseBadRequest(f"Cannot read the AuthnRequest: {html.escape(str(exc))}")
    if request.method == "GET":
        return render(request, "demo/idp_login.html", {
            "saml_request": saml_request, "relay_state": relay_state, "identities": DEMO_IDENTITIES,
            "sp": parsed.message.issuer.text,
        })
    who = request.POST.get("user", "")
    if who not in DEMO_IDENTITIES:
        return HttpResponseBadRequest("Unknown demo user.")
    args = server.response_args(parsed.message)
    response = server.create_authn_response(
        DEMO_IDENTITIES[who], userid=who,
        authn={"class_ref": "urn:oasis:names:tc:SAML:2.0:ac:classes:Password", "authn_auth": entity_id(base)},
        sign_assertion=True, sign_response=True, **args,
    )
    return render(request, "demo/idp_post.html", {
        "acs": args["destination"],
        "saml_response": base64.b64encode(str(response).encode()).decode(),
        "relay_state": relay_state,
    })


urlpatterns = [
    path("metadata/", metadata, name="demo-idp-metadata"),
    path("sso/", sso, name="demo-idp-sso"),
]
