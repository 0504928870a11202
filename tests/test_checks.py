import pytest
from django.core.checks import run_checks
from django.test import override_settings


def ids(**overrides):
    with override_settings(**overrides):
        return {m.id for m in run_checks() if m.id and m.id.startswith("apiauth.") and not m.is_silenced()}


def test_test_settings_are_clean():
    assert ids() == set()


def test_short_pepper():
    assert "apiauth.E001" in ids(APIAUTH_PEPPER="short")


def test_missing_pepper_in_production():
    assert "apiauth.W001" in ids(APIAUTH_PEPPER=None, DEBUG=False)
    assert "apiauth.W001" not in ids(APIAUTH_PEPPER=None, DEBUG=True)


@pytest.mark.parametrize("prefix", ["", "AK", "a_k", "waytoolongprefix", "a k"])
def test_bad_prefix(prefix):
    assert "apiauth.E002" in ids(APIAUTH_API_KEY_PREFIX=prefix)


def test_bad_trusted_proxy():
    assert "apiauth.E003" in ids(APIAUTH_TRUSTED_PROXIES=["10.0.0.0/8", "nope"])


def test_negative_grace():
    from datetime import timedelta

    assert "apiauth.E005" in ids(APIAUTH_ROTATION_GRACE=timedelta(seconds=-1))


def test_plaintext_http_in_production():
    assert "apiauth.W002" in ids(DEBUG=False, SECURE_SSL_REDIRECT=False, SILENCED_SYSTEM_CHECKS=[])
    assert "apiauth.W002" not in ids(DEBUG=False, SECURE_SSL_REDIRECT=True, SILENCED_SYSTEM_CHECKS=[])


def test_wildcard_hosts_in_production():
    assert "apiauth.W003" in ids(DEBUG=False, ALLOWED_HOSTS=["*"])


def test_atomic_requests_loses_audit_rows_warning():
    from django.conf import settings

    databases = {"default": {**settings.DATABASES["default"], "ATOMIC_REQUESTS": True}}
    assert "apiauth.W004" in ids(DATABASES=databases)
    assert "apiauth.W004" not in ids()


def test_misspelt_audit_database():
    assert "apiauth.E006" in ids(APIAUTH_AUDIT_DATABASE="audti")


def test_replay_cache_checks():
    assert "apiauth.E007" in ids(APIAUTH_REPLAY_CACHE="nope")
    found = ids(DEBUG=False, SILENCED_SYSTEM_CHECKS=[])
    assert "apiauth.W005" in found
    redis = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": "redis://127.0.0.1:1"}}
    assert "apiauth.W005" not in ids(DEBUG=False, CACHES=redis, SILENCED_SYSTEM_CHECKS=[])


@pytest.mark.django_db
def test_expiring_ca_warning():
    from datetime import timedelta

    from django.utils import timezone

    from django_apiauth.ca.authority import create_ca
    from django_apiauth.checks import check_certificate_authorities

    ca = create_ca(name="Soon", slug="soon", days=10)
    found = check_certificate_authorities(databases=["default"])
    assert [w.id for w in found] == ["apiauth.W006"]
    assert "soon" in found[0].msg
    ca.not_after = timezone.now() + timedelta(days=400)
    ca.save()
    assert check_certificate_authorities(databases=["default"]) == []
    assert check_certificate_authorities(databases=None) == []


def test_unknown_client_cert_format():
    assert "apiauth.E008" in ids(APIAUTH_CLIENT_CERT_HEADERS={"X-Client": "haproxy"})


def test_missing_audit_key_in_production():
    assert "apiauth.W060" in ids(APIAUTH_AUDIT_KEYS=None, DEBUG=False)
    assert "apiauth.W060" not in ids(APIAUTH_AUDIT_KEYS=None, DEBUG=True)


@pytest.mark.parametrize("overrides", [
    {"APIAUTH_AUDIT_BUFFER_SIZE": -1},
    {"APIAUTH_AUDIT_BUFFER_SECONDS": 0},
    {"APIAUTH_AUDIT_BUFFER_SECONDS": -2},
    {"APIAUTH_AUDIT_BUFFER_SIZE": "lots"},
])
def test_bad_audit_buffer_settings(overrides):
    assert "apiauth.E060" in ids(**overrides)


def test_good_audit_buffer_settings():
    assert "apiauth.E060" not in ids(APIAUTH_AUDIT_BUFFER_SIZE=100, APIAUTH_AUDIT_BUFFER_SECONDS=2)
