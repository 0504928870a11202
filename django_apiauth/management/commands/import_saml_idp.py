"""``manage.py import_saml_idp``: add or update a SAML IdP from its metadata.

Reads an ``EntityDescriptor`` (SAML 2.0 Metadata §2.3.2) from a file or a URL
with python3-saml's ``OneLogin_Saml2_IdPMetadataParser`` (DTDs refused): the
entity ID, the HTTP-Redirect SingleSignOnService and SingleLogoutService, the
signing certificates and the NameID format. A URL is fetched over HTTPS (plain
HTTP only for a loopback host), with a timeout, without following redirects,
and at most 1 MiB is read. The metadata's own signature is not checked: trust
comes from TLS or from the file you were given, so compare the printed
certificate fingerprints with the IdP's administrators.
"""

from __future__ import annotations

import ipaddress
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.core.validators import validate_slug

from ...models import SamlIdentityProvider
from ...sso.saml.models import NAMEID_UNSPECIFIED, summaries_of
from ._base import ApiAuthCommand, validation_message

MAX_METADATA_BYTES = 1024 * 1024
_OPTIONS = {"slug": "--slug", "name": "--name", "entity_id": "--entity-id", "certificates": "--metadata",
            "sso_url": "--metadata", "slo_url": "--metadata"}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        raise CommandError("The metadata URL redirected: give the final URL with --metadata.")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def fetch(url: str, timeout: float) -> bytes:
    parts = urlsplit(url)
    if parts.scheme == "http" and not _is_loopback(parts.hostname or ""):
        raise CommandError("--metadata URLs must use https:// (http:// only for localhost / 127.0.0.1).")
    if parts.scheme not in ("https", "http"):
        raise CommandError("--metadata is a file path or an https:// URL.")
    opener = urllib.request.build_opener(_NoRedirects)
    request = urllib.request.Request(url, headers={"Accept": "application/samlmetadata+xml, */*"})  # noqa: S310
    try:
        with opener.open(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_METADATA_BYTES + 1)
    except CommandError:
        raise
    except Exception as exc:  # URLError, timeout, TLS errors
        raise CommandError(f"Could not fetch the metadata: {type(exc).__name__}: {exc}.") from None
    if len(body) > MAX_METADATA_BYTES:
        raise CommandError("The metadata is larger than 1 MiB.")
    return body


class Command(ApiAuthCommand):
    help = ("Add (or with --update, refresh) a SAML identity provider from its metadata (file or "
            "https URL).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True, help="Short id used in /auth/saml/<slug>/…")
        parser.add_argument("--metadata", required=True, metavar="FILE|URL",
                            help="IdP metadata XML: a file, or an https:// URL.")
        parser.add_argument("--name", help="Button label (default: the slug).")
        parser.add_argument("--entity-id", dest="entity_id",
                            help="Pick this EntityDescriptor when the metadata holds several.")
        parser.add_argument("--timeout", type=float, default=10.0, help="URL fetch timeout (s, default 10).")
        parser.add_argument("--jit", action="store_true", help="Create users just in time (default off).")
        parser.add_argument("--update", action="store_true",
                            help="Refresh an existing IdP's entity ID, URLs and certificates.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        from onelogin.saml2.idp_metadata_parser import OneLogin_Saml2_IdPMetadataParser
        from onelogin.saml2.utils import OneLogin_Saml2_Utils

        slug: str = options["slug"]
        try:
            validate_slug(slug)
        except ValidationError:
            raise CommandError("--slug may contain only letters, digits, hyphens and underscores.") from None
        source: str = options["metadata"]
        if source.startswith(("http://", "https://")) or "://" in source:
            xml = fetch(source, options["timeout"])
        else:
            try:
                path = Path(source)
                if path.stat().st_size > MAX_METADATA_BYTES:
                    raise CommandError("The metadata file is larger than 1 MiB.")
                xml = path.read_bytes()
            except OSError as exc:
                raise CommandError(f"--metadata: cannot read {source!r}: {exc.strerror}.") from None
        try:
            parsed = OneLogin_Saml2_IdPMetadataParser.parse(xml, entity_id=options.get("entity_id"))
        except Exception as exc:  # XMLSyntaxError, DTDForbidden, …
            raise CommandError(f"The metadata could not be read: {type(exc).__name__}.") from None
        idp = parsed.get("idp") or {}
        if not idp.get("entityId"):
            raise CommandError("No IDPSSODescriptor found in the metadata (is it an SP's metadata?).")
        sso_url = (idp.get("singleSignOnService") or {}).get("url")
        if not sso_url:
            raise CommandError("The IdP metadata has no SingleSignOnService with the HTTP-Redirect binding.")
        certs = list((idp.get("x509certMulti") or {}).get("signing") or [])
        if not certs and idp.get("x509cert"):
            certs = [idp["x509cert"]]
        if not certs:
            raise CommandError("The IdP metadata has no signing certificate.")
        fields = {
            "entity_id": idp["entityId"], "sso_url": sso_url,
            "slo_url": (idp.get("singleLogoutService") or {}).get("url") or "",
            "certificates": "".join(OneLogin_Saml2_Utils.format_cert(c) + "\n" for c in certs),
            "nameid_format": (parsed.get("sp") or {}).get("NameIDFormat") or NAMEID_UNSPECIFIED,
        }
        provider = SamlIdentityProvider.objects.filter(slug=slug).first()
        created = provider is None
        if provider is not None and not options["update"]:
            raise CommandError(f"An IdP with slug {slug!r} exists already: add --update to refresh it.")
        if provider is None:
            provider = SamlIdentityProvider(slug=slug, name=options.get("name") or slug,
                                            jit_enabled=options["jit"])
        elif options.get("name"):
            provider.name = options["name"]
        for name, value in fields.items():
            setattr(provider, name, value)
        try:
            provider.full_clean()
        except ValidationError as exc:
            raise CommandError(validation_message(exc, _OPTIONS)) from None
        provider.save()
        certificates = [{"fingerprint_sha256": s.fingerprint_sha256, "subject": s.subject,
                         "not_after": s.not_after} for s in summaries_of(provider)]
        result = {"slug": provider.slug, "created": created, "name": provider.name,
                  "entity_id": provider.entity_id, "sso_url": provider.sso_url, "slo_url": provider.slo_url,
                  "certificates": certificates, "jit_enabled": provider.jit_enabled,
                  "sp_metadata_path": f"/auth/saml/{provider.slug}/metadata/"}
        if options["json"]:
            self.write_json(result)
            return
        self.stdout.write(self.style.SUCCESS(
            f"SAML IdP {provider.slug!r} {'added' if created else 'updated'}: {provider.entity_id}"))
        for cert in certificates:
            self.write_fields({"certificate (SHA-256)": cert["fingerprint_sha256"],
                               "valid until": cert["not_after"].isoformat()})
        self.stdout.write(f"Give the IdP this SP's metadata: {result['sp_metadata_path']}")
