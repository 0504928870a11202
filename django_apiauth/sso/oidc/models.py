"""Models of this provider kind (imported by :mod:`django_apiauth.models`)."""
