"""django-oauth-toolkit as an authorization server that mints RFC 9068 JWT access tokens.

Add ``"django_apiauth.oauth2"`` to ``INSTALLED_APPS`` (after ``oauth2_provider``)
and set ``OAUTH2_PROVIDER["ACCESS_TOKEN_GENERATOR"]`` to
``"django_apiauth.oauth2.tokens.signed_access_token"``: see ``docs/oauth2-provider.md``.
"""
