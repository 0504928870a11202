"""Management commands for request-signing credentials (DESIGN §3, §6).

``issue_hmac_secret``; ``rotate_credential`` / ``revoke_credential`` with kind
``hmac``; ``reencrypt_secrets``. Every issued credential is proven by a real
RFC 9421 signature made with :func:`django_apiauth.sign.sign_request` and
delivered to the example API through the test client.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from django.core.cache import caches
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from freezegun import freeze_time

from django_apiauth.core import encryption, lifecycle
from django_apiauth.models import AuditEvent, HmacSecret
from django_apiauth.sign import sign_request

pytestmark = pytest.mark.django_db

WHOAMI = "/api/whoami/"
ECHO = "/api/echo/"
T0 = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
OLD_KEY = "old-encryption-key-0123456789abcdef0123456789"
NEW_KEY = "new-encryption-key-fedcba9876543210fedcba9876"


@pytest.fixture(autouse=True)
def fresh_replay_store() -> None:
    caches["default"].clear()


def run(*args: str, stderr: Any = None) -> str:
    """Run a command; return its stdout (stderr must stay empty unless captured)."""
    out, err = StringIO(), stderr if stderr is not None else StringIO()
    call_command(*args, stdout=out, stderr=err)
    if stderr is None:
        assert err.getvalue() == ""
    return out.getvalue()


def run_json(*args: str, stderr: Any = None) -> dict[str, Any]:
    output = run(*args, "--json", stderr=stderr)
    assert output.count("\n") == 1, "one JSON object on one line"
    return json.loads(output)  # type: ignore[no-any-return]


def signed_request(client: Any, key_id: str, key: Any, algorithm: str = "hmac-sha256", *,
                   method: str = "GET", path: str = WHOAMI, body: bytes | None = None,
                   content_type: str | None = None) -> Any:
    """Sign with the client tool's ``sign_request`` and deliver through the test client."""
    headers = {"Content-Type": content_type} if content_type else {}
    added = sign_request(method, "http://testserver" + path, headers, body, key_id, key, algorithm)
    meta = {"HTTP_" + name.upper().replace("-", "_"): value for name, value in added.items()}
    return client.generic(method, path, data=body or b"", content_type=content_type, **meta)


def status(client: Any, key_id: str, key: Any, algorithm: str = "hmac-sha256") -> int:
    return signed_request(client, key_id, key, algorithm).status_code  # type: ignore[no-any-return]


def last_failure_reason() -> str:
    row = AuditEvent.objects.filter(event="authenticate", outcome="failure").order_by("-id").first()
    assert row is not None
    return row.reason


def write_public_pem(tmp_path: Path, private_key: Any, name: str = "client.pub.pem") -> str:
    path = tmp_path / name
    path.write_bytes(private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return str(path)


def write_private_pem(tmp_path: Path, private_key: Any, name: str = "client.pem") -> str:
    path = tmp_path / name
    path.write_bytes(private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return str(path)


# -- issue_hmac_secret --------------------------------------------------------


def test_issue_json_secret_signs_requests(user, client):
    with freeze_time(T0):
        data = run_json("issue_hmac_secret", "--owner", "alice", "--name", "billing", "--scopes",
                        "echo:write", "orders:read", "--expires-in", "30d")
        assert data["expires_at"] == (T0 + timedelta(days=30)).isoformat()
        response = signed_request(client, data["key_id"], data["secret"], method="POST", path=ECHO,
                                  body=b'{"n": 1}', content_type="application/json")
        assert response.status_code == 200, response.content
        assert response.json() == {"n": 1}
        whoami = signed_request(client, data["key_id"], data["secret"])
    assert whoami.json() == {"user": "alice", "scheme": "hmac", "credential_id": data["key_id"],
                             "scopes": ["echo:write", "orders:read"]}
    assert data["id"] == data["key_id"] and data["key_id"].startswith("hk_")
    assert data["algorithm"] == "hmac-sha256"
    assert {k: data[k] for k in ("kind", "name", "owner", "scopes", "allowed_ips", "revoked_at")} == {
        "kind": "hmac", "name": "billing", "owner": "alice",
        "scopes": ["echo:write", "orders:read"], "allowed_ips": [], "revoked_at": None,
    }
    obj = HmacSecret.objects.get(key_id=data["key_id"])
    assert obj.owner == user
    # Stored only encrypted, and the printed string's UTF-8 bytes are the key.
    assert data["secret"] not in obj.secret_encrypted
    assert obj.verification_key() == data["secret"].encode()


def test_issue_human_prints_secret_once(user, client):
    output = run("issue_hmac_secret", "--owner", "alice", "--name", "ci")
    [obj] = HmacSecret.objects.all()
    [secret_line] = [line for line in output.splitlines() if line.startswith("Secret: ")]
    secret = secret_line.removeprefix("Secret: ")
    assert output.count(secret) == 1
    assert f"Issued HTTP signature key {obj.key_id}" in output
    assert "algorithm:   hmac-sha256" in output
    assert "will not be shown again" in output
    assert f"--key-id {obj.key_id} --secret-env APIAUTH_SECRET" in output
    assert status(client, obj.key_id, secret) == 200
    assert status(client, obj.key_id, secret + "x") == 401
    assert last_failure_reason() == "bad_signature"


def test_issue_is_audited_via_cli(user):
    data = run_json("issue_hmac_secret", "--owner", "alice", "--name", "ci")
    [row] = AuditEvent.objects.filter(event="credential.issued")
    assert (row.scheme, row.credential_id, row.username, row.reason) == (
        "hmac", data["key_id"], "alice", "issued")
    assert row.detail == {"actor": None, "via": "cli"}
    assert data["secret"] not in json.dumps(row.detail)


def test_issue_allowed_ips(user, client):
    data = run_json("issue_hmac_secret", "--owner", "alice", "--name", "ci",
                    "--allowed-ips", "10.0.0.0/8")
    assert data["allowed_ips"] == ["10.0.0.0/8"]
    assert status(client, data["key_id"], data["secret"]) == 401  # the test client is 127.0.0.1
    assert last_failure_reason() == "ip_not_allowed"


@pytest.mark.parametrize(("make_key", "algorithm"), [
    (ed25519.Ed25519PrivateKey.generate, "ed25519"),
    (lambda: ec.generate_private_key(ec.SECP256R1()), "ecdsa-p256-sha256"),
])
@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "inferred"])
def test_issue_asymmetric_with_public_key(user, client, tmp_path, make_key, algorithm, explicit):
    private_key = make_key()
    args = ["issue_hmac_secret", "--owner", "alice", "--name", "laptop",
            "--public-key", write_public_pem(tmp_path, private_key)]
    if explicit:
        args += ["--algorithm", algorithm]
    data = run_json(*args)
    assert (data["algorithm"], data["secret"]) == (algorithm, None)
    obj = HmacSecret.objects.get(key_id=data["key_id"])
    assert (obj.algorithm, obj.secret_encrypted) == (algorithm, "")
    assert "BEGIN PUBLIC KEY" in obj.public_key
    assert status(client, data["key_id"], private_key, algorithm) == 200
    assert status(client, data["key_id"], make_key(), algorithm) == 401


def test_issue_asymmetric_human_output_has_no_secret(user, tmp_path):
    private_key = ed25519.Ed25519PrivateKey.generate()
    output = run("issue_hmac_secret", "--owner", "alice", "--name", "laptop",
                 "--public-key", write_public_pem(tmp_path, private_key))
    assert "Secret:" not in output and "will not be shown again" not in output
    assert "No secret: the client signs with its private key" in output
    assert "algorithm:   ed25519" in output


ISSUE = ("issue_hmac_secret", "--owner", "alice", "--name", "ci")


@pytest.mark.parametrize(("args", "message"), [
    (("issue_hmac_secret", "--owner", "bob", "--name", "ci"), "No user 'bob'"),
    (("issue_hmac_secret", "--owner", "carol", "--name", "ci"), "inactive"),
    (("issue_hmac_secret", "--name", "ci"), "--owner"),
    (("issue_hmac_secret", "--owner", "alice"), "--name"),
    ((*ISSUE, "--expires-in", "soon"), "--expires-in: Invalid duration 'soon'"),
    ((*ISSUE, "--expires-in", "0s"), "--expires-in must be longer than zero"),
    ((*ISSUE, "--allowed-ips", "10.0.0.0/33"), "--allowed-ips: '10.0.0.0/33' is not an IP"),
    ((*ISSUE, "--scopes", 'bad"scope'), "--scopes: Invalid scope"),
    ((*ISSUE, "--algorithm", "hmac-sha1"), "invalid choice"),
    ((*ISSUE, "--algorithm", "ed25519"), "--algorithm ed25519 needs the client's public key: --public-key"),
    ((*ISSUE, "--algorithm", "ecdsa-p256-sha256"), "needs the client's public key"),
    ((*ISSUE, "--algorithm", "hmac-sha256", "--public-key", "ED_PUB"), "Drop --public-key"),
    ((*ISSUE, "--public-key", "MISSING"), "--public-key: cannot read"),
    ((*ISSUE, "--public-key", "GARBAGE"), "--public-key: not a PEM public key"),
    ((*ISSUE, "--algorithm", "ed25519", "--public-key", "GARBAGE"), "--public-key: Not a PEM public key"),
    ((*ISSUE, "--public-key", "ED_PRIV"), "holds a PRIVATE key"),
    ((*ISSUE, "--public-key", "RSA_PUB"), "unsupported key type"),
    ((*ISSUE, "--algorithm", "ecdsa-p256-sha256", "--public-key", "ED_PUB"),
     "--public-key: The algorithm is ecdsa-p256-sha256 but this is not a P-256 public key."),
    ((*ISSUE, "--algorithm", "ed25519", "--public-key", "P256_PUB"),
     "--public-key: The algorithm is ed25519 but this is not an Ed25519 public key."),
])
def test_bad_input_is_a_command_error(make_user, tmp_path, args, message):
    from cryptography.hazmat.primitives.asymmetric import rsa

    make_user("alice")
    make_user("carol", is_active=False)
    ed = ed25519.Ed25519PrivateKey.generate()
    files = {
        "ED_PUB": write_public_pem(tmp_path, ed, "ed.pub.pem"),
        "ED_PRIV": write_private_pem(tmp_path, ed, "ed.pem"),
        "P256_PUB": write_public_pem(tmp_path, ec.generate_private_key(ec.SECP256R1()), "p256.pem"),
        "RSA_PUB": write_public_pem(
            tmp_path, rsa.generate_private_key(public_exponent=65537, key_size=2048), "rsa.pem"),
        "MISSING": str(tmp_path / "nope.pem"),
        "GARBAGE": str(tmp_path / "garbage.pem"),
    }
    Path(files["GARBAGE"]).write_text("-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    args = tuple(files.get(arg, arg) for arg in args)
    before = (HmacSecret.objects.count(), AuditEvent.objects.count())
    with pytest.raises(CommandError) as excinfo:
        run(*args)
    assert message in str(excinfo.value)
    assert (HmacSecret.objects.count(), AuditEvent.objects.count()) == before
    if "PRIVATE" in str(excinfo.value):
        assert "BEGIN" not in str(excinfo.value)  # the key itself is never echoed


# -- rotate_credential / revoke_credential with kind hmac ---------------------


def test_rotate_hmac_keeps_old_secret_for_grace(user, client):
    with freeze_time(T0) as frozen:
        old = run_json("issue_hmac_secret", "--owner", "alice", "--name", "ci", "--scopes", "echo:write")
        data = run_json("rotate_credential", "hmac", old["key_id"], "--grace", "1h")
        assert data["rotated_from"] == old["key_id"]
        assert data["id"] != old["key_id"] and data["id"].startswith("hk_")
        assert data["secret"] and data["secret"] != old["secret"]
        assert data["grace_until"] == (T0 + timedelta(hours=1)).isoformat()
        assert data["scopes"] == ["echo:write"]
        assert status(client, old["key_id"], old["secret"]) == 200
        assert status(client, data["id"], data["secret"]) == 200
        # The new key id with the old secret is not a valid combination.
        assert status(client, data["id"], old["secret"]) == 401
        frozen.move_to(T0 + timedelta(hours=1))
        assert status(client, old["key_id"], old["secret"]) == 401
        assert last_failure_reason() == "expired"
        assert status(client, data["id"], data["secret"]) == 200
    successor = HmacSecret.objects.get(key_id=data["id"])
    assert successor.rotated_from.key_id == old["key_id"]
    assert successor.verification_key() == data["secret"].encode()


def test_rotate_hmac_human_output(user, client):
    old = run_json("issue_hmac_secret", "--owner", "alice", "--name", "ci")
    output = run("rotate_credential", "hmac", old["key_id"], "--grace", "0s")
    [secret_line] = [line for line in output.splitlines() if line.startswith("Secret: ")]
    secret = secret_line.removeprefix("Secret: ")
    successor = HmacSecret.objects.get(rotated_from__key_id=old["key_id"])
    assert f"Rotated hmac {old['key_id']}" in output and successor.key_id in output
    assert status(client, successor.key_id, secret) == 200
    assert status(client, old["key_id"], old["secret"]) == 401


def test_revoke_hmac_refuses_the_next_request(user, client):
    data = run_json("issue_hmac_secret", "--owner", "alice", "--name", "ci")
    assert status(client, data["key_id"], data["secret"]) == 200
    revoked = run_json("revoke_credential", "hmac", data["key_id"], "--reason", "laptop stolen")
    assert (revoked["id"], revoked["revoked_reason"]) == (data["key_id"], "laptop stolen")
    assert "secret" not in revoked
    assert status(client, data["key_id"], data["secret"]) == 401
    assert last_failure_reason() == "revoked"
    [row] = AuditEvent.objects.filter(event="credential.revoked")
    assert row.detail == {"actor": None, "via": "cli", "reason": "laptop stolen"}


def test_rotate_or_revoke_unknown_hmac_id():
    with pytest.raises(CommandError, match="No hmac credential with id 'hk_nope'"):
        run("rotate_credential", "hmac", "hk_nope")
    with pytest.raises(CommandError, match="No hmac credential with id 'hk_nope'"):
        run("revoke_credential", "hmac", "hk_nope", "--reason", "x")


# -- reencrypt_secrets --------------------------------------------------------


def issue_secrets(user: Any, count: int, keys: list[str]) -> list[tuple[HmacSecret, str]]:
    with override_settings(APIAUTH_ENCRYPTION_KEYS=keys):
        return [lifecycle.issue(HmacSecret, owner=user, name=f"client {i}", scopes="echo:write")
                for i in range(count)]


def key_ids() -> list[str | None]:
    return [encryption.key_id_of(token)
            for token in HmacSecret.objects.order_by("pk").values_list("secret_encrypted", flat=True)
            if token]


def current_key_id(keys: list[str]) -> str:
    with override_settings(APIAUTH_ENCRYPTION_KEYS=keys):
        return encryption.current_key_id()


@pytest.fixture
def old_rows(user, tmp_path) -> list[tuple[HmacSecret, str]]:
    """Three HMAC secrets under the old key, and one asymmetric key (nothing encrypted)."""
    rows = issue_secrets(user, 3, [OLD_KEY])
    lifecycle.issue(HmacSecret, owner=user, name="laptop", algorithm="ed25519",
                    public_key=Path(write_public_pem(tmp_path, ed25519.Ed25519PrivateKey.generate()))
                    .read_text())
    return rows


def test_reencrypt_moves_old_rows_to_the_new_key(user, client, old_rows):
    issue_secrets(user, 1, [NEW_KEY, OLD_KEY])  # already current
    old_id, new_id = current_key_id([OLD_KEY]), current_key_id([NEW_KEY])
    assert key_ids() == [old_id, old_id, old_id, new_id]
    before = dict(HmacSecret.objects.values_list("pk", "secret_encrypted"))
    err = StringIO()
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        output = run("reencrypt_secrets", stderr=err)
    assert output == "Re-encrypted 3 of 4 secrets; 1 already current.\n"
    assert key_ids() == [new_id] * 4
    after = dict(HmacSecret.objects.values_list("pk", "secret_encrypted"))
    changed = {pk for pk in before if before[pk] != after[pk]}
    assert changed == {obj.pk for obj, _secret in old_rows}
    # The old key is no longer needed: every secret verifies under the new one alone.
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY]):
        for obj, secret in old_rows:
            assert status(client, obj.key_id, secret) == 200
    # The progress bar went to stderr (not a TTY here: one line per batch).
    assert err.getvalue().splitlines()[-1] == "[" + "#" * 30 + "] 4/4"


def test_reencrypt_again_is_a_no_op(old_rows):
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        run("reencrypt_secrets", stderr=StringIO())
        tokens = key_ids(), list(HmacSecret.objects.values_list("secret_encrypted", flat=True))
        data = run_json("reencrypt_secrets", stderr=StringIO())
    assert (key_ids(), list(HmacSecret.objects.values_list("secret_encrypted", flat=True))) == tokens
    assert (data["total"], data["reencrypted"], data["already_current"], data["failed"]) == (3, 0, 3, 0)


def test_reencrypt_dry_run_changes_nothing(client, old_rows):
    before = list(HmacSecret.objects.order_by("pk").values_list("secret_encrypted", flat=True))
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        output = run("reencrypt_secrets", "--dry-run", stderr=StringIO())
        data = run_json("reencrypt_secrets", "--dry-run", stderr=StringIO())
    assert output == ("Would re-encrypt 3 of 3 secrets; 0 already current. "
                      "Dry run: nothing was written.\n")
    assert list(HmacSecret.objects.order_by("pk").values_list("secret_encrypted", flat=True)) == before
    assert (data["dry_run"], data["total"], data["reencrypted"], data["already_current"]) == (
        True, 3, 3, 0)
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[OLD_KEY]):
        obj, secret = old_rows[0]
        assert status(client, obj.key_id, secret) == 200


def test_reencrypt_json(old_rows):
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        data = run_json("reencrypt_secrets", stderr=StringIO())
    assert data == {
        "dry_run": False,
        "current_key_id": current_key_id([NEW_KEY]),
        "total": 3, "reencrypted": 3, "already_current": 0, "changed_meanwhile": 0, "failed": 0,
        "models": {"django_apiauth.hmacsecret": {"total": 3, "reencrypted": 3, "current": 0,
                                                 "failed": 0}},
        "failures": [],
    }


def test_reencrypt_updates_only_the_field_in_batched_transactions(user):
    issue_secrets(user, 5, [OLD_KEY])
    err = StringIO()
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]), \
            CaptureQueriesContext(connection) as queries:
        run("reencrypt_secrets", "--batch-size", "2", stderr=err)
    updates = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("UPDATE")]
    assert len(updates) == 5
    for sql in updates:
        assert re.match(r'UPDATE "django_apiauth_hmacsecret" SET "secret_encrypted" = \S+ WHERE', sql)
        # Compare-and-swap: only the value that was read is replaced.
        assert '"secret_encrypted" = ' in sql.split("WHERE", 1)[1]
    savepoints = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 3  # one transaction per batch of 2: 2 + 2 + 1
    assert err.getvalue().splitlines() == [
        "[" + "#" * 12 + "." * 18 + "] 2/5",
        "[" + "#" * 24 + "." * 6 + "] 4/5",
        "[" + "#" * 30 + "] 5/5",
    ]


class FakeTerminal(StringIO):
    def isatty(self) -> bool:
        return True


def test_reencrypt_progress_in_place_on_a_terminal(user):
    issue_secrets(user, 3, [OLD_KEY])
    err = FakeTerminal()
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        run("reencrypt_secrets", "--batch-size", "2", stderr=err)
    assert err.getvalue() == (
        "\r[" + "#" * 20 + "." * 10 + "] 2/3" + "\r[" + "#" * 30 + "] 3/3" + "\n"
    )


def test_reencrypt_nothing_to_do(db):
    err = StringIO()
    assert run("reencrypt_secrets", stderr=err) == "Re-encrypted 0 of 0 secrets; 0 already current.\n"
    assert err.getvalue() == ""


def test_reencrypt_reports_an_undecryptable_row_and_goes_on(client, old_rows):
    (first, first_secret), (second, _), (third, third_secret) = old_rows
    # A ciphertext moved to another row does not decrypt there (bound to its key id).
    HmacSecret.objects.filter(pk=second.pk).update(secret_encrypted=first.secret_encrypted)
    out, err = StringIO(), StringIO()
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        with pytest.raises(CommandError) as excinfo:
            call_command("reencrypt_secrets", stdout=out, stderr=err)
    assert "1 stored secret(s) could not be decrypted" in str(excinfo.value)
    assert "APIAUTH_ENCRYPTION_KEYS" in str(excinfo.value)
    assert (f"Cannot decrypt django_apiauth.hmacsecret {second.key_id} (pk {second.pk}), "
            "field secret_encrypted: Ciphertext does not authenticate.") in err.getvalue()
    assert out.getvalue() == ("Re-encrypted 2 of 3 secrets; 0 already current. "
                              "1 could not be decrypted.\n")
    new_id = current_key_id([NEW_KEY])
    assert [encryption.key_id_of(HmacSecret.objects.get(pk=obj.pk).secret_encrypted)
            for obj in (first, third)] == [new_id, new_id]
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY]):
        assert status(client, first.key_id, first_secret) == 200
        assert status(client, third.key_id, third_secret) == 200


def test_reencrypt_without_the_old_key_fails_every_old_row(old_rows):
    out, err = StringIO(), StringIO()
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY]):
        with pytest.raises(CommandError, match="3 stored secret"):
            call_command("reencrypt_secrets", "--json", stdout=out, stderr=err)
    data = json.loads(out.getvalue())
    assert (data["total"], data["reencrypted"], data["failed"]) == (3, 0, 3)
    assert [failure["id"] for failure in data["failures"]] == [obj.key_id for obj, _ in old_rows]
    assert all("No configured key can decrypt" in failure["error"] for failure in data["failures"])
    for obj, _secret in old_rows:
        assert obj.key_id in err.getvalue()


def test_reencrypt_never_prints_a_secret(old_rows):
    out, err = StringIO(), StringIO()
    HmacSecret.objects.filter(pk=old_rows[0][0].pk).update(secret_encrypted="v1$deadbeef$AAAA")
    with override_settings(APIAUTH_ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        with pytest.raises(CommandError):
            call_command("reencrypt_secrets", stdout=out, stderr=err)
        with pytest.raises(CommandError):
            call_command("reencrypt_secrets", "--json", stdout=out, stderr=err)
    printed = out.getvalue() + err.getvalue()
    for _obj, secret in old_rows:
        assert secret not in printed
    for token in HmacSecret.objects.values_list("secret_encrypted", flat=True):
        assert not token or token not in printed


def test_reencrypt_bad_batch_size(db):
    with pytest.raises(CommandError, match="--batch-size must be at least 1"):
        run("reencrypt_secrets", "--batch-size", "0")


def test_rotating_a_public_key_credential_needs_the_new_public_key(user, tmp_path):
    """Rotation of an Ed25519 credential changes the key material, and prints no secret."""
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from django_apiauth.core import lifecycle as lc
    from django_apiauth.models import HmacSecret

    def pem() -> str:
        return ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            ser.Encoding.PEM, ser.PublicFormat.SubjectPublicKeyInfo).decode()

    old, _ = lc.issue(HmacSecret, owner=user, name="ed", algorithm="ed25519", public_key=pem())
    with pytest.raises(CommandError, match="new public key"):
        call_command("rotate_credential", "hmac", old.key_id, stdout=StringIO())
    new_pem = tmp_path / "new.pem"
    new_pem.write_text(pem())
    out = StringIO()
    call_command("rotate_credential", "hmac", old.key_id, "--public-key", str(new_pem), "--json", stdout=out)
    data = json.loads(out.getvalue())
    assert data["secret"] is None and data["algorithm"] == "ed25519"
    successor = HmacSecret.objects.get(key_id=data["key_id"])
    assert successor.public_key.strip() == new_pem.read_text().strip()
