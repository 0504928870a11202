"""Fixtures of the audit console tests: staff users, a logged-in client, audit rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.utils import timezone

from django_apiauth.models import AuditEvent


@pytest.fixture
def staff(make_user: Callable[..., Any]) -> Any:
    """A staff user with only the permission the audit pages need."""
    user = make_user("auditor", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_auditevent",
                                                     content_type__app_label="django_apiauth"))
    return user


@pytest.fixture
def superuser(make_user: Callable[..., Any]) -> Any:
    return make_user("root", is_staff=True, is_superuser=True)


@pytest.fixture
def staff_client(staff: Any) -> Client:
    client = Client()
    client.force_login(staff)
    return client


@pytest.fixture
def admin_client_(superuser: Any) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


@pytest.fixture
def make_event() -> Callable[..., AuditEvent]:
    """An audit row written straight to the table (as a raw INSERT or an older version could)."""

    def make(*, ago: timedelta = timedelta(minutes=1), at: datetime | None = None,
             **fields: Any) -> AuditEvent:
        fields.setdefault("event", "authenticate")
        fields.setdefault("scheme", "api_key")
        fields.setdefault("outcome", "failure")
        fields.setdefault("reason", "bad_secret")
        return AuditEvent.objects.create(at=at or timezone.now() - ago, **fields)

    return make
