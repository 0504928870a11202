"""core.cachestore: Django's cache handle for this thread, asked again after CACHES changes."""

from __future__ import annotations

import threading

from django.core.cache import caches
from django.test import override_settings

from django_apiauth.core import cachestore

LOCMEM = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}


def test_the_handle_is_djangos_for_this_thread():
    assert cachestore.cache("default") is caches["default"]
    assert cachestore.cache("default") is cachestore.cache("default")


def test_a_caches_change_is_seen_at_once():
    before = cachestore.cache("default")
    with override_settings(CACHES={"default": LOCMEM, "other": {**LOCMEM, "LOCATION": "o"}}):
        inside = cachestore.cache("default")
        assert inside is not before
        assert inside is caches["default"]
        assert cachestore.cache("other") is caches["other"]
    after = cachestore.cache("default")
    assert after is not inside
    assert after is caches["default"]


def test_an_unknown_alias_raises_like_django():
    import pytest
    from django.core.cache import InvalidCacheBackendError

    with pytest.raises(InvalidCacheBackendError):
        cachestore.cache("no-such-cache")


def test_each_thread_has_its_own_handle_as_in_django():
    here = cachestore.cache("default")
    seen: dict[str, object] = {}

    def other() -> None:
        seen["ours"] = cachestore.cache("default")
        seen["django"] = caches["default"]

    thread = threading.Thread(target=other)
    thread.start()
    thread.join()
    assert seen["ours"] is seen["django"]
    assert seen["ours"] is not here
