"""API keys: ``Authorization: Api-Key <key>`` or ``X-API-Key: <key>``.

Parses the wire format and verifies the key's hash; everything else is the
core's (:class:`~django_apiauth.core.authentication.CredentialAuthentication`).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.http import HttpRequest
from django.views.decorators.debug import sensitive_variables

from ..app_settings import app_settings
from ..core import crypto, reasons
from ..core.authentication import CredentialAuthentication, Presented, Refused
from ..core.models import AbstractCredential
from ..models import ApiKey

MAX_HEADER_LENGTH = 256


def _meta_name(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class ApiKeyAuthentication(CredentialAuthentication):
    """DRF authentication class for :class:`~django_apiauth.models.ApiKey`.

    Customise by subclassing: ``model`` (a subclass of ``AbstractApiKey``),
    ``scheme``; header names, keyword and prefix are settings.
    """

    scheme: ClassVar[str] = "api_key"
    model: ClassVar[type[AbstractCredential]] = ApiKey

    def challenge(self, request: HttpRequest) -> str:
        return f'{app_settings.API_KEY_KEYWORD} realm="{app_settings.WWW_AUTHENTICATE_REALM}"'

    @sensitive_variables("authorization", "header_key", "key", "value")
    def extract(self, request: HttpRequest) -> Presented | None:
        meta = request.META
        keyword = app_settings.API_KEY_KEYWORD
        authorization = meta.get("HTTP_AUTHORIZATION", "")
        header_key = meta.get(_meta_name(app_settings.API_KEY_HEADER))
        key: str | None = None
        if authorization:
            word, sep, value = authorization.partition(" ")
            if word.lower() == keyword.lower():
                key = value
            elif not sep and word.startswith(app_settings.API_KEY_PREFIX + "_"):
                # The key without its keyword: ours, so refuse it clearly.
                raise Refused(reasons.MALFORMED, client_message=(
                    f"Send the key as 'Authorization: {keyword} <key>' or in {app_settings.API_KEY_HEADER}."
                ))
        if header_key is not None:
            if key is not None:
                raise Refused(reasons.AMBIGUOUS)
            key = header_key
        if meta.get("QUERY_STRING"):
            self._refuse_query_string(request)
        if key is None:
            return None
        if len(key) > MAX_HEADER_LENGTH:
            raise Refused(reasons.MALFORMED, detail={"length": len(key)})
        parsed = crypto.parse_api_key(key.strip(" \t"), app_settings.API_KEY_PREFIX)
        if parsed is None:
            raise Refused(reasons.MALFORMED, detail={"length": len(key)})
        return Presented(lookup_value=parsed.lookup_id, proof=parsed.key)

    def _refuse_query_string(self, request: Any) -> None:
        params = request.GET if hasattr(request, "GET") else {}
        marker = app_settings.API_KEY_PREFIX + "_"
        for name in app_settings.API_KEY_QUERY_PARAMS:
            value = params.get(name)
            if value and value.startswith(marker):
                raise Refused(reasons.QUERY_STRING, detail={"parameter": name})

    @sensitive_variables("presented")
    def verify(self, request: HttpRequest, presented: Presented,
               credential: AbstractCredential | None) -> bool:
        # Same HMAC and comparison whether or not the lookup id exists
        # (Django ticket #20760: no timing oracle for "which ids exist").
        stored = credential.secret_hash if credential is not None else crypto.DUMMY_HASH  # type: ignore[attr-defined]
        return crypto.verify_secret(presented.proof, stored, app_settings.PEPPER)
