"""URLs of the SAML 2.0 SP, included by :mod:`django_apiauth.urls` under ``saml/``
(namespace ``django_apiauth:saml``)."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("<slug:slug>/metadata/", views.metadata, name="metadata"),
    path("<slug:slug>/login/", views.login, name="login"),
    path("<slug:slug>/acs/", views.acs, name="acs"),
    path("<slug:slug>/sls/", views.sls, name="sls"),
    path("<slug:slug>/logout/", views.logout_view, name="logout"),
]
