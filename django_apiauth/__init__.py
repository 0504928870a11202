"""django-apiauth: the whole API authentication stack for Django REST framework."""

__version__ = "0.1.0.dev0"
