"""API key scheme: the happy path and every bad input the issue names."""

from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from freezegun import freeze_time

from django_apiauth.core import crypto, lifecycle
from django_apiauth.models import ApiKey, AuditEvent

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"


def auth(key: str) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Api-Key {key}"}


def assert_refused_401(response, code: str = "invalid_credentials") -> None:
    assert response.status_code == 401, response.content
    assert response["WWW-Authenticate"] == 'Api-Key realm="api"'
    assert response.json()["code"] == code


def only_row(**filters) -> AuditEvent:
    """The one audit row of the request (lifecycle rows from fixtures excluded)."""
    rows = list(AuditEvent.objects.filter(event__in=["authenticate", "authorize"], **filters))
    assert len(rows) == 1, rows
    return rows[0]


def well_formed(lookup_id: str, secret: str = "S" * crypto.SECRET_LENGTH) -> str:
    body = f"ak_{lookup_id}_{secret}"
    return body + crypto.checksum(body)


# -- success ---------------------------------------------------------------


def test_authorization_header(client, api_key):
    obj, key = api_key
    response = client.get(WHOAMI, **auth(key))
    assert response.status_code == 200
    assert response.json()["credential_id"] == obj.lookup_id
    row = only_row(event="authenticate")
    assert (row.outcome, row.reason, row.scheme, row.user_id) == ("success", "ok", "api_key", obj.owner_id)
    assert row.path == WHOAMI and row.method == "GET" and row.ip == "127.0.0.1"


def test_x_api_key_header(client, api_key):
    _obj, key = api_key
    response = client.get(WHOAMI, HTTP_X_API_KEY=key)
    assert response.status_code == 200
    assert response.json()["user"] == "alice"


def test_keyword_is_case_insensitive(client, api_key):
    _obj, key = api_key
    assert client.get(WHOAMI, HTTP_AUTHORIZATION=f"api-key {key}").status_code == 200


def test_scope_grants_echo(client, api_key):
    _obj, key = api_key
    response = client.post("/api/echo/", {"hello": "world"}, format="json", **auth(key))
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}


def test_revocation_takes_effect_on_next_request(client, api_key):
    obj, key = api_key
    assert client.get(WHOAMI, **auth(key)).status_code == 200
    lifecycle.revoke(obj, reason="leaked in a ticket")
    assert_refused_401(client.get(WHOAMI, **auth(key)))
    assert AuditEvent.objects.filter(event="authenticate").first().reason == "revoked"


def test_request_id_recorded(client, api_key):
    _obj, key = api_key
    client.get(WHOAMI, HTTP_X_REQUEST_ID="req-123", **auth(key))
    assert only_row(event="authenticate").request_id == "req-123"


# -- bad input: each refused, audited once with its reason, never a 500 -------------


def test_missing_header(client):
    response = client.get(WHOAMI)
    assert response.status_code == 401
    # No credential: every scheme the view accepts is offered (RFC 9110 §11.6.1).
    assert response["WWW-Authenticate"] == (
        'Api-Key realm="api", Signature realm="api", Bearer realm="api", ClientCert realm="api"'
    )
    row = only_row()
    assert (row.event, row.outcome, row.reason) == ("authorize", "failure", "missing")


@pytest.fixture
def api_keys_only(monkeypatch):
    """/api/whoami/ of a project with API keys only: no class claims "Bearer"."""
    from example_project.views import WhoAmI

    from django_apiauth.schemes.api_key import ApiKeyAuthentication

    monkeypatch.setattr(WhoAmI, "authentication_classes", [ApiKeyAuthentication])


def test_wrong_scheme_word(client, api_key, api_keys_only):
    _obj, key = api_key
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 401
    row = only_row()
    assert row.reason == "missing"
    assert row.detail == {"authorization_scheme": "Bearer"}
    assert key not in str(row.detail)


def test_an_api_key_sent_as_a_bearer_token_is_refused_by_the_bearer_scheme(client, api_key):
    # The example project accepts OAuth 2.0 bearer tokens: it claims the header,
    # finds no such token, and never writes the key anywhere.
    _obj, key = api_key
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer ")
    row = only_row()
    assert (row.scheme, row.outcome, row.reason) == ("oauth2", "failure", "unknown_credential")
    assert not any(key in str(values) for values in AuditEvent.objects.values_list())


@pytest.mark.parametrize(
    "header",
    [
        "Api-Key",
        "Api-Key ",
        "Api-Key short",
        "Api-Key ak_abc",
        "Api-Key xx_AAAAAAAAAAAA_" + "A" * 38,
        "Api-Key " + "A" * 64 * 1024,
        "Api-Key " + "0" * 64,  # a stored hash presented as a key
    ],
    ids=["empty", "blank", "short", "truncated", "wrong-prefix", "64KB", "stored-hash"],
)
def test_malformed(client, header):
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=header)
    assert_refused_401(response, "malformed_credentials")
    assert only_row().reason == "malformed"


@pytest.mark.parametrize("bad", ["\x00", " ", "\r\n", "é", "\t", "ü"], ids=repr)
def test_bad_characters_in_key(client, api_key, bad):
    _obj, key = api_key
    tampered = key[:20] + bad + key[21:]
    assert_refused_401(client.get(WHOAMI, **auth(tampered)), "malformed_credentials")
    assert only_row().reason == "malformed"


def test_bad_checksum_refused_without_lookup(client, api_key):
    _obj, key = api_key
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    with CaptureQueriesContext(connection) as queries:
        response = client.get(WHOAMI, **auth(tampered))
    assert_refused_401(response, "malformed_credentials")
    assert not [q for q in queries.captured_queries if "apikey" in q["sql"].lower()]
    assert only_row().reason == "malformed"


def test_unknown_key(client, api_key):
    response = client.get(WHOAMI, **auth(well_formed("ZZZZZZZZZZZZ")))
    assert_refused_401(response)
    row = only_row()
    assert (row.reason, row.credential_id, row.user_id) == ("unknown_credential", "ZZZZZZZZZZZZ", None)


def test_wrong_secret(client, api_key):
    obj, _key = api_key
    response = client.get(WHOAMI, **auth(well_formed(obj.lookup_id)))
    assert_refused_401(response)
    row = only_row()
    assert (row.reason, row.credential_id, row.user_id) == ("bad_secret", obj.lookup_id, obj.owner_id)


def test_unknown_and_wrong_secret_do_the_same_work(client, api_key, monkeypatch):
    """Equal work whether or not the lookup id exists (Django ticket #20760)."""
    obj, _key = api_key
    calls = []
    real = crypto.verify_secret

    def spy(secret, stored, pepper):
        calls.append(stored)
        return real(secret, stored, pepper)

    monkeypatch.setattr(crypto, "verify_secret", spy)
    client.get(WHOAMI, **auth(well_formed("ZZZZZZZZZZZZ")))
    client.get(WHOAMI, **auth(well_formed(obj.lookup_id)))
    assert calls == [crypto.DUMMY_HASH, obj.secret_hash]


def test_expired_at_the_boundary(client, make_api_key):
    expires = timezone.now() + timedelta(hours=1)
    _obj, key = make_api_key(expires_at=expires)
    with freeze_time(expires - timedelta(microseconds=1)):
        assert client.get(WHOAMI, **auth(key)).status_code == 200
    with freeze_time(expires):
        assert_refused_401(client.get(WHOAMI, **auth(key)))
    assert AuditEvent.objects.filter(event="authenticate").first().reason == "expired"


def test_not_yet_valid(client, make_api_key):
    _obj, key = make_api_key(not_before=timezone.now() + timedelta(minutes=5))
    assert_refused_401(client.get(WHOAMI, **auth(key)))
    assert only_row().reason == "not_yet_valid"


def test_revoked(client, api_key):
    obj, key = api_key
    lifecycle.revoke(obj, reason="compromised")
    assert_refused_401(client.get(WHOAMI, **auth(key)))
    assert only_row(event="authenticate").reason == "revoked"


def test_owner_inactive(client, api_key):
    obj, key = api_key
    obj.owner.is_active = False
    obj.owner.save()
    assert_refused_401(client.get(WHOAMI, **auth(key)))
    assert only_row(event="authenticate").reason == "inactive_owner"


def test_ip_not_allowed(client, make_api_key):
    _obj, key = make_api_key(allowed_ips="10.0.0.0/8 192.0.2.7")
    assert_refused_401(client.get(WHOAMI, REMOTE_ADDR="198.51.100.1", **auth(key)))
    assert only_row(event="authenticate").reason == "ip_not_allowed"
    assert client.get(WHOAMI, REMOTE_ADDR="10.1.2.3", **auth(key)).status_code == 200
    assert client.get(WHOAMI, REMOTE_ADDR="192.0.2.7", **auth(key)).status_code == 200


def test_ip_allow_list_ignores_spoofed_forwarded_for(client, make_api_key):
    _obj, key = make_api_key(allowed_ips="10.0.0.0/8")
    response = client.get(WHOAMI, REMOTE_ADDR="198.51.100.1", HTTP_X_FORWARDED_FOR="10.1.1.1", **auth(key))
    assert_refused_401(response)


@pytest.mark.parametrize("with_header", [False, True])
def test_key_in_query_string(client, api_key, with_header):
    _obj, key = api_key
    headers = auth(key) if with_header else {}
    response = client.get(f"{WHOAMI}?api_key={key}", **headers)
    assert_refused_401(response, "credential_in_query")
    row = only_row()
    assert row.reason == "credential_in_query"
    assert key not in row.path and key not in str(row.detail)


def test_unrelated_query_parameter_is_fine(client, api_key):
    _obj, key = api_key
    assert client.get(f"{WHOAMI}?key=sort-by-name", **auth(key)).status_code == 200


def test_two_key_headers(client, api_key):
    _obj, key = api_key
    response = client.get(WHOAMI, HTTP_X_API_KEY=key, **auth(key))
    assert_refused_401(response, "ambiguous_credentials")
    assert only_row().reason == "ambiguous"


def test_insufficient_scope(client, make_api_key):
    obj, key = make_api_key(scopes="orders:read")
    response = client.post("/api/echo/", {"a": 1}, format="json", **auth(key))
    assert response.status_code == 403
    assert response.json()["code"] == "insufficient_scope"
    assert response.json()["required_scopes"] == ["echo:write"]
    row = only_row(outcome="failure")
    assert (row.event, row.reason, row.credential_id) == ("authorize", "insufficient_scope", obj.lookup_id)


# -- fail closed -------------------------------------------------------------


def test_database_down_is_503(client, api_key, monkeypatch):
    _obj, key = api_key

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("django_apiauth.core.authentication.lookup", down)
    response = client.get(WHOAMI, **auth(key))
    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"


def test_audit_unwritable_is_503(client, api_key, monkeypatch):
    _obj, key = api_key

    def broken(connection):
        raise OperationalError("disk I/O error")

    monkeypatch.setattr("django_apiauth.core.audit._compiled", broken)
    response = client.get(WHOAMI, **auth(key))
    assert response.status_code == 503
    assert client.get(WHOAMI, **auth(key[:-1] + "!")).status_code == 503


# -- no secret leaves --------------------------------------------------------


def test_plaintext_never_in_audit_rows_or_logs(client, api_key, caplog):
    obj, key = api_key
    caplog.set_level(logging.DEBUG)
    secret_part = key.split("_")[2][:32]
    client.get(WHOAMI, **auth(key))
    client.get(WHOAMI, **auth(key[:-2] + "zz"))
    client.get(f"{WHOAMI}?api_key={key}")
    client.get(WHOAMI, HTTP_X_API_KEY=key, **auth(key))
    lifecycle.rotate(obj)
    lifecycle.revoke(obj, reason="test")
    for row in AuditEvent.objects.all():
        dump = " ".join(str(getattr(row, f.attname)) for f in AuditEvent._meta.concrete_fields)
        assert secret_part not in dump
        assert obj.secret_hash not in dump
    assert secret_part not in caplog.text


def test_stored_hash_is_not_the_key(api_key):
    obj, key = api_key
    assert key not in obj.secret_hash
    assert ApiKey.objects.filter(secret_hash__contains=key.split("_")[2][:32]).count() == 0


def test_unexpected_error_in_a_scheme_is_a_refusal_not_a_500(client, api_key, monkeypatch, caplog):
    _obj, key = api_key

    def broken(*args, **kwargs):
        raise KeyError("bug")

    monkeypatch.setattr("django_apiauth.schemes.api_key.ApiKeyAuthentication.verify", broken)
    response = client.get(WHOAMI, **auth(key))
    assert_refused_401(response)
    assert only_row().reason == "internal_error"
    assert "Unexpected error while verifying" in caplog.text
    assert key not in caplog.text


def test_bare_key_without_keyword_is_refused_and_never_recorded(client, api_key):
    _obj, key = api_key
    response = client.get(WHOAMI, HTTP_AUTHORIZATION=key)
    assert_refused_401(response, "malformed_credentials")
    secret = key.split("_")[2]
    for row in AuditEvent.objects.all():
        assert secret[:8] not in str(row.detail) and secret[:8] not in row.credential_id


@pytest.mark.parametrize("header", ["Zm9vOmJhcg==", "abcdefghijklmnopqrstuvwxyz0123456789", "Bearer"])
def test_bare_foreign_credentials_are_never_recorded(client, header, api_keys_only):
    client.get(WHOAMI, HTTP_AUTHORIZATION=header)
    row = only_row()
    assert row.reason == "missing"
    assert row.detail == {"authorization_scheme": "(unrecognised)"}
