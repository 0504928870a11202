"""Create the demo users and credentials and print copy-paste command lines.

``tests/example_project/test_demo.py`` runs every printed ``curl`` and
``python -m django_apiauth.sign`` line and checks the status its comment announces.
"""

from __future__ import annotations

import secrets
import shlex
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from django_apiauth.app_settings import app_settings
from django_apiauth.core import crypto, lifecycle
from django_apiauth.models import ApiKey, HmacSecret

#: The demo's OAuth 2.0 machine client (client-credentials grant) and its service user.
OAUTH_CLIENT_NAME = "demo machine client"
OAUTH_SERVICE_USER = "demo-service"
OIDC_CLIENT_NAME = "demo OpenID Connect sign-in"
SSO_STAFF_GROUP = "Demo staff"

#: The example project's virtualenv python, as `make demo` creates it (run from the repository root).
SIGN = ".venv/bin/python -m django_apiauth.sign"


class Command(BaseCommand):
    help = (
        "Create demo users (new random passwords each run), issue a demo API key and HMAC "
        "signing key, print curl and signed-request examples."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        User = get_user_model()
        admin_password = secrets.token_urlsafe(12)
        demo_password = secrets.token_urlsafe(12)
        admin, _ = User.objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
        admin.is_staff = admin.is_superuser = admin.is_active = True
        admin.set_password(admin_password)
        admin.save()
        demo, _ = User.objects.get_or_create(username="demo", defaults={"email": "demo@example.com"})
        demo.is_active = True
        demo.set_password(demo_password)
        demo.save()
        key_obj, key = lifecycle.issue(
            ApiKey, owner=demo, name="demo key", scopes="echo:write whoami:read", via="cli"
        )
        hmac_obj, hmac_secret = lifecycle.issue(
            HmacSecret, owner=demo, name="demo signing key", scopes="echo:write", via="cli"
        )
        out = self.stdout.write
        out("")
        out("django-apiauth demo")
        out("===================")
        out(f"Admin:      {base_url}/admin/   user: admin  password: {admin_password}")
        out(f"Demo user:  demo  password: {demo_password}")
        out(f"Demo API key (shown once, id {key_obj.lookup_id}): {key}")
        out(f"Demo HMAC signing key (RFC 9421, alg hmac-sha256): key id {hmac_obj.key_id}, "
            f"secret (shown once): {hmac_secret}")
        out("")
        out("# 200: who am I, with the key")
        out(f"curl -s -H 'Authorization: Api-Key {key}' {base_url}/api/whoami/")
        out("# 200: same, with the X-API-Key header")
        out(f"curl -s -H 'X-API-Key: {key}' {base_url}/api/whoami/")
        out("# 200: echo (scope echo:write)")
        out(
            f"curl -s -H 'Authorization: Api-Key {key}' -H 'Content-Type: application/json' "
            f"-d '{{\"hello\": \"world\"}}' {base_url}/api/echo/"
        )
        out("# 401: a well-formed key that was never issued (invalid_credentials)")
        unknown = crypto.generate_api_key(app_settings.API_KEY_PREFIX, b"unused").key
        out(f"curl -s -i -H 'Authorization: Api-Key {unknown}' {base_url}/api/whoami/")
        out("# 401: a mistyped key: the checksum fails, refused without a database lookup")
        bad = key[:-8] + ("A" if key[-8] != "A" else "B") + key[-7:]
        out(f"curl -s -i -H 'Authorization: Api-Key {bad}' {base_url}/api/whoami/")
        out("# 401: no key")
        out(f"curl -s -i {base_url}/api/whoami/")
        signed = f"{SIGN} --key-id {shlex.quote(hmac_obj.key_id)}"
        out("# 200: a signed request (RFC 9421 HTTP Message Signatures)")
        out(f"{signed} --secret {shlex.quote(hmac_secret)} {base_url}/api/whoami/")
        out("# 200: a signed POST to echo (scope echo:write); the body is covered by Content-Digest")
        out(
            f"{signed} --secret {shlex.quote(hmac_secret)} -d '{{\"hello\": \"world\"}}' "
            f"-H 'Content-Type: application/json' {base_url}/api/echo/"
        )
        out("# 401: signed with a wrong secret (bad_signature)")
        wrong = crypto.random_base62(len(hmac_secret))
        out(f"{signed} --secret {shlex.quote(wrong)} {base_url}/api/whoami/")
        out("# 200: prints the signed request as a curl command: run that within 300 s, once")
        out(f"{signed} --secret {shlex.quote(hmac_secret)} --curl {base_url}/api/whoami/")
        client_id, client_secret = self.oauth_client()
        token_url = f"{base_url}/o/token/"
        form = (f"grant_type=client_credentials&client_id={client_id}&client_secret={client_secret}"
                "&scope=whoami:read")
        get_token = (f"curl -s -H 'Content-Type: application/x-www-form-urlencoded' "
                     f"-d {shlex.quote(form)} {token_url}")
        out(f"OAuth 2.0 client (client credentials, acts as user {OAUTH_SERVICE_USER}): "
            f"client_id {client_id}, client_secret (shown once): {client_secret}")
        out("# 200: an access token (an RFC 9068 JWT, 15 minutes) by the client-credentials grant")
        out(get_token)
        out("# 200: who am I, with that token (verified offline: no database query, no call to /o/)")
        extract = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"
        out(f"TOKEN=$({get_token} | {extract})"
            f" && curl -s -H \"Authorization: Bearer $TOKEN\" {base_url}/api/whoami/")
        out("# the audit trail of those calls")
        out("python example_project/manage.py audit_log --since 1h")
        out("")
        self.single_sign_on(base_url)

    def single_sign_on(self, base_url: str) -> None:
        """Staff sign-in to /admin/ through a SAML IdP and through an OpenID Provider.

        The SAML IdP is the demo's own pysaml2 IdP (``demo/saml_idp.py``, needs
        Debian's xmlsec1); the OpenID Provider is this project's own
        django-oauth-toolkit at ``/o/``. Both sign users in as staff of the
        "Demo staff" group, which may view the audit console and credentials.
        """
        from django.conf import settings
        from django.contrib.auth.models import Group, Permission

        from demo import saml_idp
        from django_apiauth.models import ExternalIdentity, OidcProvider, SamlIdentityProvider
        from django_apiauth.sso.saml import sp

        out = self.stdout.write
        staff_group, _ = Group.objects.get_or_create(name=SSO_STAFF_GROUP)
        staff_group.permissions.set(Permission.objects.filter(
            content_type__app_label="django_apiauth", codename__startswith="view_"))
        mapping = {
            "username": "uid", "email": "mail", "first_name": "givenName", "last_name": "sn",
            "staff": {"attribute": "groups", "values": ["admins"]},
            "groups": {"attribute": "groups", "map": {"admins": SSO_STAFF_GROUP}},
        }
        out("Single sign-on (open in a browser, then choose a provider under the login form):")
        out(f"  {base_url}/admin/login/   or   {base_url}/auth/login/")
        if saml_idp.available():
            if not sp.current_sp_keys():
                sp.create_sp_key(name="demo SP key")
            SamlIdentityProvider.objects.update_or_create(slug="demo-saml", defaults={
                "name": "the demo SAML IdP",
                "entity_id": saml_idp.entity_id(base_url),
                "sso_url": saml_idp.sso_url(base_url),
                "certificates": saml_idp.certificate_pem(),
                "attribute_mapping": mapping,
                "jit_enabled": True,
                "active": True,
            })
            out("  SAML: 'Sign in with the demo SAML IdP', then 'Sign in as ada' (staff, just-in-time user)")
        else:
            SamlIdentityProvider.objects.filter(slug="demo-saml").update(active=False)
            out("  SAML: the demo IdP needs xmlsec1 (run `make system-deps`); skipped")
        # OpenID Connect: op-alice signs in at the OP (/accounts/login/); her OP
        # identity is linked to the staff account "alice" (no password of her own).
        User = get_user_model()
        op_password = secrets.token_urlsafe(12)
        op_user, _ = User.objects.get_or_create(username="op-alice")
        op_user.is_active = True
        op_user.set_password(op_password)
        op_user.save()
        alice, _ = User.objects.get_or_create(username="alice", defaults={"email": "alice@example.com"})
        alice.is_staff = alice.is_active = True
        alice.set_unusable_password()
        alice.save()
        alice.groups.add(staff_group)
        issuer = settings.OAUTH2_PROVIDER.get("OIDC_ISS_ENDPOINT") or f"{base_url}/o"
        ExternalIdentity.objects.update_or_create(issuer=issuer, subject=str(op_user.pk),
                                                  defaults={"user": alice})
        client_id, client_secret = self.oidc_client(base_url)
        provider = OidcProvider.objects.filter(slug="demo-oidc").first() or OidcProvider(slug="demo-oidc")
        provider.name = "the demo OpenID Provider"
        provider.issuer = issuer
        provider.client_id = client_id
        provider.scopes = "openid"
        provider.active = True
        provider.save()
        provider.set_client_secret(client_secret)
        provider.save()
        out(f"  OpenID Connect: 'Sign in with the demo OpenID Provider', then at the provider "
            f"user op-alice, password {op_password} (you arrive as staff user alice)")
        out("")

    def oidc_client(self, base_url: str) -> tuple[str, str]:
        """The demo's OpenID Connect client at this project's own provider (new secret each run)."""
        from oauth2_provider.models import get_application_model

        Application = get_application_model()
        secret = secrets.token_urlsafe(32)
        application = Application.objects.filter(name=OIDC_CLIENT_NAME).first() or Application(
            name=OIDC_CLIENT_NAME)
        application.client_type = Application.CLIENT_CONFIDENTIAL
        application.authorization_grant_type = Application.GRANT_AUTHORIZATION_CODE
        application.algorithm = Application.RS256_ALGORITHM
        application.redirect_uris = f"{base_url}/auth/oidc/demo-oidc/callback/"
        application.post_logout_redirect_uris = f"{base_url}/auth/login/"
        application.skip_authorization = True
        application.client_secret = secret  # hashed by DOT on save
        application.save()
        return application.client_id, secret

    def oauth_client(self) -> tuple[str, str]:
        """The demo's confidential client-credentials application, with a new secret each run."""
        from oauth2_provider.models import get_application_model

        Application = get_application_model()
        User = get_user_model()
        service, _ = User.objects.get_or_create(username=OAUTH_SERVICE_USER)
        service.is_active = True
        service.set_unusable_password()
        service.save()
        secret = secrets.token_urlsafe(32)
        application = Application.objects.filter(name=OAUTH_CLIENT_NAME).first()
        if application is None:
            application = Application(name=OAUTH_CLIENT_NAME)
        application.user = service
        application.client_type = Application.CLIENT_CONFIDENTIAL
        application.authorization_grant_type = Application.GRANT_CLIENT_CREDENTIALS
        application.client_secret = secret  # hashed by DOT on save
        application.save()
        return application.client_id, secret
