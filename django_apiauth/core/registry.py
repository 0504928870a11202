"""Credential kinds known to the CLI and admin (``api_key``, ``hmac``, …)."""

from __future__ import annotations

from django.apps import apps

from .models import AbstractCredential


def credential_models() -> dict[str, type[AbstractCredential]]:
    """Concrete credential models by ``credential_kind``.

    A subclass of a concrete model (a project's own ``ApiKey`` subclass)
    replaces its parent under the same kind.
    """
    found: dict[str, type[AbstractCredential]] = {}
    for model in apps.get_models():
        if issubclass(model, AbstractCredential) and model.credential_kind:
            current = found.get(model.credential_kind)
            if current is None or issubclass(model, current):
                found[model.credential_kind] = model
    return found


def get_credential(kind: str, identifier: str) -> AbstractCredential:
    """Find a credential by its public id (or primary key). Raises ``LookupError``."""
    models = credential_models()
    if kind not in models:
        raise LookupError(f"Unknown credential kind {kind!r}; choose from {', '.join(sorted(models))}.")
    model = models[kind]
    manager = model._default_manager.select_related("owner")
    credential = manager.filter(**{model.lookup_field: identifier}).first()
    if credential is None and identifier.isdigit():
        credential = manager.filter(pk=int(identifier)).first()
    if credential is None:
        raise LookupError(f"No {kind} credential with id {identifier!r}.")
    return credential
