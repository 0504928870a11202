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
