"""``request.auth`` for every scheme (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """Who authenticated, with what, and what they may do.

    * ``scheme``: the scheme's stable name (``"api_key"``, ``"hmac"``, …).
    * ``credential``: the credential model instance, or ``None`` for stateless
      tokens (JWT).
    * ``credential_id``: the credential's public identifier (never a secret).
    * ``scopes``: granted scopes, checked by
      :class:`django_apiauth.permissions.HasScopes`.
    * ``claims``: scheme-specific facts (token claims, certificate subject, …).
    """

    scheme: str
    credential: Any
    credential_id: str
    scopes: frozenset[str] = frozenset()
    claims: dict[str, Any] = field(default_factory=dict)

    def has_scopes(self, required: frozenset[str] | set[str] | list[str] | tuple[str, ...]) -> bool:
        return self.scopes.issuperset(required)
