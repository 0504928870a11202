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

# lifecycle events
ISSUED = "issued"
ROTATED = "rotated"
CHANGED = "changed"
DELETED = "deleted"
REVOKED_BY_OPERATOR = "revoked"

ALL = frozenset(
    value for name, value in dict(globals()).items() if name.isupper() and isinstance(value, str)
)
