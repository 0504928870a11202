"""Browser sign-in through external identity providers (SAML 2.0 SP, OpenID Connect RP).

Both flows end in :func:`django.contrib.auth.login` and map the provider's
subject to a Django user through :class:`django_apiauth.models.ExternalIdentity`
(:mod:`django_apiauth.sso.identity`), the table JWT bearer authentication uses too.
"""
