"""django-oauth-toolkit's request validator, completed for oauthlib 4.

Set ``OAUTH2_PROVIDER["OAUTH2_VALIDATOR_CLASS"]`` to
``"django_apiauth.oauth2.validators.OAuth2Validator"``.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from oauth2_provider import oauth2_validators


class OAuth2Validator(oauth2_validators.OAuth2Validator):
    """DOT's validator plus ``validate_device_code`` (RFC 8628 §3.4 and §3.5).

    oauthlib 4 asks the validator for the state of a polled ``device_code``;
    DOT 3.4 does not implement the method, so every device-flow token request
    ended in a 500. The grant must belong to the polling client.
    """

    def validate_device_code(self, client_id: str, code: str, request: Any, *args: Any,
                             **kwargs: Any) -> str | None:
        from oauth2_provider.models import get_device_grant_model

        model = get_device_grant_model()
        grant = model.objects.select_related("user").filter(device_code=code, client_id=client_id).first()
        if grant is None:
            return None  # invalid_grant
        if grant.expires is not None and grant.expires <= timezone.now():
            return "expired_token"
        if grant.status == model.AUTHORIZED:
            request.user = grant.user
            request.scopes = grant.scope.split() if grant.scope else []
            return "authorized"
        return {
            model.AUTHORIZATION_PENDING: "authorization_pending",
            model.DENIED: "access_denied",
            model.EXPIRED: "expired_token",
        }.get(grant.status)
