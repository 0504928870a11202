"""URLs of the audit console, included by :mod:`django_apiauth.urls` under ``audit/``."""

from django.urls import URLPattern, URLResolver, path

from . import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.overview, name="overview"),
    path("events/", views.events, name="events"),
    path("events/<int:pk>/", views.event_detail, name="event"),
    path("export/<str:fmt>/", views.export_events, name="export"),
    path("credentials/", views.credential_overview, name="credentials"),
    path("credential/<str:credential_id>/", views.credential_timeline, name="credential"),
    path("user/<int:pk>/", views.user_timeline, name="user"),
    path("user/<int:pk>/revoke-all/", views.revoke_all, name="revoke_all"),
]
