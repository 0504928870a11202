"""Signals of django-apiauth. Secrets are never among their arguments."""

from __future__ import annotations

from django.dispatch import Signal

# Sent after a credential is issued.
# Arguments: sender (credential model), credential, actor (user or None)
credential_issued = Signal()

# Sent after a credential is rotated.
# Arguments: sender, credential (the predecessor), successor, grace_until, actor
credential_rotated = Signal()

# Sent after a credential is revoked.
# Arguments: sender, credential, reason (str), actor
credential_revoked = Signal()

# Sent after a successful authentication.
# Arguments: sender (authentication class), request, user, principal
authentication_succeeded = Signal()

# Sent after a refused authentication (already audited).
# Arguments: sender (authentication class), request, scheme, reason, credential_id
authentication_failed = Signal()

# Sent on suspicious activity (docs/rate-limits.md): a burst of failures,
# a lockout starting, use of a revoked or rotated-out credential, the first
# use of a credential from a new address. Sent with ``send_robust``: a failing
# receiver is logged, never turned into an error response.
# Arguments: sender (authentication class or None), kind (str: "failure_burst",
# "lockout", "revoked_credential_used", "rotated_credential_used", "new_ip"),
# request (or None), scheme, credential_id, ip, detail (dict, no secrets)
suspicious_activity = Signal()
