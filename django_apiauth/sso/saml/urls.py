"""URLs of this provider kind, included by :mod:`django_apiauth.urls`."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
