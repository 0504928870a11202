"""Audit console: overview, event list, detail, timelines and exports under ``/auth/audit/``."""
