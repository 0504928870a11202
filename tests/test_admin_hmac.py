"""The admin for HTTP signature keys: HMAC secrets shown once, public keys registered.

Requests are signed with :func:`django_apiauth.sign.sign_request` (the client
tool) and delivered to Django header for header, as a WSGI server would.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.contrib.messages import SUCCESS, WARNING
from django.core.cache import caches
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from freezegun import freeze_time
from rest_framework.test import APIClient

from django_apiauth.core import lifecycle
from django_apiauth.models import AuditEvent, HmacSecret
from django_apiauth.sign import sign_request

pytestmark = pytest.mark.django_db

SECRET_RE = re.compile(r"<code>([0-9A-Za-z]{43})</code>")
CHANGELIST = "admin:django_apiauth_hmacsecret_changelist"
ADD = "admin:django_apiauth_hmacsecret_add"
WHOAMI = "/api/whoami/"

MakeSecret = Callable[..., tuple[HmacSecret, str]]


@pytest.fixture(autouse=True)
def fresh_replay_store() -> None:
    # The local-memory cache outlives a test; every test starts with no nonces.
    caches["default"].clear()


# -- helpers ----------------------------------------------------------------------


def whoami(key_id: str, key: Any, algorithm: str = HmacSecret.HMAC_SHA256) -> Any:
    """GET /api/whoami/ signed by the client tool, delivered with every signed header."""
    signed = sign_request("GET", "http://testserver" + WHOAMI, {}, None, key_id, key, algorithm)
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in signed.items()}
    return APIClient().generic("GET", WHOAMI, HTTP_HOST="testserver", **meta)


def status(key_id: str, key: Any, algorithm: str = HmacSecret.HMAC_SHA256) -> int:
    return whoami(key_id, key, algorithm).status_code


def change_url(obj: Any) -> str:
    return reverse("admin:django_apiauth_hmacsecret_change", args=(obj.pk,))


def messages_of(response: Any, level: int = WARNING) -> list[str]:
    return [str(m) for m in response.context["messages"] if m.level == level]


def secrets_in(response: Any) -> list[str]:
    return SECRET_RE.findall(" ".join(messages_of(response)))


def content(response: Any) -> str:
    return response.content.decode()


def add_form(user: Any, **fields: str) -> dict[str, Any]:
    return {
        "owner": user.pk, "name": "signing client", "scopes": "echo:write", "allowed_ips": "",
        "not_before_0": "", "not_before_1": "", "expires_at_0": "", "expires_at_1": "",
        "algorithm": HmacSecret.HMAC_SHA256, "public_key": "", **fields,
    }


def run_action(client: Client, action: str, objs: list[Any], **form: str) -> Any:
    """Post an action from the change list, then its confirmation page with ``form``."""
    url = reverse(CHANGELIST)
    pks = [str(obj.pk) for obj in objs]
    first = client.post(url, {"action": action, "index": "0", "_selected_action": pks})
    assert first.status_code == 200, first
    return client.post(
        url, {"action": action, "_selected_action": pks, "confirm": "yes", **form}, follow=True,
    )


def public_pem(private_key: Any) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo,
    ).decode()


def private_pem(private_key: Any) -> str:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption(),
    ).decode()


def pages(obj: HmacSecret) -> list[str]:
    """Every admin page that shows a signing key."""
    return [
        reverse(CHANGELIST), reverse(CHANGELIST) + f"?q={obj.key_id}", change_url(obj),
        reverse("admin:django_apiauth_hmacsecret_history", args=(obj.pk,)),
    ]


@pytest.fixture
def make_hmac_secret(user: Any) -> MakeSecret:
    """Issue a signing credential through the lifecycle (as tests/schemes/conftest.py does)."""

    def make(owner: Any = None, **fields: Any) -> tuple[HmacSecret, str]:
        fields.setdefault("name", "signing client")
        fields.setdefault("scopes", "echo:write")
        return lifecycle.issue(HmacSecret, owner=owner or user, **fields)

    return make


@pytest.fixture(scope="module")
def ed25519_private_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def p256_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture
def ed25519_key(make_hmac_secret: MakeSecret,
                ed25519_private_key: ed25519.Ed25519PrivateKey) -> HmacSecret:
    credential, secret = make_hmac_secret(
        algorithm=HmacSecret.ED25519, public_key=public_pem(ed25519_private_key),
    )
    assert secret == ""
    return credential


# -- issue: HMAC-SHA256 ---------------------------------------------------------------


def test_add_hmac_shows_the_secret_once_and_it_signs(admin_client: Client, user: Any) -> None:
    response = admin_client.post(reverse(ADD), add_form(user), follow=True)
    assert response.status_code == 200
    [secret] = secrets_in(response)
    obj = HmacSecret.objects.get()
    assert (obj.owner, obj.name, obj.algorithm, obj.public_key) == (
        user, "signing client", HmacSecret.HMAC_SHA256, "")
    assert obj.key_id.startswith("hk_")
    assert obj.secret_encrypted
    assert content(response).count(secret) == 1
    assert obj.key_id in " ".join(messages_of(response))

    response = whoami(obj.key_id, secret)
    assert response.status_code == 200, response.content
    assert response.json()["credential_id"] == obj.key_id
    assert status(obj.key_id, "x" * 43) == 401  # the signature really is checked

    for url in pages(obj):
        page = content(admin_client.get(url))
        assert obj.key_id in page, url
        assert secret not in page, url
        assert obj.secret_encrypted not in page, url


def test_secret_encrypted_is_neither_shown_nor_editable(admin_client: Client,
                                                        make_hmac_secret: MakeSecret) -> None:
    obj, secret = make_hmac_secret()
    ciphertext = obj.secret_encrypted
    add_fields = list(admin_client.get(reverse(ADD)).context["adminform"].form.fields)
    assert add_fields == [
        "owner", "name", "scopes", "allowed_ips", "rate_limit", "not_before", "expires_at", "algorithm",
        "public_key",
    ]
    response = admin_client.get(change_url(obj))
    shown = {field for fieldset in response.context["adminform"] for line in fieldset
             for field in line}
    names = {f.field["name"] if isinstance(f.field, dict) else f.field.name for f in shown}
    assert "secret_encrypted" not in names
    assert "encrypted secret" not in content(response).lower()

    response = admin_client.post(change_url(obj), {
        "name": "renamed", "scopes": "echo:write", "allowed_ips": "",
        "expires_at_0": "", "expires_at_1": "",
        "secret_encrypted": "forged", "key_id": "hk_forged",
    })
    assert response.status_code == 302
    obj.refresh_from_db()
    assert (obj.name, obj.secret_encrypted, obj.key_id.startswith("hk_forged")) == (
        "renamed", ciphertext, False)
    assert status(obj.key_id, secret) == 200


# -- issue: public keys ------------------------------------------------------------------


def test_add_ed25519_registers_the_public_key_without_a_secret(
    admin_client: Client, user: Any, ed25519_private_key: ed25519.Ed25519PrivateKey,
) -> None:
    response = admin_client.post(reverse(ADD), add_form(
        user, algorithm=HmacSecret.ED25519, public_key=public_pem(ed25519_private_key),
    ), follow=True)
    assert response.status_code == 200
    assert messages_of(response) == []  # nothing secret to show
    assert messages_of(response, SUCCESS)
    obj = HmacSecret.objects.get()
    assert obj.algorithm == HmacSecret.ED25519
    assert obj.secret_encrypted == ""
    assert obj.public_key.strip() == public_pem(ed25519_private_key).strip()

    response = whoami(obj.key_id, ed25519_private_key, HmacSecret.ED25519)
    assert response.status_code == 200, response.content
    assert response.json()["credential_id"] == obj.key_id
    assert status(obj.key_id, ed25519.Ed25519PrivateKey.generate(), HmacSecret.ED25519) == 401


@pytest.mark.parametrize(("algorithm", "key", "message"), [
    (HmacSecret.ED25519, "p256_public", "not an Ed25519 public key"),
    (HmacSecret.ECDSA_P256_SHA256, "ed25519_public", "not a P-256 public key"),
    (HmacSecret.ED25519, "garbage", "Not a PEM public key"),
    (HmacSecret.ED25519, "", "needs the client's public key"),
    (HmacSecret.ED25519, "ed25519_private", "private key"),
    (HmacSecret.HMAC_SHA256, "ed25519_private", "private key"),
    (HmacSecret.HMAC_SHA256, "ed25519_public", "leave this empty"),
])
def test_a_bad_public_key_is_a_form_error(
    admin_client: Client, user: Any, ed25519_private_key: ed25519.Ed25519PrivateKey,
    p256_private_key: ec.EllipticCurvePrivateKey, algorithm: str, key: str, message: str,
) -> None:
    pem = {
        "p256_public": public_pem(p256_private_key),
        "ed25519_public": public_pem(ed25519_private_key),
        "ed25519_private": private_pem(ed25519_private_key),
        "garbage": "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n",
        "": "",
    }[key]
    response = admin_client.post(reverse(ADD), add_form(user, algorithm=algorithm, public_key=pem))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"public_key"}, errors
    assert message in " ".join(errors["public_key"])
    assert not HmacSecret.objects.exists()
    assert not AuditEvent.objects.filter(event="credential.issued").exists()
    if key == "ed25519_private":  # a pasted private key is not echoed back into the page
        body = pem.strip().splitlines()[1]
        assert body not in content(response)


# -- change page ---------------------------------------------------------------------------


def test_algorithm_and_public_key_are_read_only_after_creation(
    admin_client: Client, ed25519_key: HmacSecret, ed25519_private_key: ed25519.Ed25519PrivateKey,
    p256_private_key: ec.EllipticCurvePrivateKey,
) -> None:
    obj = ed25519_key
    response = admin_client.get(change_url(obj))
    assert list(response.context["adminform"].form.fields) == ["name", "scopes", "allowed_ips", "rate_limit",
                                                                 "expires_at"]
    page = content(response)
    assert 'name="algorithm"' not in page
    assert 'name="public_key"' not in page
    assert "BEGIN PUBLIC KEY" in page  # shown, read-only: it is public

    original = obj.public_key
    response = admin_client.post(change_url(obj), {
        "name": "renamed", "scopes": "echo:write", "allowed_ips": "",
        "expires_at_0": "", "expires_at_1": "",
        "algorithm": HmacSecret.ECDSA_P256_SHA256, "public_key": public_pem(p256_private_key),
    })
    assert response.status_code == 302
    obj.refresh_from_db()
    assert (obj.name, obj.algorithm, obj.public_key) == ("renamed", HmacSecret.ED25519, original)
    assert status(obj.key_id, ed25519_private_key, HmacSecret.ED25519) == 200
    changed = AuditEvent.objects.get(event="credential.changed", credential_id=obj.key_id)
    assert changed.detail["via"] == "admin"
    assert set(changed.detail["changed"]) == {"name"}


# -- rotate ------------------------------------------------------------------------------------


def test_rotate_hmac_shows_the_new_secret_once_and_the_old_key_works_during_grace(
    admin_client: Client, make_hmac_secret: MakeSecret,
) -> None:
    old, old_secret = make_hmac_secret()
    response = run_action(admin_client, "rotate_selected", [old], grace="1h")
    [new_secret] = secrets_in(response)
    assert content(response).count(new_secret) == 1
    successor = HmacSecret.objects.get(rotated_from=old)
    assert successor.key_id in " ".join(messages_of(response))
    assert successor.algorithm == HmacSecret.HMAC_SHA256
    old.refresh_from_db()
    assert timedelta(minutes=59) < old.expires_at - timezone.now() <= timedelta(hours=1)

    assert status(successor.key_id, new_secret) == 200
    assert status(old.key_id, old_secret) == 200  # within the grace period
    assert status(old.key_id, new_secret) == 401  # each key id keeps its own secret
    with freeze_time(timezone.now() + timedelta(hours=1, seconds=1)):
        assert status(old.key_id, old_secret) == 401
        assert status(successor.key_id, new_secret) == 200

    rotated = AuditEvent.objects.get(event="credential.rotated")
    assert (rotated.credential_id, rotated.detail["via"], rotated.detail["actor"]) == (
        old.key_id, "admin", "admin")
    assert rotated.detail["successor"] == successor.key_id
    issued = AuditEvent.objects.get(event="credential.issued", credential_id=successor.key_id)
    assert issued.detail["via"] == "admin"
    for obj in (old, successor):
        for url in pages(obj):
            page = content(admin_client.get(url))
            assert new_secret not in page, url
            assert old_secret not in page, url
            assert successor.secret_encrypted not in page, url


def test_rotate_ed25519_is_skipped_with_the_cli_command_not_a_500(
    admin_client: Client, ed25519_key: HmacSecret, make_hmac_secret: MakeSecret,
    ed25519_private_key: ed25519.Ed25519PrivateKey,
) -> None:
    hmac_key, _secret = make_hmac_secret(name="hmac one")
    first = admin_client.post(reverse(CHANGELIST), {
        "action": "rotate_selected", "index": "0", "_selected_action": [str(ed25519_key.pk)],
    })
    assert "rotate_credential" in content(first)  # the confirmation page says so up front

    response = run_action(admin_client, "rotate_selected", [ed25519_key, hmac_key], grace="1h")
    assert response.status_code == 200
    [skipped] = [m for m in messages_of(response) if "Skipped" in m]
    assert str(ed25519_key) in skipped
    assert "new public key" in skipped
    assert (f"rotate it with <code>manage.py rotate_credential hmac {ed25519_key.key_id} "
            "--public-key NEW.pem</code>") in skipped
    assert len(secrets_in(response)) == 1  # the HMAC key in the same batch was rotated
    assert HmacSecret.objects.filter(rotated_from=hmac_key).count() == 1

    assert not HmacSecret.objects.filter(rotated_from=ed25519_key).exists()
    ed25519_key.refresh_from_db()
    assert ed25519_key.expires_at is None  # no grace period started
    assert not AuditEvent.objects.filter(
        event="credential.rotated", credential_id=ed25519_key.key_id,
    ).exists()
    assert status(ed25519_key.key_id, ed25519_private_key, HmacSecret.ED25519) == 200


# -- revoke ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", [HmacSecret.HMAC_SHA256, HmacSecret.ED25519])
def test_revoke_then_the_key_is_refused(
    admin_client: Client, make_hmac_secret: MakeSecret, algorithm: str,
    ed25519_private_key: ed25519.Ed25519PrivateKey,
) -> None:
    if algorithm == HmacSecret.ED25519:
        obj, _ = make_hmac_secret(algorithm=algorithm, public_key=public_pem(ed25519_private_key))
        key: Any = ed25519_private_key
    else:
        obj, key = make_hmac_secret()
    assert status(obj.key_id, key, algorithm) == 200

    response = run_action(admin_client, "revoke_selected", [obj], reason="client decommissioned")
    assert response.status_code == 200
    assert messages_of(response, SUCCESS)
    obj.refresh_from_db()
    assert obj.revoked_at is not None
    assert obj.revoked_reason == "client decommissioned"
    assert status(obj.key_id, key, algorithm) == 401
    revoked = AuditEvent.objects.get(event="credential.revoked")
    assert (revoked.credential_id, revoked.detail["via"], revoked.detail["actor"]) == (
        obj.key_id, "admin", "admin")
    assert revoked.detail["reason"] == "client decommissioned"
    assert AuditEvent.objects.filter(
        event="authenticate", credential_id=obj.key_id, outcome="failure", reason="revoked",
    ).exists()


# -- audit ----------------------------------------------------------------------------------------


def test_issuing_in_the_admin_is_audited_via_admin(
    admin_client: Client, user: Any, ed25519_private_key: ed25519.Ed25519PrivateKey,
) -> None:
    admin_client.post(reverse(ADD), add_form(user, name="shared"))
    admin_client.post(reverse(ADD), add_form(
        user, name="pair", algorithm=HmacSecret.ED25519, public_key=public_pem(ed25519_private_key),
    ))
    issued = AuditEvent.objects.filter(event="credential.issued")
    assert {row.credential_id for row in issued} == set(HmacSecret.objects.values_list("key_id", flat=True))
    assert len(issued) == 2
    for row in issued:
        assert (row.scheme, row.outcome, row.username) == ("hmac", "success", "alice")
        assert (row.detail["via"], row.detail["actor"]) == ("admin", "admin")
        assert "secret" not in row.detail
