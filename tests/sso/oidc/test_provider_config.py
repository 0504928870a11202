"""Configuring OpenID Providers: the model's rules, the write-only admin secret, add_oidc_provider."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from django_apiauth.sso.oidc.models import OidcProvider

from .conftest import CLIENT_SECRET, TestOP

pytestmark = pytest.mark.django_db
User = get_user_model()


# -- model ------------------------------------------------------------------------------


@pytest.mark.parametrize("issuer", [
    "http://login.example.com",  # plain http to a remote host
    "ftp://login.example.com",
    "login.example.com",
    "https://user:pw@login.example.com",
    "https://login.example.com/?tenant=1",
    "https://login.example.com/#x",
    "",
])
def test_insecure_or_odd_issuer_is_refused(issuer: str) -> None:
    provider = OidcProvider(slug="x", name="X", issuer=issuer, client_id="c")
    with pytest.raises(ValidationError) as caught:
        provider.full_clean()
    assert "issuer" in caught.value.message_dict


@pytest.mark.parametrize("issuer", ["https://login.example.com/realms/staff", "http://localhost:8000/o",
                                    "http://127.0.0.1:9000", "http://[::1]:9000"])
def test_https_or_loopback_issuer_is_accepted(issuer: str) -> None:
    OidcProvider(slug="x", name="X", issuer=issuer, client_id="c").full_clean()


@pytest.mark.parametrize("algorithms", ["none", "RS256 none", "", "RS256 HS1", "NONE"])
def test_algorithm_allow_list_is_validated(algorithms: str) -> None:
    provider = OidcProvider(slug="x", name="X", issuer="https://op.example", client_id="c",
                            algorithms=algorithms)
    with pytest.raises(ValidationError) as caught:
        provider.full_clean()
    assert "algorithms" in caught.value.message_dict


def test_none_is_never_in_the_effective_allow_list() -> None:
    provider = OidcProvider(algorithms="none RS256 HS256 nonsense")
    assert provider.algorithm_list == frozenset({"RS256", "HS256"})


def test_defaults_and_openid_always_requested() -> None:
    provider = OidcProvider()
    assert provider.scopes == "openid email profile"
    assert provider.algorithm_list == frozenset({"RS256", "ES256"})
    assert OidcProvider(scopes="email").scope_list == ["openid", "email"]
    assert provider.scheme == "oidc"


def test_secret_is_encrypted_and_bound_to_its_row() -> None:
    one = OidcProvider.objects.create(slug="one", name="One", issuer="https://a.example", client_id="c")
    two = OidcProvider.objects.create(slug="two", name="Two", issuer="https://a.example", client_id="c")
    one.set_client_secret("top-secret")
    one.save()
    assert "top-secret" not in one.client_secret_encrypted
    assert OidcProvider.objects.get(pk=one.pk).client_secret() == "top-secret"
    two.client_secret_encrypted = one.client_secret_encrypted  # copied into another row
    from django_apiauth.core.encryption import DecryptionError

    with pytest.raises(DecryptionError):
        two.client_secret()


# -- admin ---------------------------------------------------------------------------------


@pytest.fixture
def admin_client(db: Any) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", "root@example.test", "pw"))
    return client


def form_data(**overrides: Any) -> dict[str, Any]:
    return {
        "name": "Acme staff", "slug": "acme", "issuer": "https://login.acme.example", "client_id": "rp",
        "client_secret": "", "scopes": "openid email", "algorithms": "RS256",
        "token_endpoint_auth_method": "auto", "use_userinfo": "on", "attribute_mapping": "{}",
        "active": "on", **overrides,
    }


def test_admin_sets_the_secret_write_only(admin_client: Client) -> None:
    add = reverse("admin:django_apiauth_oidcprovider_add")
    missing = admin_client.post(add, form_data())
    assert missing.status_code == 200  # the form again: a secret is required when adding
    assert not OidcProvider.objects.exists()

    response = admin_client.post(add, form_data(client_secret="first-secret-value"))
    assert response.status_code == 302
    provider = OidcProvider.objects.get()
    assert provider.client_secret() == "first-secret-value"

    change = reverse("admin:django_apiauth_oidcprovider_change", args=[provider.pk])
    page = admin_client.get(change).content.decode()
    assert "first-secret-value" not in page
    assert provider.client_secret_encrypted not in page
    assert "/auth/oidc/acme/callback/" in page  # the redirect URI to register

    # Saving without a secret keeps it; entering one replaces it.
    assert admin_client.post(change, form_data(name="Acme")).status_code == 302
    assert OidcProvider.objects.get().client_secret() == "first-secret-value"
    assert admin_client.post(change, form_data(client_secret="second-secret")).status_code == 302
    assert OidcProvider.objects.get().client_secret() == "second-secret"
    listing = admin_client.get(reverse("admin:django_apiauth_oidcprovider_changelist")).content.decode()
    assert "second-secret" not in listing


def test_admin_refuses_an_insecure_issuer(admin_client: Client) -> None:
    response = admin_client.post(reverse("admin:django_apiauth_oidcprovider_add"),
                                 form_data(issuer="http://login.acme.example", client_secret="s"))
    assert response.status_code == 200
    assert not OidcProvider.objects.exists()


def test_login_pages_show_the_provider_button(client: Client, op: TestOP,
                                              make_provider: Callable[..., OidcProvider]) -> None:
    make_provider(name="Acme Staff")
    make_provider("off", name="Switched Off", active=False)
    page = client.get("/auth/login/").content.decode()
    assert "Sign in with Acme Staff" in page
    assert 'href="/auth/oidc/acme/login/' in page
    assert "Switched Off" not in page


# -- add_oidc_provider ---------------------------------------------------------------------


def run(*args: str, stdin: str | None = None) -> str:
    out = io.StringIO()
    if stdin is not None:
        import sys

        old, sys.stdin = sys.stdin, io.StringIO(stdin)
        try:
            call_command("add_oidc_provider", *args, stdout=out)
        finally:
            sys.stdin = old
    else:
        call_command("add_oidc_provider", *args, stdout=out)
    return out.getvalue()


def test_add_oidc_provider_with_discovery(op: TestOP) -> None:
    out = json.loads(run("--slug", "acme", "--issuer", op.issuer, "--client-id", "rp", "--client-secret",
                         CLIENT_SECRET, "--name", "Acme", "--scopes", "openid email", "--jit", "--json"))
    assert out["token_endpoint"] == f"{op.issuer}/token"
    assert out["redirect_uri_path"] == "/auth/oidc/acme/callback/"
    assert out["scopes"] == ["openid", "email"]
    assert CLIENT_SECRET not in json.dumps(out)
    provider = OidcProvider.objects.get(slug="acme")
    assert (provider.name, provider.jit_enabled, provider.client_secret()) == ("Acme", True, CLIENT_SECRET)
    assert op.hits["/.well-known/openid-configuration"] == 1


def test_add_oidc_provider_reads_the_secret_from_stdin(op: TestOP) -> None:
    text = run("--slug", "acme", "--issuer", op.issuer, "--client-id", "rp", "--client-secret", "-",
               stdin="from-stdin-secret\n")
    assert "from-stdin-secret" not in text
    assert "/auth/oidc/acme/callback/" in text
    assert OidcProvider.objects.get().client_secret() == "from-stdin-secret"


@pytest.mark.parametrize(("change", "message"), [
    ({"issuer": "{issuer}/"}, "names the issuer"),
    ({"discovery_issuer": "https://evil.example"}, "names the issuer"),
    ({"issuer": "https://127.0.0.1:1"}, "Discovery failed"),
    ({"discovery_status": 404}, "Discovery failed"),
    ({"issuer": "http://op.example.com"}, "--issuer"),
    ({"algorithms": "none"}, "--algorithms"),
    ({"secret": ""}, "--client-secret is empty"),
])
def test_add_oidc_provider_refuses(op: TestOP, change: dict[str, Any], message: str) -> None:
    issuer = change.get("issuer", "{issuer}").format(issuer=op.issuer)
    if "discovery_issuer" in change:
        op.discovery_overrides["issuer"] = change["discovery_issuer"]
    op.discovery_status = change.get("discovery_status", 200)
    with pytest.raises(CommandError, match=message):
        run("--slug", "acme", "--issuer", issuer, "--client-id", "rp",
            "--client-secret", change.get("secret", "s"), "--algorithms", change.get("algorithms", "RS256"))
    assert not OidcProvider.objects.exists()


def test_add_oidc_provider_refuses_a_duplicate_slug(op: TestOP,
                                                    make_provider: Callable[..., OidcProvider]) -> None:
    make_provider()
    with pytest.raises(CommandError, match="exists already"):
        run("--slug", "acme", "--issuer", op.issuer, "--client-id", "rp", "--client-secret", "s")


# -- system checks ----------------------------------------------------------------------------


def check_ids(settings: Any, **overrides: Any) -> set[str]:
    from django.core.checks import run_checks

    for name, value in overrides.items():
        setattr(settings, name, value)
    return {m.id for m in run_checks() if m.id and m.id.startswith("apiauth.") and not m.is_silenced()}


def test_oidc_checks_are_clean_by_default(settings: Any) -> None:
    assert not check_ids(settings) & {"apiauth.E020", "apiauth.W020"}


@pytest.mark.parametrize("name", ["APIAUTH_OIDC_STATE_MAX_AGE", "APIAUTH_OIDC_HTTP_TIMEOUT",
                                  "APIAUTH_OIDC_MAX_ID_TOKEN_AGE"])
@pytest.mark.parametrize("value", [0, -5, "soon"])
def test_non_positive_oidc_durations_are_errors(settings: Any, name: str, value: Any) -> None:
    assert "apiauth.E020" in check_ids(settings, **{name: value})


def test_samesite_strict_session_cookie_is_a_warning(settings: Any) -> None:
    assert "apiauth.W020" in check_ids(settings, SESSION_COOKIE_SAMESITE="Strict")
