"""SAML 2.0 Service Provider (python3-saml; the ``saml`` extra)."""
