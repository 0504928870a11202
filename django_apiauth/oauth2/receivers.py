"""Signal receivers: a deleted DOT access token is a revoked JWT.

django-oauth-toolkit revokes an access token by deleting its row: the RFC 7009
endpoint, the admin action and delete, refresh-token rotation and reuse
protection, ``AuthorizedTokenDeleteView`` and cascades all end in a delete. So
``post_delete`` of the access-token model is the one place where a JWT's
``jti`` goes on the deny-list (:mod:`django_apiauth.oauth2.denylist`), audited
as ``oauth2.token_revoked``. Rows deleted after their expiry (``cleartokens``) are
skipped.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db.models.signals import post_delete, post_save

from ..core import audit, reasons
from ..core.authentication import DependencyUnavailable
from . import denylist, tokens

logger = logging.getLogger("django_apiauth")


def _jwt_facts(instance: Any) -> tuple[str, str, float] | None:
    raw = getattr(instance, "token", "") or ""
    if raw.count(".") == 2:
        claims = tokens.unverified_claims(raw)
        if claims and all(k in claims for k in ("iss", "jti", "exp")):
            return str(claims["iss"]), str(claims["jti"]), float(claims["exp"])
    checksum = getattr(instance, "token_checksum", "") or ""
    if checksum and not raw:
        # Token storage redacted (RFC 9700): the generator left (iss, jti, exp) by checksum.
        try:
            stored = denylist.cache().get("apiauth:jwt:issued:" + checksum)
        except Exception as exc:  # the revocation cannot be decided: fail the delete (503)
            raise DependencyUnavailable(type(exc).__name__) from None
        if stored:
            iss, jti, exp = stored
            return str(iss), str(jti), float(exp)
    return None


def access_token_deleted(sender: Any, instance: Any, **kwargs: Any) -> None:
    facts = _jwt_facts(instance)
    if facts is None:
        return  # an opaque token: DOT's own lookup already refuses it
    iss, jti, exp = facts
    if not denylist.deny(iss, jti, exp):
        return  # expired anyway
    client_id, owner = _client(instance)
    try:
        audit.record(
            event="oauth2.token_revoked", scheme="oauth2", outcome=audit.SUCCESS,
            reason=reasons.REVOKED_BY_OPERATOR, user=getattr(instance, "user", None) or owner,
            credential_id=jti, detail={"client_id": client_id, "iss": iss},
        )
    except audit.AuditUnavailable:
        logger.error("Could not audit the revocation of JWT %s", jti)


def _client(instance: Any) -> tuple[str, Any]:
    """The token's ``client_id`` and the client's owner (who a client-credentials token acts as)."""
    application_id = getattr(instance, "application_id", None)
    if application_id is None:
        return "", None
    from oauth2_provider.models import get_application_model

    application = (get_application_model().objects.select_related("user")
                   .filter(pk=application_id).first())
    return (application.client_id, application.user) if application is not None else ("", None)


def application_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    """A client's owner (its client-credentials service user) may have changed."""
    from ..schemes.jwt import invalidate_subjects

    invalidate_subjects()


def connect() -> None:
    from oauth2_provider.models import get_access_token_model, get_application_model

    post_delete.connect(access_token_deleted, sender=get_access_token_model(),
                        dispatch_uid="apiauth-jwt-access-token-deleted")
    application = get_application_model()
    post_save.connect(application_changed, sender=application, dispatch_uid="apiauth-jwt-app-saved")
    post_delete.connect(application_changed, sender=application, dispatch_uid="apiauth-jwt-app-deleted")

