"""Create the demo users and credentials and print copy-paste curl lines."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from django_apiauth.app_settings import app_settings
from django_apiauth.core import crypto, lifecycle
from django_apiauth.models import ApiKey


class Command(BaseCommand):
    help = "Create demo users (new random passwords each run), issue a demo API key, print curl examples."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, base_url: str, **options: Any) -> None:
        User = get_user_model()
        admin_password = secrets.token_urlsafe(12)
        demo_password = secrets.token_urlsafe(12)
        admin, _ = User.objects.get_or_create(username="admin", defaults={"email": "admin@example.com"})
        admin.is_staff = admin.is_superuser = admin.is_active = True
        admin.set_password(admin_password)
        admin.save()
        demo, _ = User.objects.get_or_create(username="demo", defaults={"email": "demo@example.com"})
        demo.is_active = True
        demo.set_password(demo_password)
        demo.save()
        key_obj, key = lifecycle.issue(
            ApiKey, owner=demo, name="demo key", scopes="echo:write whoami:read"
        )
        out = self.stdout.write
        out("")
        out("django-apiauth demo")
        out("===================")
        out(f"Admin:      {base_url}/admin/   user: admin  password: {admin_password}")
        out(f"Demo user:  demo  password: {demo_password}")
        out(f"Demo API key (shown once, id {key_obj.lookup_id}): {key}")
        out("")
        out("# 200: who am I, with the key")
        out(f"curl -s -H 'Authorization: Api-Key {key}' {base_url}/api/whoami/")
        out("# 200: same, with the X-API-Key header")
        out(f"curl -s -H 'X-API-Key: {key}' {base_url}/api/whoami/")
        out("# 200: echo (scope echo:write)")
        out(
            f"curl -s -H 'Authorization: Api-Key {key}' -H 'Content-Type: application/json' "
            f"-d '{{\"hello\": \"world\"}}' {base_url}/api/echo/"
        )
        out("# 401: a well-formed key that was never issued (invalid_credentials)")
        unknown = crypto.generate_api_key(app_settings.API_KEY_PREFIX, b"unused").key
        out(f"curl -s -i -H 'Authorization: Api-Key {unknown}' {base_url}/api/whoami/")
        out("# 401: a mistyped key: the checksum fails, refused without a database lookup")
        bad = key[:-8] + ("A" if key[-8] != "A" else "B") + key[-7:]
        out(f"curl -s -i -H 'Authorization: Api-Key {bad}' {base_url}/api/whoami/")
        out("# 401: no key")
        out(f"curl -s -i {base_url}/api/whoami/")
        out("# the audit trail of those calls")
        out("python example_project/manage.py audit_log --since 1h")
        out("")
