"""Test settings: the example project on in-memory SQLite and local-memory cache."""

import os
import tempfile

os.environ.setdefault("APIAUTH_EXAMPLE_VAR", tempfile.mkdtemp(prefix="apiauth-test-var-"))
os.environ.pop("DATABASE_URL", None) if os.environ.get("APIAUTH_TEST_KEEP_DB_URL") != "1" else None

from example_project.settings import *  # noqa: E402,F403

DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEBUG = False
SECRET_KEY = "test-secret-key-not-for-production-0123456789abcdef"
APIAUTH_PEPPER = "test-pepper-0123456789abcdef0123456789abcdef"
SECURE_SSL_REDIRECT = False
# Local-memory caches and no reverse proxy, on purpose.
SILENCED_SYSTEM_CHECKS = ["apiauth.W002", "apiauth.W005", "apiauth.W050", "apiauth.W051"]
APIAUTH_AUDIT_KEYS = ["test-audit-key-0123456789abcdef0123456789abcdef"]
# No sealing pass after requests in the suite (it would add queries to random
# tests); the audit-integrity tests turn it on where they test it.
APIAUTH_AUDIT_SEAL_INTERVAL = 0
# Tests read audit rows right after a request: every row written at once. The
# buffered default is tested in tests/core/test_audit_buffer.py.
APIAUTH_AUDIT_BUFFER_SIZE = 0
