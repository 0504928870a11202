"""OpenID Connect Relying Party (authorization code + PKCE, PyJWT)."""
