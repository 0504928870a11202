"""Unknown key ids cost the same verification as known ones, per algorithm."""

import pytest

from django_apiauth.schemes import http_signature

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("alg", ["hmac-sha256", "ed25519", "ecdsa-p256-sha256"])
def test_unknown_key_id_is_verified_with_the_named_algorithm(client, monkeypatch, alg):
    from django_apiauth.sign import sign_request

    used = []
    real = http_signature._check_signature

    def spy(algorithm_id, key, signature, base):
        used.append(algorithm_id)
        return real(algorithm_id, key, signature, base)

    monkeypatch.setattr(http_signature, "_check_signature", spy)
    if alg == "hmac-sha256":
        key = b"k" * 32
    else:
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        key = (ed25519.Ed25519PrivateKey.generate() if alg == "ed25519"
               else ec.generate_private_key(ec.SECP256R1()))
    headers = sign_request("GET", "http://testserver/api/whoami/", {}, None, "hk_doesnotexist00", key, alg)
    meta = {"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()}
    response = client.get("/api/whoami/", **meta)
    assert response.status_code == 401
    assert used == [alg]
    assert http_signature._dummy_key(alg) is http_signature._dummy_key(alg)
