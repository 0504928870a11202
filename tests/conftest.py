"""Shared factory fixtures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from django_apiauth.core import lifecycle
from django_apiauth.models import ApiKey, AuditEvent


@pytest.fixture
def make_user(db: Any) -> Callable[..., Any]:
    counter = {"n": 0}

    def make(username: str | None = None, **fields: Any) -> Any:
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        return get_user_model().objects.create_user(username=username, password=None, **fields)

    return make


@pytest.fixture
def user(make_user: Callable[..., Any]) -> Any:
    return make_user("alice")


@pytest.fixture
def make_api_key(user: Any) -> Callable[..., tuple[ApiKey, str]]:
    def make(owner: Any = None, **fields: Any) -> tuple[ApiKey, str]:
        fields.setdefault("name", "test key")
        return lifecycle.issue(ApiKey, owner=owner or user, **fields)

    return make


@pytest.fixture
def api_key(make_api_key: Callable[..., tuple[ApiKey, str]]) -> tuple[ApiKey, str]:
    return make_api_key(scopes="echo:write")


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def audit_rows() -> Callable[..., list[AuditEvent]]:
    def rows(**filters: Any) -> list[AuditEvent]:
        return list(AuditEvent.objects.filter(event="authenticate", **filters).order_by("id"))

    return rows


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    """Every test starts with empty caches: lockout counters, rate-limit windows,
    replay markers and fetched JWKS of one test never leak into the next."""
    from django.core.cache import caches

    for cache in caches.all(initialized_only=True):
        cache.clear()
