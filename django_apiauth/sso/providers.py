"""Which SSO providers exist: every model of this app that is a provider kind.

A provider kind is a model with a ``scheme`` class attribute and a
``login_url()`` method (see :class:`django_apiauth.sso.identity.SsoProvider`),
so a new kind shows up on the login pages without changes here.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.db import DatabaseError


def provider_models() -> list[type[Any]]:
    config = apps.get_app_config("django_apiauth")
    return [
        model
        for model in config.get_models()
        if isinstance(getattr(model, "scheme", None), str) and callable(getattr(model, "login_url", None))
        and hasattr(model, "active")
    ]


def active_providers() -> list[Any]:
    """Active providers of every kind, ordered by name (empty if the database is unreachable)."""
    found: list[Any] = []
    for model in provider_models():
        try:
            found.extend(model._default_manager.filter(active=True))
        except DatabaseError:
            continue  # a login page without SSO buttons beats a 500
    return sorted(found, key=lambda p: (str(p.name).lower(), p.scheme, p.slug))
