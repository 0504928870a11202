"""Benchmarks of django-apiauth (``make bench``); see ``benchmarks/README.md``."""
