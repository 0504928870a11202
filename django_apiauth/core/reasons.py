"""Stable reason codes recorded in audit rows (DESIGN §5).

These strings are a public contract: dashboards, alerts and ``audit_log
--json`` consumers match on them. Add codes; never rename one.
"""

from __future__ import annotations

OK = "ok"
MISSING = "missing"
MALFORMED = "malformed"
AMBIGUOUS = "ambiguous"
QUERY_STRING = "credential_in_query"
UNKNOWN_CREDENTIAL = "unknown_credential"
BAD_SECRET = "bad_secret"  # noqa: S105 (a reason code)
BAD_SIGNATURE = "bad_signature"
EXPIRED = "expired"
REVOKED = "revoked"
NOT_YET_VALID = "not_yet_valid"
INACTIVE_OWNER = "inactive_owner"
REPLAYED = "replayed"
SIGNATURE_EXPIRED = "signature_expired"
MISSING_COMPONENTS = "missing_components"
BAD_DIGEST = "bad_digest"
CLOCK_SKEW = "clock_skew"
INSUFFICIENT_SCOPE = "insufficient_scope"
RATE_LIMITED = "rate_limited"
LOCKED_OUT = "locked_out"
UNTRUSTED_PROXY = "untrusted_proxy"
CERT_NOT_VERIFIED = "certificate_not_verified"
BAD_CERTIFICATE = "bad_certificate"
UNTRUSTED_ISSUER = "untrusted_issuer"
BAD_AUDIENCE = "bad_audience"
DISALLOWED_ALGORITHM = "disallowed_algorithm"
IP_NOT_ALLOWED = "ip_not_allowed"
SERVICE_UNAVAILABLE = "service_unavailable"
INTERNAL_ERROR = "internal_error"
# OAuth 2.0 bearer tokens (schemes/oauth2.py)
FORM_BODY = "credential_in_body"
TOKEN_REFUSED = "token_refused"  # noqa: S105 (a reason code)

# OpenID Connect relying party (django_apiauth.sso.oidc)
STATE_MISMATCH = "state_mismatch"
NONCE_MISMATCH = "nonce_mismatch"
PROVIDER_UNREACHABLE = "provider_unreachable"
PROVIDER_ERROR = "provider_error"
CODE_REJECTED = "code_rejected"
SUBJECT_MISMATCH = "subject_mismatch"
PROVIDER_INACTIVE = "provider_inactive"
# SAML service provider (sso/saml)
UNSOLICITED_RESPONSE = "unsolicited_response"
REQUEST_MISMATCH = "request_mismatch"
BAD_DESTINATION = "bad_destination"
BAD_RECIPIENT = "bad_recipient"
BAD_SUBJECT_CONFIRMATION = "bad_subject_confirmation"
WRONG_ASSERTION_COUNT = "wrong_assertion_count"
MISSING_SUBJECT = "missing_subject"
IDP_ERROR = "idp_error"
INVALID_RESPONSE = "invalid_response"
TOO_LARGE = "too_large"
FORBIDDEN_DTD = "forbidden_dtd"
BAD_METHOD = "bad_method"

# lifecycle events
ISSUED = "issued"
ROTATED = "rotated"
CHANGED = "changed"
DELETED = "deleted"
REVOKED_BY_OPERATOR = "revoked"
LIFTED = "lifted"  # a lockout lifted by staff

# JWT certificate binding (RFC 8705 §3): the request's certificate is not the token's
CERT_BINDING_MISMATCH = "certificate_binding_mismatch"

# OAuth 2.0 token endpoint failures: the RFC 6749 §5.2 / RFC 8628 §3.5 error codes
OAUTH_INVALID_REQUEST = "invalid_request"
OAUTH_INVALID_CLIENT = "invalid_client"
OAUTH_INVALID_GRANT = "invalid_grant"
OAUTH_UNAUTHORIZED_CLIENT = "unauthorized_client"
OAUTH_UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
OAUTH_INVALID_SCOPE = "invalid_scope"
OAUTH_INVALID_TARGET = "invalid_target"
OAUTH_AUTHORIZATION_PENDING = "authorization_pending"
OAUTH_SLOW_DOWN = "slow_down"
OAUTH_ACCESS_DENIED = "access_denied"
OAUTH_EXPIRED_TOKEN = "expired_token"  # noqa: S105 (a reason code)
OAUTH_OTHER_ERROR = "oauth_error"
PRUNED = "pruned"  # audit.pruned: prune_audit deleted old audit rows

ALL = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
)
