"""``manage.py add_oidc_provider``: register an OpenID Provider, checked by discovery.

Fetches ``<issuer>/.well-known/openid-configuration`` (OpenID Connect
Discovery 1.0 §4) before saving anything: the provider must answer, over
https (http only on loopback), with a document whose ``issuer`` is exactly the
one given, naming authorization, token and JWKS endpoints. The client secret
is stored encrypted and never printed; pass ``--client-secret -`` to read it
from stdin instead of the command line (which other local users can see in
the process list).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction
from django.urls import reverse

from ...sso.oidc import client
from ...sso.oidc.models import DEFAULT_ALGORITHMS, DEFAULT_SCOPES, OidcProvider
from ._base import ApiAuthCommand, validation_message


class Command(ApiAuthCommand):
    help = (
        "Register an OpenID Provider for single sign-on, after checking its discovery document. "
        "Prints the redirect URI path to register at the provider. The client secret is stored "
        "encrypted and never printed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--slug", required=True, help="Name in URLs: /auth/oidc/<slug>/login/.")
        parser.add_argument("--issuer", required=True,
                            help="The provider's Issuer Identifier, exactly as in its discovery document.")
        parser.add_argument("--client-id", required=True, help="This site's client ID at the provider.")
        parser.add_argument("--client-secret", required=True,
                            help="The client secret, or '-' to read it from stdin (recommended).")
        parser.add_argument("--name", help="Label of the 'Sign in with …' button (default: the slug).")
        parser.add_argument("--scopes", default=DEFAULT_SCOPES,
                            help=f"Space-separated scopes (default: {DEFAULT_SCOPES!r}).")
        parser.add_argument("--algorithms", default=DEFAULT_ALGORITHMS,
                            help=f"ID-token algorithm allow-list (default: {DEFAULT_ALGORITHMS!r}).")
        parser.add_argument("--jit", action="store_true", help="Create unknown users just in time.")
        parser.add_argument("--inactive", action="store_true", help="Register it switched off.")
        super().add_arguments(parser)

    def run(self, *args: Any, **options: Any) -> None:
        secret: str = options["client_secret"]
        if secret == "-":  # noqa: S105 (read from stdin)
            secret = sys.stdin.readline().strip()
        if not secret:
            raise CommandError("--client-secret is empty. Pass the secret the provider issued, or '-' "
                               "and the secret on stdin.")
        slug: str = options["slug"]
        if OidcProvider.objects.filter(slug=slug).exists():
            raise CommandError(f"An OpenID Provider with slug {slug!r} exists already. Change it in the "
                               "admin (API authentication → OpenID Providers) or choose another --slug.")
        provider = OidcProvider(
            slug=slug, name=options["name"] or slug, issuer=options["issuer"],
            client_id=options["client_id"], scopes=" ".join(options["scopes"].split()),
            algorithms=" ".join(options["algorithms"].split()), jit_enabled=options["jit"],
            active=not options["inactive"],
        )
        try:
            provider.full_clean(exclude=["client_secret_encrypted"])
        except ValidationError as exc:
            raise CommandError(validation_message(exc, {
                "slug": "--slug", "issuer": "--issuer", "client_id": "--client-id",
                "algorithms": "--algorithms", "scopes": "--scopes", "name": "--name",
            })) from None
        try:
            metadata = client.fetch_metadata(provider.issuer)
        except client.IssuerMismatch as exc:
            raise CommandError(
                f"The discovery document at {client.discovery_url(provider.issuer)} names the issuer "
                f"{exc.found!r}, not {provider.issuer!r}. Pass --issuer exactly as the provider "
                "states it (trailing slash included or not)."
            ) from None
        except client.ProviderUnreachable as exc:
            raise CommandError(
                f"Discovery failed at {client.discovery_url(provider.issuer)} ({exc.problem}). Check the "
                "issuer URL and that this machine can reach the provider over https."
            ) from None
        warnings = []
        supported = metadata.get("scopes_supported")
        if isinstance(supported, list):
            missing = [s for s in provider.scope_list if s not in supported]
            if missing:
                warnings.append(f"the provider does not advertise the scope(s) {' '.join(missing)}; "
                                "it may refuse the sign-in (use --scopes)")
        algs = metadata.get("id_token_signing_alg_values_supported")
        if isinstance(algs, list) and not provider.algorithm_list & set(algs):
            warnings.append(f"none of --algorithms is among the provider's ID-token algorithms "
                            f"({' '.join(str(a) for a in algs)})")
        provider.set_client_secret(secret)
        with transaction.atomic():
            provider.save()
        callback = reverse("django_apiauth:oidc:callback", args=[provider.slug])
        result = {
            "slug": provider.slug, "name": provider.name, "issuer": provider.issuer,
            "client_id": provider.client_id, "scopes": provider.scope_list,
            "algorithms": sorted(provider.algorithm_list), "active": provider.active,
            "jit_enabled": provider.jit_enabled,
            "authorization_endpoint": metadata["authorization_endpoint"],
            "token_endpoint": metadata["token_endpoint"], "jwks_uri": metadata["jwks_uri"],
            "userinfo_endpoint": metadata.get("userinfo_endpoint"),
            "end_session_endpoint": metadata.get("end_session_endpoint"),
            "redirect_uri_path": callback, "login_url": provider.login_url(), "warnings": warnings,
        }
        if options["json"]:
            self.write_json(result)
            return
        self.stdout.write(self.style.SUCCESS(f"OpenID Provider {provider.slug!r} added ({provider.issuer})."))
        self.write_fields({
            "Authorization endpoint": result["authorization_endpoint"],
            "Token endpoint": result["token_endpoint"],
            "JWKS": result["jwks_uri"],
            "Sign-in URL": result["login_url"],
        })
        self.stdout.write("")
        self.stdout.write(f"Register this redirect URI at the provider: https://<your host>{callback}")
        for warning in warnings:
            self.stdout.write(self.style.WARNING(f"Warning: {warning}."))
