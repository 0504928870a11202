import pytest

pytestmark = pytest.mark.django_db


def test_whoami_with_key(client, api_key, audit_rows):
    obj, key = api_key
    response = client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "user": "alice", "scheme": "api_key", "credential_id": obj.lookup_id,
        "scopes": ["echo:write"],
    }
    [row] = audit_rows()
    assert (row.outcome, row.reason, row.credential_id, row.username) == (
        "success", "ok", obj.lookup_id, "alice")


def test_bad_key(client, api_key, audit_rows):
    _obj, key = api_key
    other = key[:-8] + "xxxxxxxx"
    response = client.get("/api/whoami/", HTTP_AUTHORIZATION=f"Api-Key {other}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Api-Key realm="api"'
    [row] = audit_rows()
    assert row.reason == "malformed"
