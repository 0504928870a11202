"""URLs of django-apiauth, mounted by the project under ``/auth/``."""

from django.urls import path

from . import views

app_name = "django_apiauth"

urlpatterns = [
    path("", views.index, name="index"),
]
