"""URLs of the audit console, included by :mod:`django_apiauth.urls` under ``audit/``."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
