"""URLs of this provider kind, included by :mod:`django_apiauth.urls` (namespace ``oidc``)."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("<slug:slug>/login/", views.login, name="login"),
    path("<slug:slug>/callback/", views.callback, name="callback"),
    path("<slug:slug>/logout/", views.logout, name="logout"),
]
